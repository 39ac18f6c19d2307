"""iofogd.ws.session: live sessions on a real ThreadingHTTPServer, against independent clients."""
from __future__ import annotations

import http.client
import logging
import socket
import threading
import time

import pytest
import websocket  # websocket-client
from websockets.exceptions import ConnectionClosed as WSClosed
from websockets.sync.client import connect

from iofogd.errors import ConnectionClosed
from iofogd.ws.frames import Opcode
from iofogd.ws.session import SessionLimits, WebSocketSession
from iofogd.ws import echo as echo_server
from iofogd.ws.echo import EchoServer
from tests.ws.conftest import RawClient, ServerFactory, frame_bytes, url, wait_for

SMALL = SessionLimits(max_message_size=1000, max_frame_size=1000, ping_interval=0.2, pong_timeout=0.3, close_timeout=0.5)


def test_echo_text_and_binary_with_websockets(server: EchoServer) -> None:
    with connect(url(server), ping_interval=None) as ws:
        ws.send("héllo wörld")
        assert ws.recv(timeout=5) == "héllo wörld"
        ws.send(bytes(range(256)) * 1000)
        assert ws.recv(timeout=5) == bytes(range(256)) * 1000
    assert ws.close_code == 1000


def test_fragmented_message_is_reassembled(server: EchoServer) -> None:
    with connect(url(server), ping_interval=None) as ws:
        ws.send(["frag", "ment", "ed ✓"])
        assert ws.recv(timeout=5) == "fragmented ✓"
        ws.send([b"\x00" * 70000, b"\x01"])
        assert ws.recv(timeout=5) == b"\x00" * 70000 + b"\x01"


def test_ping_is_answered_with_its_payload(server: EchoServer) -> None:
    with connect(url(server), ping_interval=None) as ws:
        assert ws.ping(b"abcd").wait(5)  # websockets matches the pong by payload


def test_sdk_ping_0x09_gets_pong_0x0a_with_websocket_client(server: EchoServer) -> None:
    ws = websocket.create_connection(url(server), timeout=5)
    try:
        ws.ping(b"\x09")
        opcode, frame = ws.recv_data_frame(control_frame=True)
        assert (opcode, frame.data) == (websocket.ABNF.OPCODE_PONG, b"\x0a")
        ws.send_binary(b"\x0b")
        assert ws.recv() == b"\x0b"
    finally:
        ws.close()


def test_client_close_code_is_echoed(server: EchoServer) -> None:
    with connect(url(server), ping_interval=None) as ws:
        ws.close(4321, "bye")
    assert (ws.close_code, ws.close_reason) == (4321, "bye")
    assert wait_for(lambda: len(server.registry) == 0)


def test_message_over_the_limit_is_1009(make_server: ServerFactory) -> None:
    server = make_server(SMALL)
    with connect(url(server), ping_interval=None) as ws:
        ws.send(b"x" * 1001)
        with pytest.raises(WSClosed):
            ws.recv(timeout=5)
    assert ws.close_code == 1009


def test_fragments_over_the_limit_are_1009(make_server: ServerFactory) -> None:
    server = make_server(SMALL)
    with connect(url(server), ping_interval=None) as ws:
        # The server fails the message on the second fragment's header, before its
        # payload: the 1009 may reach the client while send() is still writing.
        with pytest.raises(WSClosed):
            ws.send([b"x" * 600, b"y" * 600])
            ws.recv(timeout=5)
    assert ws.close_code == 1009


def test_invalid_utf8_is_1007(server: EchoServer) -> None:
    raw = RawClient(server)
    raw.send(0x1, b"caf\xc3")
    assert raw.recv_close()[0] == 1007
    assert raw.recv_frame() is None  # and the server closes the TCP connection
    raw.close()


def test_unmasked_client_frame_is_1002(server: EchoServer) -> None:
    raw = RawClient(server)
    raw.send(0x1, b"hi", masked=False)
    assert raw.recv_close()[0] == 1002
    raw.close()


def test_reserved_opcode_0x0c_in_a_header_is_1002(server: EchoServer) -> None:
    raw = RawClient(server)
    raw.sock.sendall(b"\x8c\x80" + b"\x00" * 4)
    assert raw.recv_close()[0] == 1002
    raw.close()


