"""Our client against a real AMQP 1.0 broker: RabbitMQ 3.10 with its 1.0 plugin."""
from __future__ import annotations

import threading
import time
import uuid
from typing import Any, List

import pytest

from iofogd.bus.amqp import frames as f
from iofogd.bus.amqp import message as m
from iofogd.bus.amqp import protocol as p
from iofogd.bus.amqp.client import Client, Receiver
from iofogd.errors import AmqpAuthError, AmqpConnectionLost, AmqpError
from tests.bus.amqp.conftest import Broker, wait_for


def queue() -> str:
    return uuid.uuid4().hex  # a fresh bare address, as a receiver uuid is


class Inbox:
    """A receiver callback that keeps what arrives and settles it (unless told not to)."""

    def __init__(self, client: Client, settle: bool = True) -> None:
        self.client = client
        self.settle = settle
        self.deliveries: List[p.Delivery] = []
        self.lock = threading.Lock()

    def __call__(self, receiver: Receiver, delivery: p.Delivery) -> None:
        with self.lock:
            self.deliveries.append(delivery)
        if self.settle:
            self.client.settle(delivery)

    def bodies(self) -> List[Any]:
        with self.lock:
            return [m.decode_message(d.payload).body for d in self.deliveries]


@pytest.fixture
def client(broker: Broker) -> Any:
    c = Client(broker.url, idle_timeout=10)
    c.connect()
    yield c
    c.close()


def test_send_and_receive_with_sasl_plain(client: Client) -> None:
    q = queue()
    inbox = Inbox(client)
    client.receiver(q, inbox, credit=10)
    sender = client.sender(q)
    outcomes: List[p.Delivery] = []
    for i in range(20):
        client.send(sender, m.encode_message(m.Message(f"m{i}")), outcomes.append)
    assert wait_for(lambda: len(inbox.deliveries) == 20 and len(outcomes) == 20)
    assert inbox.bodies() == [f"m{i}" for i in range(20)]
    assert all(isinstance(d.state, f.Accepted) for d in outcomes)
    assert client.protocol.remote_open is not None
    assert client.protocol.remote_open.properties["product"] == "RabbitMQ"


def test_sasl_anonymous(broker: Broker) -> None:
    c = Client(f"amqp://127.0.0.1:{broker.port}")
    c.connect()
    try:
        q = queue()
        inbox = Inbox(c)
        c.receiver(q, inbox)
        c.send(c.sender(q), m.encode_message(m.Message("anon")))
        assert wait_for(lambda: inbox.bodies() == ["anon"])
    finally:
        c.close()


def test_a_wrong_password_is_an_auth_error(broker: Broker) -> None:
    c = Client(f"amqp://guest:wrong@127.0.0.1:{broker.port}")
    with pytest.raises(AmqpAuthError, match="refused"):
        c.connect()
    assert c.closed.is_set()


def test_nothing_listening_is_connection_lost() -> None:
    c = Client("amqp://127.0.0.1:1", connect_timeout=2)
    with pytest.raises(AmqpConnectionLost, match="cannot connect"):
        c.connect()


@pytest.mark.parametrize("size", [70_000, 1_000_000])
def test_large_messages_cross_in_many_frames_both_ways(client: Client, size: int) -> None:
    q = queue()
    inbox = Inbox(client)
    client.receiver(q, inbox)
    body = bytes(range(256)) * (size // 256)
    client.send(client.sender(q), m.encode_message(m.Message([body], m.BODY_DATA)))
    assert wait_for(lambda: len(inbox.deliveries) == 1)
    assert inbox.bodies() == [[body]]


def test_our_credit_holds_the_broker_back(client: Client) -> None:
    q = queue()
    inbox = Inbox(client, settle=False)
    receiver = client.receiver(q, inbox, credit=2, prefetch=False)
    sender = client.sender(q)
    accepted: List[p.Delivery] = []
    for i in range(10):
        client.send(sender, m.encode_message(m.Message(i)), accepted.append)
    assert wait_for(lambda: len(accepted) == 10)  # the broker took them all
    time.sleep(0.3)
    assert len(inbox.deliveries) == 2  # but hands out only what we asked for
    for d in inbox.deliveries:
        client.settle(d)
    client.flow(receiver, 8)
    assert wait_for(lambda: len(inbox.deliveries) == 10)
    assert inbox.bodies() == list(range(10))


def test_unsettled_deliveries_come_again_after_a_reconnect(broker: Broker) -> None:
    q = queue()
    first = Client(broker.url)
    first.connect()
    inbox = Inbox(first, settle=False)
    first.receiver(q, inbox)
    accepted: List[p.Delivery] = []
    for i in range(5):
        first.send(first.sender(q), m.encode_message(m.Message(i)), accepted.append)
    assert wait_for(lambda: len(inbox.deliveries) == 5 and len(accepted) == 5)
    first.settle(inbox.deliveries[0])
    first.settle(inbox.deliveries[1])
    time.sleep(0.2)
    first.close()
    second = Client(broker.url)
    second.connect()
    try:
        again = Inbox(second)
        second.receiver(q, again)
        assert wait_for(lambda: len(again.deliveries) == 3)
        assert sorted(again.bodies()) == [2, 3, 4]
    finally:
        second.close()


def test_the_broker_stopping_mid_flow_ends_the_connection_with_an_error(broker: Broker) -> None:
    closed: List[Any] = []
    c = Client(broker.url, on_closed=closed.append, idle_timeout=5)
    c.connect()
    q = queue()
    sender = c.sender(q)
    outcomes: List[p.Delivery] = []
    stop = threading.Event()

    def burst() -> None:
        i = 0
        while not stop.is_set():
            try:
                c.send(sender, m.encode_message(m.Message(i)), outcomes.append)
            except AmqpError:
                return
            i += 1
            time.sleep(0.001)

    t = threading.Thread(target=burst)
    t.start()
    try:
        assert wait_for(lambda: len(outcomes) > 20)
        broker.stop()
        assert c.closed.wait(15)
        assert closed and isinstance(closed[0], AmqpError)
        with pytest.raises(AmqpError):
            c.send(sender, b"\x00Sw\x40")
    finally:
        stop.set()
        t.join(5)
        broker.start()
    # The broker is back: a new connection works.
    again = Client(broker.url)
    again.connect()
    again.close()
    assert again.error is None


def test_heartbeats_from_our_idle_timeout_keep_the_connection(broker: Broker) -> None:
    # We ask for 2 s: the broker must send something at least that often, and does.
    c = Client(broker.url, idle_timeout=2)
    c.connect()
    try:
        first = c.protocol._last_received
        time.sleep(5)
        assert not c.closed.is_set() and c.protocol._last_received > first + 2
    finally:
        c.close()
    assert c.error is None
