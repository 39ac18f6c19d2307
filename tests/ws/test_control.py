"""iofogd.ws.control: the control-socket hub with real sessions and an injected clock."""
from __future__ import annotations

import threading
from typing import Callable, Iterator, List, Tuple

import pytest
import websocket  # websocket-client

from iofogd.ws.control import ControlHub, control_socket_id
from iofogd.ws.session import WebSocketSession
from tests.ws.conftest import ServerFactory, url, wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def hub(clock: Clock) -> ControlHub:
    return ControlHub(clock=clock)


Opener = Callable[[str], Tuple[websocket.WebSocket, WebSocketSession]]


@pytest.fixture
def open_socket(make_server: ServerFactory, hub: ControlHub) -> Iterator[Opener]:
    """``open_socket(id)`` -> (client, the hub's session for it)."""
    server = make_server(hub=hub)
    clients: List[websocket.WebSocket] = []

    def opener(microservice_id: str) -> Tuple[websocket.WebSocket, WebSocketSession]:
        before = hub.sessions(microservice_id)
        ws = websocket.create_connection(url(server, f"/v2/control/socket/id/{microservice_id}"), timeout=5)
        clients.append(ws)
        assert wait_for(lambda: len(hub.sessions(microservice_id)) == len(before) + 1)
        (session,) = [s for s in hub.sessions(microservice_id) if s not in before]
        return ws, session

    yield opener
    for ws in clients:
        ws.close()


def nothing_arrives(ws: websocket.WebSocket, wait: float = 0.2) -> bool:
    ws.settimeout(wait)
    try:
        ws.recv()
    except websocket.WebSocketTimeoutException:
        return True
    finally:
        ws.settimeout(5)
    return False


def test_control_socket_id() -> None:
    assert control_socket_id("/v2/control/socket/id/abc123") == "abc123"
    assert control_socket_id("/v2/control/socket/id/abc123?x=1") == "abc123"
    assert control_socket_id("/v2/control/socket/id/abc/extra") == "abc"
    assert control_socket_id("/v2/control/socket/id/") is None
    assert control_socket_id("/v2/message/socket/id/abc") is None


def test_config_signal_goes_to_every_socket_of_the_id(open_socket: Opener, hub: ControlHub) -> None:
    (a1, s1), (a2, s2), (b1, t1) = open_socket("a"), open_socket("a"), open_socket("b")
    assert hub.signal_config("a") == 2
    assert a1.recv() == b"\x0c" and a2.recv() == b"\x0c"
    assert nothing_arrives(b1)
    assert hub.pending(s1) == hub.pending(s2) == (0x0C, 1) and hub.pending(t1) is None
    assert hub.signal_config("nobody") == 0


def test_edge_resource_signal_goes_to_every_socket(open_socket: Opener, hub: ControlHub) -> None:
    sockets = [open_socket("a"), open_socket("a"), open_socket("b")]
    assert hub.signal_edge_resources() == 3
    assert [ws.recv() for ws, _ in sockets] == [b"\x0f"] * 3


def test_ack_clears_that_sockets_signal(open_socket: Opener, hub: ControlHub) -> None:
    (a1, s1), (a2, s2) = open_socket("a"), open_socket("a")
    hub.signal_config("a")
    assert a1.recv() == b"\x0c" and a2.recv() == b"\x0c"
    a2.send_binary(b"\x0b")
    assert wait_for(lambda: hub.pending(s2) is None)
    assert hub.pending(s1) == (0x0C, 1)


def test_other_messages_are_not_acks(open_socket: Opener, hub: ControlHub) -> None:
    a1, s1 = open_socket("a")
    hub.signal_config("a")
    a1.recv()
    a1.send_binary(b"\x0b\x0b")  # a control ACK is exactly one byte (docs/websocket.md#control)
    a1.send("\x0b")  # and binary
    a1.ping(b"sync")
    a1.recv_data_frame(control_frame=True)  # the pong: both messages were handled before it
    assert hub.pending(s1) == (0x0C, 1)


def test_ack_on_a_newer_socket_of_the_same_id_clears_the_older(open_socket: Opener, hub: ControlHub) -> None:
    # Node's SDK ACKs on its newest socket (docs/websocket.md#sdk-node).
    (old, s_old) = open_socket("a")
    hub.signal_config("a")
    old.recv()
    (new, s_new) = open_socket("a")
    new.send_binary(b"\x0b")
    assert wait_for(lambda: hub.pending(s_old) is None)


def test_resend_schedule_then_close(open_socket: Opener, hub: ControlHub, clock: Clock) -> None:
    a1, s1 = open_socket("a")
    hub.signal_config("a")
    received = [a1.recv()]
    # First retry 20 s after the first send, then every 10 s, 10 sends in all.
    due = [20.0 + 10.0 * i for i in range(9)]
    for t in due:
        hub.tick(t - 0.1)
        assert nothing_arrives(a1, 0.05)
        hub.tick(t)
        received.append(a1.recv())
    assert received == [b"\x0c"] * 10
    assert hub.pending(s1) == (0x0C, 10)
    hub.tick(due[-1] + 9.9)
    assert hub.sessions("a") == [s1]
    hub.tick(due[-1] + 10.0)  # the tenth went unanswered: closed and forgotten
    assert hub.sessions("a") == [] and hub.pending(s1) is None
    opcode, frame = a1.recv_data_frame(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE and frame.data[:2] == (1008).to_bytes(2, "big")
    assert s1.wait_closed(5)


def test_resource_signal_is_resent_as_0x0f(open_socket: Opener, hub: ControlHub) -> None:
    a1, _ = open_socket("a")
    hub.signal_edge_resources()
    hub.tick(20.0)
    assert [a1.recv(), a1.recv()] == [b"\x0f", b"\x0f"]  # the Java agent resent 0x0C


def test_a_newer_signal_replaces_the_pending_one(open_socket: Opener, hub: ControlHub, clock: Clock) -> None:
    a1, s1 = open_socket("a")
    hub.signal_config("a")
    hub.tick(20.0)
    assert hub.pending(s1) == (0x0C, 2)
    clock.now = 25.0
    hub.signal_edge_resources()
    assert hub.pending(s1) == (0x0F, 1)
    hub.tick(44.9)
    assert hub.pending(s1) == (0x0F, 1)
    hub.tick(45.0)
    assert hub.pending(s1) == (0x0F, 2)
    assert [a1.recv() for _ in range(4)] == [b"\x0c", b"\x0c", b"\x0f", b"\x0f"]


def test_closed_sockets_are_forgotten(open_socket: Opener, hub: ControlHub) -> None:
    a1, s1 = open_socket("a")
    a1.close()
    assert wait_for(lambda: hub.sessions("a") == [])
    assert hub.signal_config("a") == 0


def test_run_ticks_until_stopped() -> None:
    ticks: List[float] = []
    hub = ControlHub(clock=lambda: float(len(ticks)))
    hub.tick = lambda now=None: ticks.append(0.0)  # type: ignore[method-assign]
    stop = threading.Event()
    thread = threading.Thread(target=hub.run, args=(stop, 0.01), daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: len(ticks) >= 3)
    finally:
        stop.set()
    thread.join(5)
    assert not thread.is_alive()
