"""Bad input gets a clear error and never loses data or takes the daemon down (issues 2, 12).

Real daemons over real loopback sockets: a full disk (a tiny tmpfs, as root),
hostile clients (too many connections, idle and trickling clients, broken
request heads and bodies) and a small seeded fuzz loop. What test_api.py,
test_daemon.py and test_config.py already cover (malformed JSON bodies, 413,
411, 431, a silent client, kill -9 during writes) is not repeated here.
"""
from __future__ import annotations

import errno
import json
import os
import random
import re
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Iterator, List, Optional, Tuple

import pytest

from iofogd.config import parse_config_xml
from iofogd.paths import Paths
from iofogd.http.handler import LocalApiHandler
from iofogd.http.server import HttpLimits, LocalApiServer
from tests.daemon_process import REPO, RunningDaemon, free_port

PAGE = 4096

# -- helpers: raw HTTP ------------------------------------------------------------------


def exchange(port: int, data: bytes, *, half_close: bool = True, timeout: float = 10.0) -> bytes:
    """Send ``data``, optionally end our side, and read until the daemon closes.

    A reset after the daemon answered counts as a close: it closes with bytes
    of ours still unread (a 414 or 413), and the answer was delivered first.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the daemon answered and closed before taking all of it (a 503, 414)
        return read_to_close(s)


def read_to_close(s: socket.socket, timeout: float = 10.0) -> bytes:
    s.settimeout(timeout)
    chunks: List[bytes] = []
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return b"".join(chunks)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) [^\r\n]*")


def parse_responses(data: bytes) -> List[Tuple[int, dict[str, str], Any]]:
    """Every response in ``data``: well-formed HTTP/1.x with a JSON body, or AssertionError."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"response head never ended: {data[:200]!r}"
        lines = head.split(b"\r\n")
        m = _STATUS_LINE.fullmatch(lines[0])
        assert m, f"bad status line {lines[0][:200]!r}"
        headers = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            assert colon, f"bad header line {line!r}"
            headers[name.decode("ascii").lower()] = value.decode("latin-1").strip()
        length = int(headers["content-length"])
        assert len(rest) >= length, f"body shorter than Content-Length: {data[:300]!r}"
        assert headers.get("content-type") == "application/json", headers
        out.append((int(m.group(1)), headers, json.loads(rest[:length])))
        data = rest[length:]
    return out


def assert_error_or_close(data: bytes, codes: Tuple[int, ...] = ()) -> None:
    """A JSON error (of one of ``codes`` if given) and a close, or just a clean close."""
    if not data:
        return
    responses = parse_responses(data)
    assert len(responses) == 1, responses
    status, headers, body = responses[0]
    assert status >= 400, responses
    assert body["status"] == "failed" and body["error"], body
    assert headers.get("connection") == "close", headers
    if codes:
        assert status in codes, responses


