"""Qpid Proton's protocol engine as the peer of our sans-I/O connection, in memory.

Proton's ``Transport`` is sans-I/O too: bytes are moved between the two
engines by :meth:`ProtonPeer.pump` on a virtual clock, so the tests exercise
our state machine against an independent implementation without sockets or
sleeps.  The peer is a tiny broker: what our senders transfer is stored per
target address (and accepted, unless told otherwise), and what is stored for
an address goes to our receivers on that address as their credit allows.

:class:`ProtonServer` puts the same engine behind a real loopback socket, for
tests of the I/O adapter and the router link that must control what the peer
writes in one go (a burst of transfers in one send).
"""
from __future__ import annotations

import select
import socket
import threading
from typing import Any, Callable, Dict, List, Optional

import proton
from proton import Collector, Delivery, Event, Transport

from iofogd.bus.amqp import protocol as p


class ProtonPeer:
    def __init__(self, ours: Optional[p.Connection], *, idle_timeout: float = 0.0, sender_credit: int = 100,
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
        self.on_outcome: Optional[Callable[[], None]] = None  # after each outcome of ours is taken

    def pump(self, now: Optional[float] = None) -> List[p.Event]:
        """Move bytes both ways until both engines are idle; returns our new events."""
        assert self.ours is not None, "pump() moves bytes to our connection in memory"
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
                    if self.on_outcome is not None:
                        self.on_outcome()
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


class ProtonServer:
    """The Proton peer on a loopback port: accepts one connection and serves it in a thread.

    Hold :attr:`lock` to touch :attr:`peer` (offer, credit): the thread then writes
    everything Proton produced meanwhile in one ``sendall``.  :attr:`frames` lists the
    performatives Proton received (its frame trace), e.g. ``disposition``."""

    def __init__(self, **peer_args: Any) -> None:
        self.peer = ProtonPeer(None, **peer_args)
        self.lock = threading.Lock()
        self.frames: List[str] = []
        self.peer.transport.trace(Transport.TRACE_FRM)
        self.peer.transport.tracer = self._trace
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="proton-server", daemon=True)

    def _trace(self, transport: Any, line: str) -> None:
        if "<- @" in line:   # a frame Proton read
            for word in ("@disposition", "@flow", "@transfer", "@attach", "@open", "@begin"):
                if word in line:
                    self.frames.append(word[1:])

    def start(self) -> "ProtonServer":
        self._thread.start()
        return self

    def credit(self, address: str) -> int:
        """The credit our receiver on ``address`` gave Proton's sender (0 before it attached)."""
        with self.lock:
            link = self.peer.connection.link_head(0)
            while link is not None:
                if link.is_sender and link.source.address == address:
                    return int(link.credit)
                link = link.next(0)
        return 0

    def _serve(self) -> None:
        self.listener.settimeout(10)
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            while not self._stop.is_set():
                readable, _, _ = select.select([conn], [], [], 0.01)
                with self.lock:
                    if readable:
                        data = conn.recv(1 << 16)
                        if not data:
                            return
                        self.peer.push(data)
                    self.peer._proton_events()
                    out = bytearray()
                    while (n := self.peer.transport.pending()) > 0:
                        out += self.peer.transport.peek(n)
                        self.peer.transport.pop(n)
                        self.peer._proton_events()
                    if out:
                        conn.sendall(bytes(out))

    def stop(self) -> None:
        self._stop.set()
        self.listener.close()
        self._thread.join(5)
