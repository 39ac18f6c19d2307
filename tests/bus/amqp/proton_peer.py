"""Qpid Proton's protocol engine as the peer of our sans-I/O connection, in memory.

Proton's ``Transport`` is sans-I/O too: bytes are moved between the two
engines by :meth:`ProtonPeer.pump` on a virtual clock, so the tests exercise
our state machine against an independent implementation without sockets or
sleeps.  The peer is a tiny broker: what our senders transfer is stored per
target address (and accepted, unless told otherwise), and what is stored for
an address goes to our receivers on that address as their credit allows.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import proton
from proton import Collector, Delivery, Event, Transport

from iofogd.bus.amqp import protocol as p


class ProtonPeer:
    def __init__(self, ours: p.Connection, *, idle_timeout: float = 0.0, sender_credit: int = 100,
                 max_frame_size: Optional[int] = None, refuse: tuple[str, ...] = (),
                 settle_incoming: bool = True) -> None:
        self.ours = ours
        self.transport = Transport(Transport.SERVER)
        if max_frame_size:
            self.transport.max_frame_size = max_frame_size
        if idle_timeout:
            self.transport.idle_timeout = idle_timeout
        self.connection = proton.Connection()
        self.collector = Collector()
        self.connection.collect(self.collector)
        self.transport.bind(self.connection)
        sasl = self.transport.sasl()
        sasl.allowed_mechs("ANONYMOUS")
        self.sender_credit = sender_credit
        self.refuse = refuse
        self.settle_incoming = settle_incoming
        self.queues: Dict[str, List[bytes]] = {}
        self.received: List[Delivery] = []  # proton deliveries of what our senders sent
        self.outcomes: List[Any] = []  # our outcomes for what proton sent (remote_state)
        self.events: List[p.Event] = []  # what our connection reported
        self.silent = False  # drop proton's output: a peer that went quiet
        self.now = 0.0

    def pump(self, now: Optional[float] = None) -> List[p.Event]:
        """Move bytes both ways until both engines are idle; returns our new events."""
        if now is not None:
            self.now = now
        self.transport.tick(self.now)
        self.ours.tick(self.now)
        new: List[p.Event] = []
        for _ in range(10000):
            moved = False
            out = self.ours.data_to_send()
            while out:
                room = self.transport.capacity()
                if room <= 0:
                    break
                self.transport.push(out[:room])
                out = out[room:]
                moved = True
            assert not out, "proton stopped reading"
            n = self.transport.pending()
            if n > 0:
                data = self.transport.peek(n)
                self.transport.pop(n)
                if not self.silent:
                    self.ours.receive_data(data, self.now)
                moved = True
            moved |= self._proton_events()
            while (event := self.ours.next_event()) is not None:
                new.append(event)
                moved = True
            if not moved:
                break
        self.ours.tick(self.now)
        self.events += new
        return new

    def _proton_events(self) -> bool:
        moved = False
        while (ev := self.collector.peek()) is not None:
            self.collector.pop()
            moved = True
            kind = ev.type
            if kind == Event.CONNECTION_REMOTE_OPEN:
                ev.connection.open()
            elif kind == Event.SESSION_REMOTE_OPEN:
                ev.session.open()
            elif kind == Event.LINK_REMOTE_OPEN:
                link = ev.link
                address = (link.remote_target if link.is_receiver else link.remote_source).address
                if address in self.refuse:
                    link.condition = proton.Condition("amqp:not-found", f"no queue {address}")
                    link.open()
                    link.close()
                    continue
                link.source.copy(link.remote_source)
                link.target.copy(link.remote_target)
                link.open()
                if link.is_receiver:
                    link.flow(self.sender_credit)
            elif kind == Event.DELIVERY:
                d = ev.delivery
                if d.link.is_receiver:
                    if d.partial or not d.readable or d.link.current != d:
                        continue  # not whole yet, or an update of one taken already
                    data = d.link.recv(d.pending)
                    self.queues.setdefault(d.link.target.address, []).append(data)
                    self.received.append(d)
                    d.link.advance()  # before settle(): settling the current delivery advances too
                    if self.settle_incoming:
                        d.update(Delivery.ACCEPTED)
                        d.settle()
                elif d.remote_state or d.settled:
                    self.outcomes.append(d.remote_state)
                    d.settle()
            if kind in (Event.LINK_FLOW, Event.LINK_REMOTE_OPEN, Event.DELIVERY, Event.TRANSPORT):
                self._feed_senders()
        return moved

    def _feed_senders(self) -> None:
        link = self.connection.link_head(0)
        while link is not None:
            if link.is_sender and link.state & proton.Endpoint.LOCAL_ACTIVE:
                queue = self.queues.get(link.source.address, [])
                while queue and link.credit > 0:
                    data = queue.pop(0)
                    link.delivery(f"t{id(data)}-{len(queue)}".encode())
                    link.send(data)
                    link.advance()
            link = link.next(0)

    def push(self, data: bytes) -> None:
        """Hand Proton bytes taken from our connection's data_to_send()."""
        while data:
            room = self.transport.capacity()
            assert room > 0, "proton stopped reading"
            self.transport.push(data[:room])
            data = data[room:]

    def offer(self, address: str, payload: bytes) -> None:
        """Queue ``payload`` for our receivers on ``address``."""
        self.queues.setdefault(address, []).append(payload)
        self._feed_senders()

    def grant(self, address: str, credit: int) -> None:
        """Give our sender on ``address`` ``credit`` more."""
        link = self.connection.link_head(0)
        while link is not None:
            if link.is_receiver and link.target.address == address:
                link.flow(credit)
            link = link.next(0)