def abort(s: socket.socket) -> None:
    """Make close() send an RST instead of a FIN (SO_LINGER with a zero timeout)."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def assert_serving(d: RunningDaemon) -> None:
    assert d.request("GET", "/v2/version")[0] == 200
    assert d.proc is None or d.proc.poll() is None


def request_bytes(d: RunningDaemon, method: str, path: str, body: bytes = b"",
                  extra: bytes = b"") -> bytes:
    head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {d.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n").encode()
    return head + extra + b"\r\n" + body


# -- hostile clients against the real daemon ----------------------------------------------


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    """One daemon for the tests that change nothing when it behaves (status-frequency stays 30)."""
    d = RunningDaemon(str(tmp_path_factory.mktemp("shared") / "root")).start()
    try:
        yield d
    finally:
        assert d.stop() == 0
    assert "Traceback" not in d.log()


@pytest.mark.parametrize("raw,codes", [
    (b"\r\n\r\n", ()),                                            # empty request line
    (b"HELLO\r\n\r\n", (400,)),
    (b"GET /v2/version HTTP/1.1 extra\r\n\r\n", (400,)),
    (b"GET /v2/version HTTP/9.9\r\n\r\n", (505,)),
    (b"GET /v2/version HTTP/x.y\r\n\r\n", (400,)),
    (b"GET /v2/version\r\n", (400,)),                             # HTTP/0.9
    (b"POST /v2/config\r\n", (400,)),                             # HTTP/0.9, not even GET
    (b"GET /v2/version HTTP/1.1\r\nno colon here\r\n\r\n", (400,)),
    (b"GET /v2/version HTTP/1.1\r\n\x00\x01\x02: \xff\xfe\r\n\r\n", (400,)),
    (b"GET /v2/version HTTP/1.1\r\n leading: continuation\r\n\r\n", (400,)),
    (bytes(range(256)) * 8, ()),                                  # binary junk
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\xaa" * 64, ()),  # a TLS ClientHello
    (b"GET " + b"/v2/" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", (414,)),
])
def test_garbage_heads_get_a_json_error_or_a_close(shared: RunningDaemon, raw: bytes,
                                                    codes: Tuple[int, ...]) -> None:
    assert_error_or_close(exchange(shared.port, raw), codes)
    assert_serving(shared)


def test_http_0_9_gets_a_full_http_1_1_error(shared: RunningDaemon) -> None:
    # http.server would answer HTTP/0.9 with a bare body and no status line;
    # nobody speaks it, so it gets our error shape like any other bad request.
    status, headers, body = parse_responses(exchange(shared.port, b"GET /v2/version\r\n"))[0]
    assert status == 400 and "HTTP/0.9" in body["error"]


@pytest.mark.parametrize("length", [b"-1", b"-0x10", b"abc", b"1e3", b"", b"0x10", b"+9", b"0_9",
                                    b"\xb2", b"99999999999999999999999999999", b"10, 20"])
def test_absurd_content_length_is_400_or_413(shared: RunningDaemon, length: bytes) -> None:
    raw = request_bytes(shared, "POST", "/v2/config", extra=b"Content-Length: " + length + b"\r\n")
    # Two Content-Length headers are themselves a reason to refuse (RFC 9112 section 6.3).
    raw = raw.replace(b"Content-Length: 0\r\n", b"")
    assert_error_or_close(exchange(shared.port, raw + b'{"a":"b"}'), (400, 413))
    assert_serving(shared)


def test_a_bad_header_line_does_not_hide_content_length(shared: RunningDaemon) -> None:
    # Were the lines after "junk" dropped, the body would run as a second request.
    smuggled = request_bytes(shared, "POST", "/v2/config", b'{"status-frequency":"19"}')
    raw = request_bytes(shared, "POST", "/v2/gps", smuggled, extra=b"junk\r\n")
    raw = raw.replace(b"Content-Length: %d\r\njunk" % len(smuggled),
                      b"junk\r\nContent-Length: %d" % len(smuggled))
    assert_error_or_close(exchange(shared.port, raw), (400,))
    assert shared.request("GET", "/v2/info")[2]["status-update-frequency"] == "30"


def test_conflicting_content_lengths_are_refused(shared: RunningDaemon) -> None:
    body = b'{"status-frequency":"19"}'
    raw = request_bytes(shared, "POST", "/v2/config", body, extra=b"Content-Length: 5\r\n")
    assert_error_or_close(exchange(shared.port, raw), (400,))
    assert shared.request("GET", "/v2/info")[2]["status-update-frequency"] == "30"


def test_body_shorter_than_content_length_then_close(shared: RunningDaemon) -> None:
    raw = request_bytes(shared, "POST", "/v2/config", b'{"status-frequency":"19"}')
    raw = raw.replace(b"Content-Length: 25", b"Content-Length: 900")
    assert_error_or_close(exchange(shared.port, raw), (400,))
    assert shared.request("GET", "/v2/info")[2]["status-update-frequency"] == "30"  # nothing applied
    assert_serving(shared)


def test_connection_dropped_mid_body_changes_nothing(shared: RunningDaemon) -> None:
    raw = request_bytes(shared, "POST", "/v2/config", b'{"status-frequency":"19"}')
    with socket.create_connection(("127.0.0.1", shared.port)) as s:
        s.sendall(raw[:-10])
        abort(s)   # an RST in the middle of the body
    assert shared.request("GET", "/v2/info")[2]["status-update-frequency"] == "30"
    assert_serving(shared)
    time.sleep(0.2)  # the handler thread has seen the reset by now (teardown checks again)
    assert "Traceback" not in shared.log()


def test_busy_slots_get_503_and_the_daemon_recovers(shared: RunningDaemon) -> None:
    """Every slot busy (a request head begun and never finished), from many
    peers: a new connection without the token gets 503 at once; the admin's
    token still gets an answer (the admin reserve); all is well after."""
    limits = HttpLimits()   # the daemon runs with the default limits
    held: List[socket.socket] = []
    try:
        # 127.0.0.2 ... : one peer may hold only max_per_peer general slots.
        for i in range(limits.max_connections + limits.admin_connections):
            s = socket.create_connection(("127.0.0.1", shared.port), source_address=(f"127.0.0.{2 + i // 16}", 0))
            s.sendall(b"GET /v2/version HTTP/1.1\r\nX-Slow: ")
            held.append(s)
        time.sleep(0.3)   # every held socket has been accepted and has begun a request
        with socket.create_connection(("127.0.0.1", shared.port), source_address=("127.0.0.99", 0)) as s:
            s.sendall(b"GET /v2/version HTTP/1.1\r\nHost: x\r\n\r\n")
            data = read_to_close(s)
        status, headers, body = parse_responses(data)[0]
        assert status == 503 and headers["connection"] == "close", data
        assert body == {"status": "failed", "error": "Too many connections, try again"}
        assert_serving(shared)   # with the token: a reserve slot
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 10
    while True:
        data = exchange(shared.port, b"GET /v2/edgeResources HTTP/1.1\r\nHost: x\r\n\r\n")
        status = parse_responses(data)[0][0]
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert status == 200


def test_burst_of_connect_and_close(shared: RunningDaemon) -> None:
    for i in range(200):
        s = socket.create_connection(("127.0.0.1", shared.port))
        if i % 2:
            abort(s)   # half of them with an RST, as a port scanner does
        s.close()
    assert_serving(shared)
    assert "Traceback" not in shared.log()


# -- limits that need short timeouts: the real handler and App on a server of our own --------


@pytest.fixture
def small_server(inproc_daemon: Any) -> Iterator[LocalApiServer]:
    """The daemon's App behind a second LocalApiServer with test-sized limits."""
    server = LocalApiServer(("127.0.0.1", 0), LocalApiHandler, inproc_daemon.app,
                            HttpLimits(max_connections=4, max_per_peer=4, admin_connections=2, idle_timeout=0.5))
    thread = threading.Thread(target=server.serve_forever, name="small-server")
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.close_idle_connections()
        server.server_close()
        thread.join(10)