def test_frames_sent_right_behind_the_handshake_are_read(server: EchoServer) -> None:
    # They arrive in the same segment as the request and sit in the handler's rfile buffer.
    raw = RawClient(server, after_request=frame_bytes(0x2, b"early") + frame_bytes(0x1, b"bird"))
    assert raw.status_line.startswith("HTTP/1.1 101")
    assert [raw.recv_frame().payload, raw.recv_frame().payload] == [b"early", b"bird"]  # type: ignore[union-attr]
    raw.close()


def test_dead_peer_is_dropped(make_server: ServerFactory) -> None:
    server = make_server(SMALL)
    raw = RawClient(server)  # a "pulled cable": it never answers
    assert wait_for(lambda: len(server.registry) == 1)
    ping = raw.recv_frame(timeout=5)
    assert ping is not None and ping.opcode == 0x9 and ping.payload == b"\x09"
    assert raw.recv_frame(timeout=5) is None  # dropped after pong_timeout
    assert wait_for(lambda: len(server.registry) == 0)
    raw.close()


def test_a_peer_answering_pings_with_any_payload_stays(make_server: ServerFactory) -> None:
    # The Python SDK answers every ping with the single byte 0x0A, not an echo (docs/websocket.md#sdk-python).
    server = make_server(SMALL)
    raw = RawClient(server)
    deadline = time.monotonic() + 1.5  # five ping intervals
    pings = 0
    while time.monotonic() < deadline:
        frame = raw.recv_frame(timeout=1.0)
        assert frame is not None, "dropped although it answered"
        if frame.opcode == 0x9:
            pings += 1
            raw.send(0xA, b"\x0a")
    assert pings >= 2
    raw.send(0x1, b"still here")
    frame = raw.recv_frame()
    while frame is not None and frame.opcode == 0x9:
        raw.send(0xA, b"\x0a")
        frame = raw.recv_frame()
    assert frame is not None and frame.payload == b"still here"
    raw.close()


def test_a_peer_whose_messages_keep_coming_is_never_pinged(make_server: ServerFactory) -> None:
    # What arrives proves the peer alive: the read loop counts its reads and the
    # watchdog sees the count move, so a chatty peer that never answers pings is
    # neither pinged nor dropped (ping_interval 0.2 s, pong_timeout 0.3 s).
    server = make_server(SMALL)
    raw = RawClient(server)
    deadline = time.monotonic() + 1.5
    sent = 0
    while time.monotonic() < deadline:
        raw.send(0x2, b"m%d" % sent)
        frame = raw.recv_frame(timeout=5)
        assert frame is not None and frame.opcode == 0x2, frame
        assert frame.payload == b"m%d" % sent
        sent += 1
        time.sleep(0.05)
    assert sent >= 10 and len(server.registry) == 1
    raw.close()


def test_websockets_keepalive_survives_our_pings(make_server: ServerFactory) -> None:
    server = make_server(SMALL)
    with connect(url(server), ping_interval=0.2, ping_timeout=1) as ws:
        time.sleep(1.0)
        ws.send("alive")
        assert ws.recv(timeout=5) == "alive"


