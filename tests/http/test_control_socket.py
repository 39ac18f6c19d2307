"""The control socket through the real daemon (docs/websocket.md#handshake, #control): independent
clients, the published Python SDK, and shutdown."""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
import urllib.request
from typing import Any, Callable

import pytest
import websocket  # websocket-client

from iofogd.daemon import Daemon


def url(d: Daemon, mid: str) -> str:
    return f"ws://127.0.0.1:{d.api_port}/v2/control/socket/id/{mid}"  # type: ignore[attr-defined]


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    return predicate()


def get_config(d: Daemon, mid: str) -> tuple[int, Any]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{d.api_port}/v2/config/get", data=json.dumps({"id": mid}).encode(),  # type: ignore[attr-defined]
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_config_change_signals_every_socket_of_that_id(inproc_daemon: Daemon) -> None:
    d = inproc_daemon
    a = websocket.create_connection(url(d, "ms1"), timeout=5)
    assert wait_for(lambda: len(d.control.sessions("ms1")) == 1)   # so the hub's order is a, b
    b = websocket.create_connection(url(d, "ms1"), timeout=5)   # an SDK that reconnected
    other = websocket.create_connection(url(d, "ms2"), timeout=5)
    try:
        assert wait_for(lambda: len(d.control.sessions("ms1")) == 2)
        changed = d.controller_port.set_microservice_configs({"ms1": '{"threshold":5}'})
        assert changed == ["ms1"]
        for ws in (a, b):
            opcode, data = ws.recv_data()
            assert (opcode, data) == (websocket.ABNF.OPCODE_BINARY, b"\x0c")
        other.settimeout(0.3)
        with pytest.raises(websocket.WebSocketTimeoutException):
            other.recv_data()
        assert get_config(d, "ms1") == (200, {"status": "okay", "config": '{"threshold":5}'})
        # The ACK clears the pending signal of that socket only.
        a.send_binary(b"\x0b")
        sa, sb = d.control.sessions("ms1")
        assert wait_for(lambda: d.control.pending(sa) is None)
        assert d.control.pending(sb) == (0x0C, 1)
        # An unchanged config sends nothing.
        assert d.controller_port.set_microservice_configs({"ms1": '{"threshold":5}'}) == []
    finally:
        for ws in (a, b, other):
            ws.close()


def test_edge_resources_signal_goes_to_every_socket(inproc_daemon: Daemon) -> None:
    d = inproc_daemon
    socks = [websocket.create_connection(url(d, f"ms{i}"), timeout=5) for i in range(3)]
    try:
        assert wait_for(lambda: len(d.control.sessions()) == 3)
        assert d.controller_port.set_edge_resources([{"id": 1, "name": "lamp"}])
        for ws in socks:
            assert ws.recv_data() == (websocket.ABNF.OPCODE_BINARY, b"\x0f")
    finally:
        for ws in socks:
            ws.close()


def test_every_ping_gets_a_pong(inproc_daemon: Daemon) -> None:
    ws = websocket.create_connection(url(inproc_daemon, "ms1"), timeout=5)
    try:
        ws.ping(b"\x09")
        assert ws.recv_data(control_frame=True) == (websocket.ABNF.OPCODE_PONG, b"\x0a")
        ws.ping(b"abcd")
        assert ws.recv_data(control_frame=True) == (websocket.ABNF.OPCODE_PONG, b"abcd")
    finally:
        ws.close()


def test_plain_get_is_refused_with_426_or_400(inproc_daemon: Daemon) -> None:
    d = inproc_daemon
    req = urllib.request.Request(f"http://127.0.0.1:{d.api_port}/v2/control/socket/id/ms1")  # type: ignore[attr-defined]
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=5)
    assert info.value.code in (400, 426)
    assert json.loads(info.value.read())["status"] == "failed"