def port_of(server: LocalApiServer) -> int:
    return int(server.server_address[1])


def version_request(server: LocalApiServer) -> bytes:
    token = server.app.token.current()
    return (f"GET /v2/version HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n\r\n").encode()


def test_idle_connection_is_closed_after_the_idle_timeout(small_server: LocalApiServer) -> None:
    with socket.create_connection(("127.0.0.1", port_of(small_server))) as silent, \
            socket.create_connection(("127.0.0.1", port_of(small_server))) as kept:
        kept.sendall(version_request(small_server))
        started = time.monotonic()
        assert read_to_close(silent) == b""      # closed without an answer
        answer = read_to_close(kept)             # answered, then closed when idle
        assert [r[0] for r in parse_responses(answer)] == [200]
        assert time.monotonic() - started < 10   # generous: did not hang
    # Their slots are free again: the cap (4) is not used up by closed sockets.
    assert [r[0] for r in parse_responses(exchange(port_of(small_server), version_request(small_server)))] == [200]


def test_slowloris_does_not_block_others_and_is_dropped(small_server: LocalApiServer) -> None:
    port = port_of(small_server)
    request = version_request(small_server)
    head = b"GET /v2/version HTTP/1.1\r\nX-Slow: " + b"a" * 1000   # never ends
    closed_after: Optional[int] = None
    with socket.create_connection(("127.0.0.1", port)) as trickle:
        # Each byte comes well within the 0.5 s idle timeout, so only a
        # deadline on the whole request head can end this connection.
        for i in range(80):
            if i % 10 == 0:
                assert parse_responses(exchange(port, request))[0][0] == 200  # others are served
            readable, _, _ = select.select([trickle], [], [], 0.1)
            if readable:
                assert_error_or_close(read_to_close(trickle), (408,))
                closed_after = i
                break
            try:
                trickle.send(head[i:i + 1])
            except OSError:
                closed_after = i
                break
    assert closed_after is not None, "a client trickling its request head kept its connection"
    assert parse_responses(exchange(port, request))[0][0] == 200


