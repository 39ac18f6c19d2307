"""iofogd.ws.endpoints: admission before the 101, bounds, and a session served on a real socket."""
from __future__ import annotations

import socket
import threading

import pytest

from iofogd.errors import NotFound, ServiceUnavailable
from iofogd.ws.control import ControlHub
from iofogd.ws.endpoints import Seat, SocketEndpoints
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
    seat = ep.admit("/v2/message/socket/id/a?x=1", "127.0.0.1:1")
    assert seat.microservice_id == "a" and seat.hub is messages
    clients = [serve_in_thread(ep, seat), serve_in_thread(ep, ep.admit("/v2/control/socket/id/a", "127.0.0.1:1"))]
    assert wait_for(lambda: len(messages.sessions("a")) == 1 and len(ep.hub.sessions("a")) == 1)
    with pytest.raises(ServiceUnavailable, match="Too many message sockets"):
        ep.admit("/v2/message/socket/id/a", "127.0.0.1:1")
    for client, thread in clients:
        client.close()
        thread.join(5)
    assert wait_for(lambda: not messages.sessions() and not ep.hub.sessions())


def serve_in_thread(ep: SocketEndpoints, seat: Seat) -> tuple[socket.socket, threading.Thread]:
    server_side, client_side = socket.socketpair()
    thread = threading.Thread(target=ep.serve, args=(server_side, b"", seat, "127.0.0.1:1"))
    thread.start()
    return client_side, thread


def admitted(ep: SocketEndpoints, microservice_id: str) -> tuple[socket.socket, threading.Thread]:
    return serve_in_thread(ep, ep.admit(f"/v2/control/socket/id/{microservice_id}", "127.0.0.1:1"))


def test_bounds_per_id_and_in_total() -> None:
    ep = endpoints(max_sessions=3, max_per_id=2)
    clients = [admitted(ep, "a") for _ in range(2)]
    assert wait_for(lambda: len(ep.hub.sessions("a")) == 2)
    with pytest.raises(ServiceUnavailable, match="for this microservice"):
        ep.admit("/v2/control/socket/id/a", "127.0.0.1:1")
    clients.append(admitted(ep, "b"))
    assert wait_for(lambda: len(ep.hub.sessions()) == 3)
    with pytest.raises(ServiceUnavailable, match="Too many WebSocket sessions"):
        ep.admit("/v2/control/socket/id/c", "127.0.0.1:1")
    # A session that ends gives its place back.
    sock, thread = clients.pop()
    sock.sendall(frame_bytes(0x8, b"\x03\xe8"))
    thread.join(5)
    sock.close()
    ep.admit("/v2/control/socket/id/c", "127.0.0.1:1").release()
    for sock, thread in clients:
        sock.close()
        thread.join(5)
    assert ep.hub.sessions() == [] and len(ep.registry) == 0
    ep.admit("/v2/control/socket/id/a", "127.0.0.1:1")


def test_the_place_is_taken_at_admission_before_any_session_runs() -> None:
    # Two upgrades for one id that come together: the second is refused at
    # admission (a 503 before its 101), not sent a 101 and closed after it.
    ep = endpoints(max_per_id=1)
    first = ep.admit("/v2/control/socket/id/a", "127.0.0.1:1")
    with pytest.raises(ServiceUnavailable, match="for this microservice"):
        ep.admit("/v2/control/socket/id/a", "127.0.0.1:2")
    # An upgrade that fails after admission (403, a peer gone before the 101)
    # gives the place back; releasing twice gives back one place, not two.
    first.release()
    first.release()
    second = ep.admit("/v2/control/socket/id/a", "127.0.0.1:3")
    with pytest.raises(ServiceUnavailable):
        ep.admit("/v2/control/socket/id/a", "127.0.0.1:4")
    client, thread = serve_in_thread(ep, second)
    assert wait_for(lambda: len(ep.hub.sessions("a")) == 1)
    # serve() gives the seat back at the session's end; a late release() changes nothing.
    client.close()
    thread.join(5)
    second.release()
    assert not ep.hub.sessions() and ep.admit("/v2/control/socket/id/a", "127.0.0.1:5")
    with pytest.raises(ServiceUnavailable):
        ep.admit("/v2/control/socket/id/a", "127.0.0.1:6")
