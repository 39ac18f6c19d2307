"""Where messages for receivers on other nodes go: the hook for the router.

The bus hands every published message whose route names receivers that are
not on this node to a :class:`RemoteDelivery`.  The daemon runs the bus with
:class:`RouterDelivery`, which carries them through the ioFog router network
(iofogd/bus/router.py) at least once; :class:`LocalOnly` (the bus's default,
for tests and tools without a router) counts such messages, says so once per
receiver in the log, and says so in the bus status.  The publisher gets no
error either way, as upstream's did not when its router was away.
"""
from __future__ import annotations

import collections
import json
import logging
import threading

from iofogd.bus.message import IoMessage, decode, encode, from_json, to_json
from iofogd.bus.routersink import NO_ROUTER, RouterSink
from iofogd.errors import MessageError

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Any, Callable, Deque, Dict, List, Optional, Protocol, Sequence, Set

    from iofogd.bus.router import RouterLink
    from iofogd.bus.routing import Routing
    from iofogd.bus.store import Store

    class RemoteDelivery(Protocol):
        # True: the bus stores messages for remote receivers in their waiting queues,
        # from where this delivery carries them (and consumes them once carried).
        carries: bool

        def set_routing(self, routing: Routing) -> None:
            """The routes changed (the Controller's microservice list)."""

        def deliver(self, message: IoMessage, receivers: Sequence[str]) -> None:
            """Carry a stored message to receivers on other nodes; must not block for long."""

        def status(self) -> str:
            """One line for the status report."""

log = logging.getLogger(__name__)


class LocalOnly:
    """No router: messages for other nodes are counted and logged, not carried."""

    carries = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.undelivered: Dict[str, int] = {}   # receiver -> messages not carried

    def set_routing(self, routing: Routing) -> None:
        pass

    def deliver(self, message: IoMessage, receivers: Sequence[str]) -> None:
        with self._lock:
            for receiver in receivers:
                seen = receiver in self.undelivered
                self.undelivered[receiver] = self.undelivered.get(receiver, 0) + 1
                if not seen:
                    log.warning(
                        "bus: receiver %s is not on this node; its messages (from %s and others) are archived here "
                        "but not carried to it (no router yet: local only)", receiver, message.publisher,
                    )

    def status(self) -> str:
        with self._lock:
            total = sum(self.undelivered.values())
        return f"local only (no router): {total} messages for receivers on other nodes not carried"