def test_stalled_body_is_408_without_a_traceback(small_server: LocalApiServer,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    port = port_of(small_server)
    token = small_server.app.token.current()
    head = (f"POST /v2/config HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n").encode()
    for trickled in (False, True):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(head + b'{"status-')
            data = b""
            for _ in range(100):     # a byte every 0.1 s: each within the idle timeout
                readable, _, _ = select.select([s], [], [], 0.1)
                if readable:
                    data = read_to_close(s)
                    break
                if trickled:
                    s.send(b" ")
            assert_error_or_close(data, (408,))
            assert data, "the stalled body was never answered"
    assert "unexpected error" not in caplog.text and "Traceback" not in caplog.text
    assert parse_responses(exchange(port, version_request(small_server)))[0][0] == 200


def test_idle_connections_give_their_slots_up_at_once(small_server: LocalApiServer) -> None:
    port = port_of(small_server)
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]   # the whole general pool
    try:
        time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.2", 0)) as extra:
            extra.settimeout(5)   # immediate: long before the 0.5 s idle timeout
            extra.sendall(b"GET /v2/edgeResources HTTP/1.1\r\nHost: x\r\n\r\n")
            first = extra.recv(4096)
            assert first.startswith(b"HTTP/1.1 200 "), first
        # The oldest idle one was closed for it.
        held[0].settimeout(5)
        assert held[0].recv(1) == b""
    finally:
        for s in held:
            s.close()


# -- a tiny fuzz loop ---------------------------------------------------------------------------


def seeds(d: RunningDaemon) -> List[bytes]:
    return [
        request_bytes(d, "GET", "/v2/version"),
        request_bytes(d, "GET", "/v2/status"),
        request_bytes(d, "GET", "/v2/info?x=1"),
        request_bytes(d, "POST", "/v2/config", b'{"status-frequency":"31"}'),
        request_bytes(d, "POST", "/v2/gps", b'{"lat":"1.5","lon":"2.5"}'),
        request_bytes(d, "POST", "/v2/config/get", b'{"id":"abc"}'),
        request_bytes(d, "GET", "/v2/edgeResources"),
        request_bytes(d, "DELETE", "/v2/nope", b"{}"),
    ]


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        i = rng.randrange(len(b) + 1)
        if op == 0 and b:                          # flip a byte
            b[min(i, len(b) - 1)] = rng.randrange(256)
        elif op == 1:                              # insert junk
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 2:                              # delete a range
            del b[i:i + rng.randint(1, 16)]
        elif op == 3:                              # duplicate a range
            b[i:i] = b[i:i + rng.randint(1, 64)]
        elif op == 4:                              # truncate
            del b[i:]
        elif op == 5:                              # a wild Content-Length
            b = bytearray(re.sub(rb"Content-Length: \d+", b"Content-Length: "
                                 + str(rng.choice([-1, 0, 3, 10 ** 7, 2 ** 70])).encode(), bytes(b)))
        else:                                      # CR/LF/colon/space where they do not belong
            b[i:i] = rng.choice([b"\r", b"\n", b":", b" ", b"\r\n", b"\r\n\r\n", b"\x00"])
    return bytes(b)