def test_close_all_sends_1001_to_every_client(server: EchoServer) -> None:
    ws1 = connect(url(server), ping_interval=None, legacy=True)
    ws2 = websocket.create_connection(url(server), timeout=5)
    assert wait_for(lambda: len(server.registry) == 2)
    server.registry.close_all()
    with pytest.raises(WSClosed):
        ws1.recv(timeout=5)
    assert ws1.close_code == 1001
    opcode, frame = ws2.recv_data_frame(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE and frame.data[:2] == b"\x03\xe9"
    ws2.shutdown()  # type: ignore[no-untyped-call]  # it echoed the close already; close() is a no-op
    assert wait_for(lambda: len(server.registry) == 0)


def test_peer_that_never_answers_our_close_is_dropped(make_server: ServerFactory) -> None:
    server = make_server(SMALL)
    raw = RawClient(server)
    assert wait_for(lambda: len(server.registry) == 1)
    server.registry.close_all()
    assert raw.recv_close() == (1001, "going away")
    while raw.recv_frame(timeout=5) is not None:  # pings may precede the end
        pass
    assert wait_for(lambda: len(server.registry) == 0)
    raw.close()


def test_handler_error_is_1011(make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # A message handler that raises is our bug: the peer gets 1011, not the traceback.
    def broken(session: WebSocketSession, data: str | bytes) -> None:
        raise ZeroDivisionError

    monkeypatch.setattr(echo_server, "echo", broken)
    server = make_server()
    with connect(url(server), ping_interval=None) as ws:
        ws.send("boom")
        with pytest.raises(WSClosed):
            ws.recv(timeout=5)
    assert (ws.close_code, ws.close_reason) == (1011, "internal error")


def test_unsupported_version_is_426(server: EchoServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
    conn.request("GET", "/echo", headers={
        "Upgrade": "websocket", "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "8",
    })
    response = conn.getresponse()
    assert response.status == 426
    assert response.getheader("Sec-WebSocket-Version") == "13"
    conn.close()


def test_missing_key_is_400(server: EchoServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
    conn.request("GET", "/echo", headers={"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"})
    assert conn.getresponse().status == 400
    conn.close()


def test_sending_after_close_raises(server: EchoServer) -> None:
    with connect(url(server), ping_interval=None):
        assert wait_for(lambda: len(server.registry) == 1)
        (session,) = server.registry.sessions()
        session.close(1000)
        with pytest.raises(ConnectionClosed):
            session.send_binary(b"late")
    assert session.wait_closed(5) and session.close_code == 1000


def test_abrupt_tcp_close_is_1006(server: EchoServer) -> None:
    raw = RawClient(server)
    assert wait_for(lambda: len(server.registry) == 1)
    (session,) = server.registry.sessions()
    raw.sock.shutdown(socket.SHUT_RDWR)
    raw.close()
    assert session.wait_closed(5) and session.close_code == 1006


def test_echo_server_runs_as_a_module() -> None:
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "iofogd.ws.echo", "--port", str(port)])
    try:
        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                return True
            except OSError:
                return False

        assert wait_for(listening, 10)
        with connect(f"ws://127.0.0.1:{port}/x", ping_interval=None, max_size=None) as ws:
            ws.send(b"\x00" * (2 << 20))  # above the daemon's 1 MiB: the echo target's limits are raised
            assert ws.recv(timeout=10) == b"\x00" * (2 << 20)
    finally:
        proc.terminate()
        proc.wait(10)


def test_read_buffered_takes_what_is_buffered_and_never_drains_the_socket() -> None:
    # A flooding client must not hand the session more than one read's worth
    # before any limit has looked at it.
    from iofogd.ws.session import read_buffered

    a, b = socket.socketpair()
    try:
        rfile = a.makefile("rb")
        b.sendall(b"GET / HTTP/1.1\r\n\r\nearly")
        assert rfile.readline() == b"GET / HTTP/1.1\r\n" and rfile.readline() == b"\r\n"
        b.setblocking(False)
        flood = 0
        try:
            while flood < 8 << 20:
                flood += b.send(b"x" * 65536)
        except BlockingIOError:
            pass
        got = read_buffered(rfile, a)
        assert got.startswith(b"early") and len(got) <= 65536 < flood
        assert a.gettimeout() is None   # the socket's mode is given back
    finally:
        a.close()
        b.close()


def test_every_frame_leaves_in_one_write() -> None:
    # The session's writes, counted on the socket itself: a message, a pong and
    # the close echo are one sendall each (never header then payload).
    class Counting(socket.socket):
        writes: list

        def sendall(self, data, flags=0):  # type: ignore[no-untyped-def,override]
            self.writes.append(bytes(data))
            return super().sendall(data, flags)

    a, b = socket.socketpair()
    server_side = Counting(a.family, a.type, a.proto, fileno=a.detach())
    server_side.writes = []
    session = WebSocketSession(server_side, SessionLimits(ping_interval=0))
    thread = threading.Thread(target=session.run, args=(echo_server.echo,))
    thread.start()
    try:
        b.sendall(frame_bytes(0x2, b"x" * 300) + frame_bytes(0x9, b"p"))
        b.sendall(frame_bytes(0x8, b"\x03\xe8"))
        assert session.wait_closed(5)
        assert server_side.writes == [
            b"\x82\x7e\x01\x2c" + b"x" * 300, b"\x8a\x01p", b"\x88\x02\x03\xe8"]
    finally:
        thread.join(5)
        b.close()
        server_side.close()


def test_a_peer_that_stops_reading_is_dropped_after_the_write_timeout(caplog: pytest.LogCaptureFixture) -> None:
    # The kernel bounds a write that makes no progress (SO_SNDTIMEO = write_timeout):
    # the sender gets ConnectionClosed, the session ends, no thread waits for ever.
    caplog.set_level(logging.INFO)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        peer = socket.create_connection(listener.getsockname())
        server_side, _ = listener.accept()
    session = WebSocketSession(server_side, SessionLimits(ping_interval=0, write_timeout=0.3))
    thread = threading.Thread(target=session.run, args=(echo_server.echo,))
    thread.start()
    outcome: list = []

    def fill() -> None:   # the peer reads nothing: the buffers fill, then a write blocks
        try:
            while True:
                session.send_binary(b"x" * 65536)
        except ConnectionClosed as exc:
            outcome.append(exc)

    sender = threading.Thread(target=fill, daemon=True)
    try:
        sender.start()
        sender.join(10)
        assert not sender.is_alive(), "the blocked write was never bounded"
        assert len(outcome) == 1
        assert session.wait_closed(5) and session.close_code == 1006
        assert "a write made no progress in 0.3s; dropping the peer" in caplog.text
    finally:
        thread.join(5)
        peer.close()
        server_side.close()


def test_sends_from_other_threads_never_split_a_frame(server: EchoServer) -> None:
    # The read path decodes the common frame without the session lock; the
    # writes still take it, so a push from another thread (the control hub, the
    # watchdog's ping) never lands inside an echo, and each stream keeps its order.
    raw = RawClient(server)
    assert wait_for(lambda: len(server.registry) == 1)
    (session,) = server.registry.sessions()
    pushes = 300

    def push() -> None:
        for i in range(pushes):
            session.send_binary(b"push %d" % i)
            if i % 50 == 0:
                session.ping(b"keepalive")

    pusher = threading.Thread(target=push)
    pusher.start()
    echoes = []
    pushed = []
    pings = 0
    sent = 0
    for i in range(pushes):
        raw.send(0x2, b"echo %d" % i)
        sent += 1
    while len(echoes) < sent or len(pushed) < pushes or pings < pushes // 50:
        frame = raw.recv_frame()
        assert frame is not None and frame.fin and not (frame.rsv1 or frame.rsv2 or frame.rsv3)
        if frame.opcode is Opcode.PING:
            assert frame.payload == b"keepalive"
            pings += 1
        else:
            assert frame.opcode is Opcode.BINARY
            (echoes if frame.payload.startswith(b"echo") else pushed).append(frame.payload)
    pusher.join(5)
    assert echoes == [b"echo %d" % i for i in range(sent)]
    assert pushed == [b"push %d" % i for i in range(pushes)]
    raw.send(0x8, b"\x03\xe8")
    assert raw.recv_close() == (1000, "")
    raw.close()


def test_close_all_with_a_wait_drops_peers_that_do_not_answer(server: EchoServer) -> None:
    # Shutdown is bounded: a peer that never echoes our close is dropped after ``wait``.
    raw = RawClient(server)
    assert wait_for(lambda: len(server.registry) == 1)
    (session,) = server.registry.sessions()
    assert server.limits.close_timeout > 2   # without the drop it would wait that long
    server.registry.close_all(wait=0.3)
    assert session.wait_closed(2) and session.close_code == 1006
    assert raw.recv_close() == (1001, "going away")
    raw.close()


def test_lines_a_client_can_trigger_are_throttled(caplog: pytest.LogCaptureFixture) -> None:
    from iofogd.ws.session import LogThrottle

    now = [0.0]
    throttle = LogThrottle(burst=3, period=60.0, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="iofogd.ws.session")
    for i in range(10):
        throttle.info("failed %d", i)
    assert [r.getMessage() for r in caplog.records] == ["failed 0", "failed 1", "failed 2"]
    now[0] = 61.0
    throttle.info("failed %d", 10)
    assert [r.getMessage() for r in caplog.records][3:] == ["ws: 7 similar lines suppressed", "failed 10"]
