"""The Local API server and handler in this process, over real loopback sockets:
socket options, one write per response, the RFC 9112 corners, the pools of
slots, release_slot, shutdown and what reaches the log (issues 11, 12)."""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
from typing import Any, Callable, Iterator, List, Optional

import pytest

from iofogd.http.handler import LocalApiHandler
from iofogd.http.server import ADMIN, GENERAL, HttpLimits, LocalApiServer
from tests.http.test_limits import parse_responses, read_to_close


class CountingHandler(LocalApiHandler):
    """The real handler, with every write to the socket recorded."""

    writes: List[bytes] = []

    def setup(self) -> None:
        super().setup()
        real = self.wfile
        writes = self.writes

        class Counting:
            def write(self, data: bytes) -> int:
                writes.append(bytes(data))
                return real.write(data)

            def flush(self) -> None:
                real.flush()

            def close(self) -> None:
                real.close()

            @property
            def closed(self) -> bool:
                return bool(real.closed)

        self.wfile = Counting()  # type: ignore[assignment]


Serve = Callable[..., LocalApiServer]


@pytest.fixture
def serve(inproc_daemon: Any) -> Iterator[Serve]:
    """``serve(**limits)``: the daemon's App behind a LocalApiServer of our own."""
    servers: List[tuple[LocalApiServer, threading.Thread]] = []

    def start(**limits: Any) -> LocalApiServer:
        CountingHandler.writes = []
        server = LocalApiServer(("127.0.0.1", 0), CountingHandler, inproc_daemon.app, HttpLimits(**limits))
        thread = threading.Thread(target=server.serve_forever, name="test-server")
        thread.start()
        servers.append((server, thread))
        return server

    try:
        yield start
    finally:
        for server, thread in servers:
            server.shutdown()
            server.close_idle_connections()
            server.server_close()
            thread.join(10)


def port(server: LocalApiServer) -> int:
    return int(server.server_address[1])


def token(server: LocalApiServer) -> str:
    return server.app.token.current()


def connect(server: LocalApiServer, source: str = "127.0.0.1") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port(server)), timeout=5, source_address=(source, 0))
    return s


