"""iofogd.ws.endpoints: admission before the 101, bounds, and a session served on a real socket."""
from __future__ import annotations

import socket
import threading

import pytest

from iofogd.errors import NotFound, ServiceUnavailable
from iofogd.ws.control import ControlHub
from iofogd.ws.endpoints import SocketEndpoints
from iofogd.ws.session import SessionLimits, SessionRegistry
from tests.ws.conftest import frame_bytes, wait_for


def endpoints(**bounds: int) -> SocketEndpoints:
    return SocketEndpoints(ControlHub(), SessionRegistry(), SessionLimits(ping_interval=0), **bounds)


@pytest.mark.parametrize("path", [
    "/v2/control/socket/id/", "/v2/control/socket/id/%20", "/v2/control/socket/id/a%1Bb",
    "/v2/control/socket/id/a%00", "/v2/control/socket", "/v2/message/socket/id/",
])
def test_paths_without_a_control_session_are_404(path: str) -> None:
    with pytest.raises(NotFound):
        SocketEndpoints(ControlHub(), SessionRegistry(), SessionLimits(), messages=ControlHub()).admit(
            path, "127.0.0.1:1")


def test_message_socket_without_a_bus_is_503() -> None:
    with pytest.raises(ServiceUnavailable, match="message bus is not running"):
        endpoints().admit("/v2/message/socket/id/x", "127.0.0.1:1")


def test_message_sockets_go_to_their_hub_and_are_bounded_apart_from_control_sockets() -> None:
    # Any hub of the same shape: a second ControlHub records what the message side is given.
    messages = ControlHub()
    ep = SocketEndpoints(ControlHub(), SessionRegistry(), SessionLimits(ping_interval=0),
                         max_per_id=1, messages=messages)
    assert ep.admit("/v2/message/socket/id/a?x=1", "127.0.0.1:1") == "a"
    clients = [serve_in_thread(ep, "/v2/message/socket/id/a"), serve_in_thread(ep, "/v2/control/socket/id/a")]
    assert wait_for(lambda: len(messages.sessions("a")) == 1 and len(ep.hub.sessions("a")) == 1)
    with pytest.raises(ServiceUnavailable, match="Too many message sockets"):
        ep.admit("/v2/message/socket/id/a", "127.0.0.1:1")
    for client, thread in clients:
        client.close()
        thread.join(5)
    assert wait_for(lambda: not messages.sessions() and not ep.hub.sessions())


def serve_in_thread(ep: SocketEndpoints, path: str) -> tuple[socket.socket, threading.Thread]:
    server_side, client_side = socket.socketpair()
    thread = threading.Thread(target=ep.serve, args=(server_side, b"", path, "127.0.0.1:1"))
    thread.start()
    return client_side, thread


def test_bounds_per_id_and_in_total() -> None:
    ep = endpoints(max_sessions=3, max_per_id=2)
    clients = [serve_in_thread(ep, "/v2/control/socket/id/a") for _ in range(2)]
    assert wait_for(lambda: len(ep.hub.sessions("a")) == 2)
    with pytest.raises(ServiceUnavailable, match="for this microservice"):
        ep.admit("/v2/control/socket/id/a", "127.0.0.1:1")
    clients.append(serve_in_thread(ep, "/v2/control/socket/id/b"))
    assert wait_for(lambda: len(ep.hub.sessions()) == 3)
    with pytest.raises(ServiceUnavailable, match="Too many WebSocket sessions"):
        ep.admit("/v2/control/socket/id/c", "127.0.0.1:1")
    # A session that ends gives its place back.
    sock, thread = clients.pop()
    sock.sendall(frame_bytes(0x8, b"\x03\xe8"))
    thread.join(5)
    sock.close()
    ep.admit("/v2/control/socket/id/c", "127.0.0.1:1")
    for sock, thread in clients:
        sock.close()
        thread.join(5)
    assert ep.hub.sessions() == [] and len(ep.registry) == 0
    ep.admit("/v2/control/socket/id/a", "127.0.0.1:1")


def test_a_session_that_loses_the_race_to_the_bound_is_closed_with_1013() -> None:
    # Two upgrades may pass admit() together; serve() takes the place for real.
    ep = endpoints(max_per_id=1)
    first, t1 = serve_in_thread(ep, "/v2/control/socket/id/a")
    assert wait_for(lambda: len(ep.hub.sessions("a")) == 1)
    second, t2 = serve_in_thread(ep, "/v2/control/socket/id/a")
    second.settimeout(5)
    data = second.recv(4096)
    assert data[:2] == b"\x88\x12" and data[2:4] == (1013).to_bytes(2, "big")
    assert data[4:] == b"too many sockets"
    second.sendall(frame_bytes(0x8, b"\x03\xf5"))
    t2.join(5)
    assert len(ep.hub.sessions("a")) == 1
    first.close()
    second.close()
    t1.join(5)