def test_shutdown_closes_sockets_with_1001(inproc_daemon: Daemon) -> None:
    d = inproc_daemon
    ws = websocket.create_connection(url(d, "ms1"), timeout=10)
    assert wait_for(lambda: len(d.control.sessions()) == 1)
    d.stop.set()
    opcode, data = ws.recv_data(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    assert int.from_bytes(data[:2], "big") == 1001


def test_published_python_sdk_gets_0x0c_and_acks(inproc_daemon: Daemon) -> None:
    # The published SDK, as a microservice has it (a test dependency in setup.cfg).
    from iofog.microservices.client import Client
    from iofog.microservices.listener import IoFogControlWsListener

    d = inproc_daemon
    signalled = threading.Event()

    class Listener(IoFogControlWsListener):  # type: ignore[misc]
        def on_control_signal(self) -> None:
            signalled.set()

    client = Client(id="sdk-ms", ssl=False, host="127.0.0.1", port=d.api_port)  # type: ignore[attr-defined]
    client.establish_control_ws_connection(Listener())
    try:
        assert wait_for(lambda: d.control.sessions("sdk-ms"), timeout=10)
        d.controller_port.set_microservice_configs({"sdk-ms": '{"k":"v"}'})
        assert signalled.wait(10)
        session = d.control.sessions("sdk-ms")[0]
        # The SDK ACKs after its listener returns; the agent sees it.
        assert wait_for(lambda: d.control.pending(session) is None, timeout=10)
    finally:
        client.control_ws_client.close()


# -- the upgrade in the HTTP layer (issue 10, 11, 12) ------------------------------------


class CountingSocket(socket.socket):
    """The accepted socket, recording every write call (and nothing else changed)."""

    writes: "list[bytes]"

    def sendall(self, data: Any, flags: int = 0) -> None:  # type: ignore[override]
        self.writes.append(bytes(data))
        super().sendall(data, flags)

    def send(self, data: Any, flags: int = 0) -> int:  # type: ignore[override]
        self.writes.append(bytes(data))
        return super().send(data, flags)


@pytest.fixture
def accepted(monkeypatch: pytest.MonkeyPatch) -> "list[CountingSocket]":
    """Every socket the Local API accepts from now on, wrapped to count its writes."""
    from iofogd.http.server import LocalApiServer

    sockets: list[CountingSocket] = []

    accept = LocalApiServer.get_request   # sets the socket options; they stay with the fd

    def get_request(self: LocalApiServer) -> tuple[socket.socket, Any]:
        sock, address = accept(self)
        counting = CountingSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
        counting.writes = []
        sockets.append(counting)
        return counting, address

    monkeypatch.setattr(LocalApiServer, "get_request", get_request)
    return sockets


def version_status(d: Daemon) -> int:
    with open(d.paths.token_file) as f:
        token = f.read().strip()
    req = urllib.request.Request(f"http://127.0.0.1:{d.api_port}/v2/version",  # type: ignore[attr-defined]
                                 headers={"Authorization": token})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return int(resp.status)


def test_101_and_every_frame_leave_in_one_write_on_a_nodelay_socket(
        inproc_daemon: Daemon, accepted: "list[CountingSocket]") -> None:
    d = inproc_daemon
    ws = websocket.create_connection(url(d, "ms1"), timeout=5)
    try:
        assert wait_for(lambda: len(d.control.sessions("ms1")) == 1)
        (server_side,) = accepted
        assert server_side.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert len(server_side.writes) == 1 and server_side.writes[0].startswith(b"HTTP/1.1 101 ")
        assert server_side.writes[0].endswith(b"\r\n\r\n")
        d.controller_port.set_microservice_configs({"ms1": '{"a":1}'})
        assert ws.recv_data() == (websocket.ABNF.OPCODE_BINARY, b"\x0c")
        ws.ping(b"abcd")
        assert ws.recv_data(control_frame=True) == (websocket.ABNF.OPCODE_PONG, b"abcd")
        # One write per frame: the signal, then the pong, each whole.
        assert server_side.writes[1:] == [b"\x82\x01\x0c", b"\x8a\x04abcd"]
    finally:
        ws.close()


def test_refusals_are_plain_http_before_any_101(inproc_daemon: Daemon) -> None:
    d = inproc_daemon
    d.app.phase2("the WebSocket layer").sockets.max_per_id = 2
    socks = [websocket.create_connection(url(d, "busy"), timeout=5) for _ in range(2)]
    try:
        with pytest.raises(websocket.WebSocketBadStatusException) as info:
            websocket.create_connection(url(d, "busy"), timeout=5)
        assert info.value.status_code == 503
        assert b"Too many control sockets" in info.value.resp_body
        # Another id is not affected, and neither is the REST API.
        websocket.create_connection(url(d, "other"), timeout=5).close()
        assert version_status(d) == 200
        with pytest.raises(websocket.WebSocketBadStatusException) as info:
            websocket.create_connection(
                f"ws://127.0.0.1:{d.api_port}/v2/control/socket/id/%1B%5B2J", timeout=5)  # type: ignore[attr-defined]
        assert info.value.status_code == 404
    finally:
        for ws in socks:
            ws.close()


def test_websocket_sessions_hold_no_http_slot(inproc_daemon: Daemon) -> None:
    d = inproc_daemon
    slots = d.server.limits.max_connections
    socks = [websocket.create_connection(url(d, f"ms{i}"), timeout=5) for i in range(slots + 6)]
    try:
        assert wait_for(lambda: len(d.control.sessions()) == slots + 6)
        assert version_status(d) == 200
    finally:
        for ws in socks:
            ws.close()


def test_client_text_in_a_path_never_reaches_the_log_raw(
        inproc_daemon: Daemon, caplog: pytest.LogCaptureFixture) -> None:
    d = inproc_daemon
    caplog.set_level(logging.DEBUG, logger="iofogd")
    handshake = (b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    # A raw control character is not a request target (RFC 9112 section 3.2): 400.
    with socket.create_connection(("127.0.0.1", d.api_port), timeout=5) as s:  # type: ignore[attr-defined]
        s.sendall(b"GET /v2/control/socket/id/ms1/\x1b[2J" + handshake)
        assert s.recv(4096).startswith(b"HTTP/1.1 400 ")
    # Percent-encoded, it reaches the WebSocket layer, which refuses such an id (404).
    with socket.create_connection(("127.0.0.1", d.api_port), timeout=5) as s:  # type: ignore[attr-defined]
        s.sendall(b"GET /v2/control/socket/id/%1B%5B2J" + handshake)
        assert s.recv(4096).startswith(b"HTTP/1.1 404 ")
    assert caplog.records
    assert not any("\x1b" in r.getMessage() for r in caplog.records)