def read_response(s: socket.socket, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
    """One response from a keep-alive connection (``head_only``: to a HEAD request)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, f"closed before a response: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = 0 if head_only else int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = s.recv(65536)
        assert chunk
        rest += chunk
    assert len(rest) == length, "more bytes than one response"
    return int(lines[0].split()[1]), headers, rest


def get(path: str, tok: str = "", extra: str = "") -> bytes:
    auth = f"Authorization: {tok}\r\n" if tok else ""
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}{extra}\r\n".encode()


def post(path: str, body: bytes, tok: str = "", extra: str = "") -> bytes:
    auth = f"Authorization: {tok}\r\n" if tok else ""
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body


# -- issue 11: no response waits for a delayed ACK ---------------------------------------------


def test_accepted_sockets_have_tcp_nodelay(serve: Serve) -> None:
    server = serve()
    with connect(server) as s:
        s.sendall(get("/v2/version", token(server)))
        assert read_response(s)[0] == 200
        accepted = server.open_connections()
        assert len(accepted) == 1
        assert accepted[0].getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_every_response_leaves_in_one_write(serve: Serve) -> None:
    server = serve(max_body_bytes=100)
    tok = token(server)
    requests = [
        get("/v2/version", tok), get("/v2/status", tok), get("/v2/info?x=1", tok),
        get("/v2/nope"), get("/v2/version"),                                     # 404, 401
        post("/v2/status", b"", tok),                                           # 405 with Allow
        post("/v2/config", b"{", tok),                                          # 400 malformed JSON
        post("/v2/config/get", b'{"id":"x"}'),                                  # 400 from a handler
        post("/v2/messages/next", b"{}"),                                       # 501
        post("/v2/config", b'{"status-frequency":"33"}', tok),                  # 200
        get("/v2/version", tok).replace(b"GET", b"HEAD"),                       # HEAD: head only
    ]
    with connect(server) as s:
        for n, raw in enumerate(requests, 1):
            s.sendall(raw)
            status, headers, body = read_response(s, head_only=raw.startswith(b"HEAD"))
            assert len(CountingHandler.writes) == n, (raw, CountingHandler.writes[-2:])
            write = CountingHandler.writes[-1]
            assert write.startswith(b"HTTP/1.1 %d " % status) and write.endswith(body)
    # Errors that close the connection: one write each too.
    for raw in (b"GET /v2/version\r\n", b"GET /v2/version HTTP/1.1000\r\n\r\n",
                post("/v2/config", b"x" * 101, tok), b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n",
                b"BREW /pot HTTP/1.1\r\n\r\n"):
        before = len(CountingHandler.writes)
        with connect(server) as s:
            s.sendall(raw)
            data = read_to_close(s)
        assert len(parse_responses(data)) == 1
        assert CountingHandler.writes[before:] == [data], raw


# -- issue 12: RFC 9112 corners ---------------------------------------------------------------------


def test_one_line_http_0_9_is_answered_at_once(serve: Serve) -> None:
    server = serve()
    with connect(server) as s:
        s.sendall(b"GET /v2/version\r\n")          # and nothing more: no half-close either
        s.settimeout(5)                           # was: no answer until the 30 s idle timeout
        status, headers, body = parse_responses(read_to_close(s, timeout=5))[0]
    assert status == 400 and "HTTP/0.9" in body["error"] and headers["connection"] == "close"


def test_empty_lines_before_a_request_line_are_ignored(serve: Serve) -> None:
    server = serve()
    with connect(server) as s:
        s.sendall(b"\r\n\r\n\n" + get("/v2/version", token(server)))
        assert read_response(s)[0] == 200
        s.sendall(b"\r\n" + get("/v2/version", token(server)))   # after a response too
        assert read_response(s)[0] == 200


@pytest.mark.parametrize("raw,status", [
    (b"GET /v2/version HTTP/1.1000\r\nHost: x\r\n\r\n", 400),
    (b"GET /v2/version HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    (b"GET /v2/version HTTP/1.1\r\nHost: x\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n", 400),
])
def test_malformed_requests_are_refused(serve: Serve, raw: bytes, status: int) -> None:
    server = serve()
    if b"Authorization: a" in raw:   # both: the right token first, then another
        raw = raw.replace(b"Authorization: a", b"Authorization: " + token(server).encode())
    with connect(server) as s:
        s.sendall(raw)
        responses = parse_responses(read_to_close(s))
    assert [r[0] for r in responses] == [status]


def test_duplicate_authorization_is_refused_with_a_reason(serve: Serve) -> None:
    server = serve()
    tok = token(server)
    with connect(server) as s:
        s.sendall(get("/v2/version", tok, extra=f"Authorization: {tok}\r\n"))
        status, headers, body = parse_responses(read_to_close(s))[0]
    assert (status, body["error"]) == (400, "More than one Authorization header")


def test_the_token_is_checked_before_100_continue(serve: Serve) -> None:
    server = serve()
    body = b'{"status-frequency":"34"}'
    head = post("/v2/config", b"", "wrong", extra="Expect: 100-continue\r\n").replace(
        b"Content-Length: 0", b"Content-Length: %d" % len(body))
    with connect(server) as s:
        s.sendall(head)                            # the body is held back, as a client does
        data = read_to_close(s)
    assert b"100 Continue" not in data
    assert [r[0] for r in parse_responses(data)] == [401]
    # With the token: 100 first, its own write, then the answer once the body came.
    with connect(server) as s:
        s.sendall(head.replace(b"wrong", token(server).encode()))
        s.settimeout(5)
        interim = s.recv(4096)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(body)
        assert read_response(s)[0] == 200
    assert server.app.config.current.status_update_freq == 34


# -- issue 12: bad bodies and the log ------------------------------------------------------------------


def test_deep_json_is_400_without_a_traceback(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    server = serve()
    with caplog.at_level(logging.DEBUG):
        with connect(server) as s:
            for _ in range(3):
                s.sendall(post("/v2/config/get", b"[" * 1000))
                status, _, body = read_response(s)
                assert status == 400 and b"nested deeper than 32 levels" in body
    assert "Traceback" not in caplog.text and "RecursionError" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_client_text_reaches_the_log_escaped(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    server = serve()
    with caplog.at_level(logging.DEBUG, logger="iofogd"):
        for raw in (b"GET /v2/\x1b[2J\x1b[31mred HTTP/1.1\r\n\r\n",
                    b"GET /v2/version HTTP/1.1\r\nX: \x1b]0;owned\x07\r\n\r\n",
                    post("/v2/config/get", b"{}").replace(b"Content-Length: 2", b"Content-Length: 2\x1b[0m"),
                    get("/v2/nope\x1bx")):
            with connect(server) as s:
                s.sendall(raw)
                assert parse_responses(read_to_close(s))[0][0] == 400
    assert caplog.records, "nothing was logged: the test would prove nothing"
    for record in caplog.records:
        text = record.getMessage()
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in text), repr(text)


def test_warnings_about_one_peer_are_rate_limited(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    server = serve(max_connections=1, max_per_peer=1, admin_connections=1)
    held = []
    try:
        for _ in range(2):   # the general slot and the reserve, both busy
            s = connect(server, "127.0.0.2")
            s.sendall(b"GET /v2/version HTTP/1.1\r\nX-Slow: ")
            held.append(s)
        time.sleep(0.2)
        with caplog.at_level(logging.WARNING, logger="iofogd"):
            refused = 0
            for _ in range(50):
                with connect(server, "127.0.0.3") as s:
                    s.sendall(get("/v2/edgeResources"))
                    refused += parse_responses(read_to_close(s))[0][0] == 503
    finally:
        for s in held:
            s.close()
    assert refused == 50
    warnings = [r for r in caplog.records if "refusing" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


# -- issue 12: pools of slots --------------------------------------------------------------------------


def busy(server: LocalApiServer, source: str) -> socket.socket:
    """A connection that has begun a request head and goes no further."""
    s = connect(server, source)
    s.sendall(b"GET /v2/version HTTP/1.1\r\nX-Slow: ")
    return s


def test_one_peer_holds_at_most_its_share_and_the_admin_gets_through(serve: Serve) -> None:
    server = serve(max_connections=8, max_per_peer=4, admin_connections=2)
    held = [busy(server, "127.0.0.2") for _ in range(10)]
    try:
        time.sleep(0.2)
        # 4 general, a quarter of the reserve (1) on probation, 5 refused.
        assert server.slots_held() == {GENERAL: 4, ADMIN: 1}
        # Another peer without the token: a general slot is free for it.
        with connect(server, "127.0.0.3") as s:
            s.sendall(get("/v2/edgeResources"))
            assert read_response(s)[0] == 200
        # The same peer without the token: the reserve is not for it.
        with connect(server, "127.0.0.2") as s:
            s.sendall(get("/v2/edgeResources"))
            assert [r[0] for r in parse_responses(read_to_close(s))] == [503]
        # The same peer with the token: the reserve takes it, on keep-alive too
        # (its slot on probation is the peer's own, past the probation by now).
        time.sleep(server.limits.probation)
        with connect(server, "127.0.0.2") as s:
            for _ in range(3):
                s.sendall(get("/v2/version", token(server)))
                assert read_response(s)[0] == 200
    finally:
        for s in held:
            s.close()


def test_an_idle_keep_alive_connection_gives_its_slot_up(serve: Serve) -> None:
    server = serve(max_connections=2, max_per_peer=2, admin_connections=1)
    a, b = connect(server), connect(server)
    try:
        a.sendall(get("/v2/edgeResources"))
        assert read_response(a)[0] == 200             # a: idle keep-alive from now on
        b.sendall(b"GET /v2/version HTTP/1.1\r\n")    # b: mid-request, keeps its slot
        time.sleep(0.1)
        # A peer at its share takes no slot from itself (that would feed a
        # reconnect loop): the newcomer is another peer.
        with connect(server, "127.0.0.2") as c:
            c.sendall(get("/v2/edgeResources"))
            assert read_response(c)[0] == 200
        assert a.recv(1) == b""                       # a was closed for c
        b.sendall(b"Host: x\r\nAuthorization: " + token(server).encode() + b"\r\n\r\n")
        assert read_response(b)[0] == 200
    finally:
        a.close()
        b.close()


def test_websocket_sessions_hold_no_http_slot(serve: Serve) -> None:
    # The real upgrade path: the handler gives its slot back (release_slot)
    # before the session runs, and once only, whenever the session ends.
    server = serve(max_connections=2, max_per_peer=2, admin_connections=1)
    upgrade = (b"GET /v2/control/socket/id/abc HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               b"Sec-WebSocket-Version: 13\r\n\r\n")
    sessions = []
    try:
        for _ in range(4):   # more sessions than the pool has slots
            s = connect(server)
            s.sendall(upgrade)
            assert s.recv(4096).startswith(b"HTTP/1.1 101 ")
            sessions.append(s)
        deadline = time.monotonic() + 5
        while server.slots_held() != {GENERAL: 0, ADMIN: 0} and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.slots_held() == {GENERAL: 0, ADMIN: 0}
        assert len(server.open_connections()) == 4    # still tracked: stopping closes them
        with connect(server) as s:
            s.sendall(get("/v2/version", token(server)))
            assert read_response(s)[0] == 200
    finally:
        for s in sessions:
            s.close()
    deadline = time.monotonic() + 5
    while server.open_connections() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.slots_held() == {GENERAL: 0, ADMIN: 0}   # not released twice


# -- issue 12: shutdown whatever clients do ----------------------------------------------------------


def test_shutdown_closes_a_client_still_sending(inproc_daemon: Any) -> None:
    server = LocalApiServer(("127.0.0.1", 0), LocalApiHandler, inproc_daemon.app,
                            HttpLimits(shutdown_grace=0.5))
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    trickle = connect(server)
    idle = connect(server)
    stop_trickling = threading.Event()
    head = post("/v2/config", b"", token(server)).replace(b"Content-Length: 0", b"Content-Length: 1000")

    def send_slowly() -> None:
        trickle.sendall(head)
        while not stop_trickling.wait(0.05):
            try:
                trickle.send(b" ")
            except OSError:
                return

    sender = threading.Thread(target=send_slowly)
    sender.start()
    try:
        time.sleep(0.3)
        started = time.monotonic()
        server.shutdown()
        server.close_idle_connections()
        server.server_close()
        took = time.monotonic() - started
        thread.join(5)
        assert took < 0.5 + 1.5, took         # the grace, then closed (was: the 30 s body deadline)
        assert idle.recv(1) == b""
        trickle.settimeout(5)
        try:
            assert trickle.recv(65536) is not None   # an answer (400) or the end: closed either way
        except ConnectionResetError:
            pass
        assert not server.open_connections()
    finally:
        stop_trickling.set()
        sender.join(5)
        trickle.close()
        idle.close()


def test_the_token_is_read_at_the_door_without_consuming_it(serve: Serve) -> None:
    """A connection that finds no slot is let in if the request already
    waiting on it carries the admin token (a peek: the handler reads it after)."""
    server = serve()
    tok = token(server)
    for raw, expected in ((get("/v2/version", tok), True), (get("/v2/version", "wrong"), False),
                          (get("/v2/version"), False), (b"GET /v2/version HTTP/1.1\r\nAuthorization: ", False),
                          (get("/v2/version", tok, extra=f"Authorization: {tok}\r\n"), False), (b"", False)):
        ours, theirs = socket.socketpair()
        with ours, theirs:
            theirs.sendall(raw)
            time.sleep(0.01)
            assert server._shows_token(ours) is expected, raw
            if raw:
                assert ours.recv(65536, socket.MSG_DONTWAIT) == raw   # still there for the handler


# -- a refused body that is still arriving ------------------------------------------------------------


def test_an_oversized_body_sent_whole_still_reads_its_413(serve: Serve) -> None:
    # What an SDK does: the head and the whole body in one go, then read. The
    # server answers 413 without reading the body; were it to close at once,
    # the data still arriving would make its kernel reset the connection and
    # the client would see a broken pipe, not the 413.
    server = serve(max_body_bytes=1024)
    body = b"x" * (6 << 20)   # more than both sockets' buffers hold
    with connect(server) as s:
        s.sendall(post("/v2/config/get", body))
        status, _, answer = read_response(s)
        assert status == 413 and b"failed" in answer
        assert s.recv(1) == b""   # and then it closes