class RouterDelivery(RouterSink):
    """Receivers on other nodes reached through the router link, at least once.

    A message for a receiver on another node is stored like any other: in the
    archive and in that receiver's waiting queue, on disk before the publisher
    hears "okay" (the bus stores it for ``here + away`` because :attr:`carries`).
    This forwarder reads each remote receiver's queue from where it last
    offered, hands the messages to :meth:`RouterLink.offer` in order, and moves
    the queue's consumed position only over messages the router *accepted*
    (``on_settled(True)``), oldest first.  So what the router has not accepted
    stays on disk: after a restart it is offered again (duplicates only for
    what was in flight); while the router is away or slow, ``offer`` declines
    and the queue holds it, bounded by the message storage limit like every
    queue (Store ``_limit_waiting``).  A message the router *rejects* is
    logged and passed over: sending it again would be rejected again.

    Incoming (:meth:`deliver_local`): what one read of the link brought for a
    receiver, stored in its queue with one commit (one fsync) before the link
    accepts any of it; the id and timestamp the publishing node gave each
    message are kept.  It is not archived again here: the
    archive of a message is on its publisher's node, as upstream.
    """

    carries = True
    WINDOW = 256   # messages per remote receiver offered and not yet accepted

    def __init__(self, store: Store) -> None:
        self.store = store
        self.link: Optional[RouterLink] = None   # set by the composition root (the link needs its sink)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._away: Set[str] = set()
        self._dirty: Set[str] = set()
        self._next: Dict[str, int] = {}                        # receiver -> queue position to offer next
        self._in_flight: Dict[str, Deque[List[Any]]] = {}      # receiver -> [end, settled], oldest first
        self._accepted_to: Dict[str, int] = {}                 # receiver -> queue position to consume to
        self.rejected = 0
        self.carried = 0

    # -- the bus's side ------------------------------------------------------------------------

    def set_routing(self, routing: Routing) -> None:
        """Who is on another node, and which receivers of this node the link listens for."""
        away = {r for receivers in routing.routes.values() for r in receivers if r not in routing.local}
        local = {r for receivers in routing.routes.values() for r in receivers if r in routing.local}
        with self._wake:
            self._away = away
            self._dirty |= away
            self._wake.notify()
        if self.link is not None:
            self.link.set_local_receivers(local | routing.consumers)

    def deliver(self, message: IoMessage, receivers: Sequence[str]) -> None:
        """Stored for ``receivers`` (waiting queues): offer it to the router from there."""
        with self._wake:
            self._dirty.update(receivers)
            self._wake.notify()

    def status(self) -> str:
        # No link yet: the daemon builds it when a router address is known (daemon.py RouterSwitch).
        link_status = self.link.status if self.link is not None else NO_ROUTER
        with self._lock:
            in_flight = sum(len(d) for d in self._in_flight.values())
        waiting = 0
        for receiver in list(self._away):
            queue = self.store.existing_queue(receiver)
            if queue is not None:
                waiting += queue.waiting_bytes()
        return (f"{link_status}; {in_flight} message(s) sent and not yet accepted, "
                f"{waiting} bytes waiting for receivers on other nodes")

    # -- the link's side ---------------------------------------------------------------------

    def deliver_local(self, receiver: str, iomessage_jsons: List[str]) -> List[Optional[str]]:
        """Store a batch from the link with one commit (one fsync); malformed ones are
        answered with why (the link rejects them), the others are stored, in order."""
        answers: List[Optional[str]] = []
        messages: List[IoMessage] = []
        binaries: List[bytes] = []
        for text in iomessage_jsons:
            try:
                obj = json.loads(text)
                if not isinstance(obj, dict):
                    raise ValueError("an ioMessage is a JSON object")
                message = from_json(obj)
                binary = encode(message)   # one the binary form cannot hold is malformed too, not "not now"
            except (ValueError, MessageError) as exc:   # never storable: the link rejects it
                answers.append(f"not an ioMessage: {exc}")
                continue
            messages.append(message)
            binaries.append(binary)
            answers.append(None)
        self.store.store_many(messages, [receiver], archive=False, encoded=binaries)   # ArchiveError: not now, retried
        return answers

    def router_ready(self) -> None:
        with self._wake:
            self._dirty |= self._away
            self._wake.notify()

    # -- the forwarding thread ---------------------------------------------------------------

    def run(self, stop: threading.Event, tick_every: float = 1.0) -> None:
        """Offer what waits for remote receivers; every ``tick_every`` s everything is looked at
        again (a router that came back without a ``router_ready``)."""
        while not stop.is_set():
            with self._wake:
                if not self._dirty:
                    self._wake.wait(tick_every)
                dirty, self._dirty = (self._dirty, set()) if self._dirty else (set(self._away), set())
                dirty &= self._away
            self._consume_accepted()
            for receiver in dirty:
                try:
                    self._pump(receiver)
                except Exception:
                    log.exception("router: offering the messages for %s failed", receiver)
        self._consume_accepted()

    def _consume_accepted(self) -> None:
        """Move each queue's consumed position over what the router accepted: here, once per
        wake-up, rather than a position write per accepted message in the link's I/O thread."""
        with self._lock:
            accepted, self._accepted_to = self._accepted_to, {}
        for receiver, position in accepted.items():
            queue = self.store.existing_queue(receiver)
            if queue is not None:
                try:
                    queue.consume_to(position)
                except OSError as exc:   # the position file lags: duplicates after a restart, no loss
                    log.warning("router: cannot record what the router accepted for %s: %s", receiver, exc)

    def _pump(self, receiver: str) -> None:
        link, queue = self.link, self.store.existing_queue(receiver)
        if link is None or queue is None:
            return
        with self._lock:
            flight = self._in_flight.setdefault(receiver, collections.deque())
            room = self.WINDOW - len(flight)
            # The storage limit may have dropped the oldest messages meanwhile.
            position = max(self._next.get(receiver, 0), queue.consumed)
        if room <= 0:
            return
        for entry in queue.read(position, room):
            text = json.dumps(to_json(decode(entry.data)), separators=(",", ":"))
            slot: List[Any] = [entry.end, False]
            with self._lock:
                flight.append(slot)
            if not link.offer(receiver, text, self._settled(receiver, slot)):
                with self._lock:
                    flight.remove(slot)
                return   # kept on disk; router_ready or the next tick offers it again
            with self._lock:
                self._next[receiver] = entry.end

    def _settled(self, receiver: str, slot: List[Any]) -> Callable[[bool], None]:
        def on_settled(accepted: bool) -> None:
            if not accepted:
                self.rejected += 1
                log.warning("router: a message for %s was rejected by the router; not sent again", receiver)
            with self._wake:
                slot[1] = True
                self.carried += 1
                flight = self._in_flight.get(receiver)
                while flight and flight[0][1]:
                    self._accepted_to[receiver] = flight.popleft()[0]
                self._dirty.add(receiver)   # the forwarding thread consumes, and offers more
                self._wake.notify()
        return on_settled
