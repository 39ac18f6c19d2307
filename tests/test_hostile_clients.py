"""Issue 12 against the real daemon, the items no other test covered end to end:

- SIGTERM ends the daemon within 5 s while WebSocket clients never answer the
  close (one idle, one mid-way through a fragmented message that it keeps
  sending), beside an HTTP request head that never ends;
- every line a client can make the daemon write, whatever the path (HTTP
  refusals, WebSocket drops and protocol errors, identity and GPS refusals),
  is bounded: the same misbehaviour repeated adds a bounded number of lines.

Bounded: a few dozen loopback connections, a few seconds.
"""
from __future__ import annotations

import os
import signal
import socket
import threading
import time
from typing import Callable, Dict, List

import pytest

from tests.daemon_process import RunningDaemon
from tests.ws.test_limits import fragment, handshake, wait_for_sockets


def test_sigterm_ends_within_5_s_with_websockets_that_never_answer_the_close(tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = RunningDaemon(str(tmp_path / "root")).start()
    wait_for_sockets(d)
    stop = threading.Event()
    socks: List[socket.socket] = []
    try:
        silent = handshake(d.port, "/v2/control/socket/id/silent")   # reads nothing, answers nothing
        sending = handshake(d.port, "/v2/control/socket/id/sending")
        socks += [silent, sending]
        sending.sendall(fragment(0x02, b"ab"))

        def keep_sending() -> None:   # continuation fragments, never the last one
            while not stop.wait(0.1):
                try:
                    sending.sendall(fragment(0x00, b"ab"))
                except OSError:
                    return

        # Beside them, an HTTP request whose head never ends (the trickling body
        # is tests/http/test_load.py's).
        head = socket.create_connection(("127.0.0.1", d.port))
        socks.append(head)
        head.sendall(b"GET /v2/version HTTP/1.1\r\nX-Slow: ")

        threads = [threading.Thread(target=keep_sending)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        assert d.proc is not None
        started = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        d.proc.wait(timeout=15)
        took = time.monotonic() - started
    finally:
        stop.set()
        for s in socks:
            s.close()
        d.stop()
    print(f"\nSIGTERM to exit with two silent WebSockets and an unfinished head: {took:.2f} s")
    assert d.proc.returncode == 0 and took < 5.0, (took, d.log()[-2000:])
    assert "Traceback" not in d.log()


def _exchange(d: RunningDaemon, data: bytes, source: str = "127.0.0.2", read: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", d.port), timeout=5, source_address=(source, 0)) as s:
        s.sendall(data)
        out = b""
        if not read:
            return out        # sent, then closed at once
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return out
                out += chunk
        except OSError:
            return out


def _expect(d: RunningDaemon, status: bytes, data: bytes) -> None:
    answer = _exchange(d, data)
    assert answer.startswith(b"HTTP/1.1 " + status + b" "), answer[:80]


def _request(path: str, body: bytes = b"", extra: str = "") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" \
           f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n"
    return head.encode() + body


def _ws_then(d: RunningDaemon, path: str, frame: bytes) -> None:
    s = handshake(d.port, path)
    s.sendall(frame)
    time.sleep(0.02)
    s.close()


REPEAT = 30
# A line a client can trigger: at most one per (peer, kind) per 10 s on the HTTP
# side, 20 a minute on the WebSocket side (then counted).
BOUND = 20


def test_repeated_misbehaviour_adds_a_bounded_number_of_log_lines(tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = RunningDaemon(str(tmp_path / "root")).start()
    wait_for_sockets(d)
    logfile = os.path.join(d.root, "var/log/iofog-agent/iofog-agent.0.log")

    def lines() -> int:
        with open(logfile, errors="replace") as f:
            return len(f.read().splitlines())

    actions: Dict[str, Callable[[], object]] = {
        "escape in the path": lambda: _exchange(d, b"GET /v2/\x1b[31mnope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        "deep JSON": lambda: _expect(d, b"400", _request("/v2/config/get", b"[" * 1000)),
        "HTTP/0.9": lambda: _exchange(d, b"GET /\r\n"),
        "bad version": lambda: _exchange(d, b"GET / HTTP/1.1000\r\n\r\n"),
        "two tokens": lambda: _exchange(d, b"GET /v2/version HTTP/1.1\r\nHost: x\r\nAuthorization: a\r\n"
                                          b"Authorization: b\r\nConnection: close\r\n\r\n"),
        "100-continue without token": lambda: _exchange(d, _request("/v2/config", b"{}", "Expect: 100-continue\r\n")),
        "TLS to the plain port": lambda: _exchange(d, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40), read=False),
        "GPS over the admin's off": lambda: _expect(d, b"403", _request("/v2/gps", b'{"lat":"1","lon":"2"}')),
        "bad WebSocket handshake": lambda: _exchange(d, b"GET /v2/control/socket/id/x HTTP/1.1\r\nHost: x\r\n"
                                                       b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
        "unmasked frame": lambda: _ws_then(d, "/v2/control/socket/id/a", b"\x81\x05hello"),
        "WebSocket dropped mid-message": lambda: _ws_then(d, "/v2/control/socket/id/b", fragment(0x02, b"ab")),
    }
    assert d.cli("config", "-gps", "off").returncode == 0
    added: Dict[str, int] = {}
    try:
        for name, act in actions.items():
            before = lines()
            for _ in range(REPEAT):
                act()
            time.sleep(0.2)
            added[name] = lines() - before
        # Identity: in strict mode a caller that is not one of the agent's containers is refused.
        assert d.cli("config", "-smi", "on").returncode == 0
        before = lines()
        for _ in range(REPEAT):
            answer = _exchange(d, _request("/v2/config/get", b'{"id":"someone"}'))
            assert answer.startswith(b"HTTP/1.1 403 "), answer[:80]
            with pytest.raises(AssertionError, match="HTTP/1.1 403"):   # handshake() wants a 101
                handshake(d.port, "/v2/control/socket/id/someone")
        time.sleep(0.2)
        added["identity refusals (HTTP and WebSocket)"] = lines() - before
        assert d.request("GET", "/v2/version")[0] == 200
    finally:
        d.stop()
    print("\nlog lines added by", REPEAT, "repeats:", added)
    assert all(n <= BOUND for n in added.values()), added
    assert "Traceback" not in d.log()
    with open(logfile, "rb") as f:
        assert b"\x1b" not in f.read()


def test_the_admin_and_the_cli_get_through_300_held_websockets(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # 300 control sockets for 300 ids, held open and silent (no HTTP slot each),
    # while /v2/version with the token is sampled and `iofog-agent status` runs.
    from tests.http.test_load import sample_version
    d = RunningDaemon(str(tmp_path / "root")).start()
    socks: List[socket.socket] = []
    try:
        wait_for_sockets(d)
        for i in range(300):
            socks.append(handshake(d.port, f"/v2/control/socket/id/held-{i}"))
        latencies = sample_version(d, 3.0)
        out = d.cli("status", timeout=30)
        assert out.returncode == 0 and "RUNNING" in out.stdout, out
    finally:
        for s in socks:
            s.close()
        assert d.stop() == 0
    latencies.sort()
    print(f"\n300 held control WebSockets: {len(latencies)} samples of /v2/version, "
          f"median {latencies[len(latencies) // 2] * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms")
    assert latencies[-1] < 1.0
    assert "Traceback" not in d.log()