def test_fuzzed_requests_get_http_json_or_a_close(daemon: RunningDaemon) -> None:
    rng = random.Random(20261125)
    corpus = seeds(daemon)
    answered = 0
    for n in range(300):
        raw = mutate(rng, rng.choice(corpus))
        data = exchange(daemon.port, raw)
        try:
            responses = parse_responses(data)
        except (AssertionError, ValueError, KeyError) as exc:
            raise AssertionError(f"case {n}: {raw!r} -> {data[:400]!r}") from exc
        answered += bool(responses)
    assert answered > 200    # the fuzz reached the daemon's answers, not only closes
    assert_serving(daemon)
    assert "Traceback" not in daemon.log()


# -- a full disk -------------------------------------------------------------------------------


@pytest.fixture
def tmpfs() -> Iterator[Callable[[str], str]]:
    """``mount(dir)``: a 256 KiB tmpfs on ``dir``, unmounted at the end of the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tiny tmpfs needs root: run this test as root (sudo .venv/bin/pytest ...)")
    mounted: List[str] = []

    def mount(path: str) -> str:
        os.makedirs(path, exist_ok=True)
        out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs", path],
                             capture_output=True, text=True)
        if out.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs ({out.stderr.strip()}): run as root outside a "
                        "restricted container")
        mounted.append(path)
        return path

    try:
        yield mount
    finally:
        for path in reversed(mounted):
            if subprocess.run(["umount", path], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", path], capture_output=True)


def fill(directory: str) -> str:
    """Fill the filesystem of ``directory`` to the last page; returns the filler file."""
    path = os.path.join(directory, "filler")
    with open(path, "ab", buffering=0) as f:
        for _ in range(100_000):   # bounded: 256 KiB is 64 pages
            try:
                f.write(b"\0" * PAGE)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
    with open(os.path.join(directory, "probe"), "wb", buffering=0) as probe:
        with pytest.raises(OSError):
            probe.write(b"x")
    os.unlink(os.path.join(directory, "probe"))
    return path


def free_pages(filler: str, pages: int) -> None:
    os.truncate(filler, max(0, os.path.getsize(filler) - pages * PAGE))


def stored_frequency(path: str) -> str:
    with open(path, "rb") as f:
        return parse_config_xml(f.read()).values["status_update_freq"]


def both_files(d: RunningDaemon) -> Tuple[str, str]:
    paths = Paths.from_root(d.root)
    return stored_frequency(paths.config_xml), stored_frequency(paths.config_backup)


def start_on(tmp_path: Any, tmpfs: Callable[[str], str], mount_at: str) -> RunningDaemon:
    root = str(tmp_path / "root")
    tmpfs(os.path.join(root, mount_at))
    d = RunningDaemon(root).start()
    assert d.request("POST", "/v2/config", {"status-frequency": "20"})[0] == 200
    return d


def test_full_config_disk_refuses_changes_and_keeps_both_files(tmp_path: Any, tmpfs: Any) -> None:
    d = start_on(tmp_path, tmpfs, "etc/iofog-agent")
    try:
        filler = fill(os.path.join(d.root, "etc/iofog-agent"))
        status, headers, body = d.request("POST", "/v2/config", {"status-frequency": "25"})
        assert status == 500 and headers["content-type"] == "application/json", body
        assert body["status"] == "failed" and "No space left on device" in body["error"]
        out = d.cli("config", "-sf", "26")
        assert out.returncode == 1, out
        assert "No space left on device" in out.stdout and "Traceback" not in out.stdout + out.stderr
        out = d.cli("config", "defaults")
        assert (out.returncode, out.stdout.strip()) == (1, "Error resetting configuration."), out
        assert d.request("GET", "/v2/info")[2]["status-update-frequency"] == "20"
        assert both_files(d) == ("20", "20")
        assert not [n for n in os.listdir(os.path.dirname(filler)) if n.endswith(".tmp")]
        assert_serving(d)
        os.unlink(filler)
        assert d.request("POST", "/v2/config", {"status-frequency": "27"})[::2] == (200, {})
        assert both_files(d) == ("27", "27")
        out = d.cli("config", "-sf", "28")
        assert out.returncode == 0 and "Change accepted" in out.stdout, out
    finally:
        d.stop()
    assert both_files(d) == ("28", "28")


def test_room_for_the_active_file_only_still_commits(tmp_path: Any, tmpfs: Any) -> None:
    # Enough room for one copy of config.xml: the active file is written and
    # is the truth, so the change is accepted; the stale backup is rewritten
    # by the next write that has room.
    d = start_on(tmp_path, tmpfs, "etc/iofog-agent")
    paths = Paths.from_root(d.root)
    try:
        filler = fill(paths.etc_dir)
        free_pages(filler, -(-os.path.getsize(paths.config_xml) // PAGE))
        with open(paths.config_xml, "rb"):   # the old active file keeps its pages while open
            status, _, body = d.request("POST", "/v2/config", {"status-frequency": "25"})
        assert (status, body) == (200, {})
        assert d.request("GET", "/v2/info")[2]["status-update-frequency"] == "25"
        assert both_files(d) == ("25", "20")
        assert "config-bck.xml" in d.log()
        os.unlink(filler)
        assert d.request("POST", "/v2/config", {"status-frequency": "26"})[0] == 200
        assert both_files(d) == ("26", "26")
    finally:
        d.stop()


def log_refusals(d: RunningDaemon) -> None:
    """Log far more than the last page of the log file holds (a refused change is an INFO line)."""
    for _ in range(150):
        assert d.request("POST", "/v2/config", {"disk-limit": "0"})[0] == 200


def test_full_log_disk_does_not_stop_the_daemon(tmp_path: Any, tmpfs: Any) -> None:
    d = start_on(tmp_path, tmpfs, "var/log/iofog-agent")
    try:
        fill(os.path.join(d.root, "var/log/iofog-agent"))
        log_refusals(d)
        assert d.request("POST", "/v2/config", {"status-frequency": "21"})[::2] == (200, {})
        assert d.request("GET", "/v2/info")[2]["status-update-frequency"] == "21"
        assert_serving(d)
    finally:
        assert d.stop() == 0
    assert "No space left on device" in d.log()   # the log file did fail


def test_full_log_disk_is_reported_once(tmp_path: Any, tmpfs: Any) -> None:
    d = start_on(tmp_path, tmpfs, "var/log/iofog-agent")
    try:
        fill(os.path.join(d.root, "var/log/iofog-agent"))
        log_refusals(d)
        assert_serving(d)
    finally:
        d.stop()
    log = d.log()
    assert "Logging error" not in log and "Traceback" not in log
    assert log.count("cannot write the log file") == 1


def run_daemon_once(root: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "iofogd", "--root", root, "--address", "127.0.0.1",
                           "--port", str(free_port())],
                          capture_output=True, text=True, cwd=REPO, timeout=30)


def test_start_without_a_token_on_a_full_disk_fails_clearly(tmp_path: Any, tmpfs: Any) -> None:
    root = str(tmp_path / "root")
    fill(tmpfs(os.path.join(root, "etc/iofog-agent")))
    out = run_daemon_once(root)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert "cannot start: " in last
    assert Paths.from_root(root).token_file in last and "No space left on device" in last
    assert not os.path.exists(Paths.from_root(root).token_file)


def test_start_on_a_full_root_is_one_line(tmp_path: Any, tmpfs: Any) -> None:
    root = tmpfs(str(tmp_path / "root"))
    fill(root)
    out = run_daemon_once(root)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("iofogd: cannot start: ") and "No space left on device" in lines[0]
