"""The message bus of one node: publish, route, store, deliver (docs/iomessage.md#ids, #routing).

Upstream handed every message to an AMQP router, even between two
microservices on the same node, and kept what waited in the router's memory.
Here a message for a receiver on this node never leaves the daemon: it is
stamped (id, timestamp), stored (archive + the receiver's waiting queue, on
disk before the publisher hears "okay"), and then pushed to the receiver's
message socket or left for ``/v2/messages/next``.  Receivers on other nodes
go to the :class:`~iofogd.bus.remote.RemoteDelivery` hook; the daemon's
(:class:`~iofogd.bus.remote.RouterDelivery`) carries them from their own
waiting queues through the router link, at least once.

As upstream: a publisher without a route gets its "okay" and the message is
dropped (not archived); every publish counts as processed.
"""
from __future__ import annotations

import logging
import threading
import time

from iofogd.bus.message import IoMessage, decode, encode, stamped
from iofogd.bus.remote import LocalOnly
from iofogd.bus.routing import Routing, routing_from_microservices
from iofogd.bus.sockets import MessageSockets
from iofogd.bus.store import Store

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

    from iofogd.bus.logs import MicroserviceLogs
    from iofogd.bus.remote import RemoteDelivery
    from iofogd.errors import ArchiveError

log = logging.getLogger(__name__)

NEXT_MAX_MESSAGES = 1000        # per /v2/messages/next call; the rest waits for the next call
NEXT_MAX_BYTES = 4 << 20


def new_message_id() -> str:
    """A random UUID4 as 32 lowercase hex digits, as upstream (docs/iomessage.md#ids)."""
    import uuid   # at the first message: uuid imports platform (0.25 MiB an idle node need not carry)

    return uuid.uuid4().hex


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class MessageBus:
    def __init__(
        self,
        store: Store,
        sockets: MessageSockets,
        remote: Optional[RemoteDelivery] = None,
        count: Callable[[int], None] = lambda n: None,
        clock_ms: Callable[[], int] = now_ms,
        new_id: Callable[[], str] = new_message_id,
    ) -> None:
        self.store = store
        self.sockets = sockets
        self.remote: RemoteDelivery = remote if remote is not None else LocalOnly()
        self._count = count
        self._clock_ms = clock_ms
        self._new_id = new_id
        self._routing = Routing()
        self._lock = threading.Lock()
        self.processed = 0
        self._per_publisher: Dict[str, int] = {}
        self._speed_mark: Tuple[float, int] = (time.monotonic(), 0)
        self.logs: Optional[MicroserviceLogs] = None   # POST /v2/log writes here (set by the daemon)
        sockets.publisher = self
        store.on_committed(sockets.notify)

    # -- routes ------------------------------------------------------------------------------

    @property
    def routing(self) -> Routing:
        with self._lock:
            return self._routing

    def set_microservices(self, items: Iterable[Mapping[str, Any]]) -> None:
        """The Controller's microservice list (docs/controller-api.md#microservices): new routes apply to the next publish."""
        routing = routing_from_microservices(items)
        with self._lock:
            old, self._routing = self._routing, routing
        self.remote.set_routing(routing)   # the router link follows every routing change
        if old.routes != routing.routes:
            log.info("bus: routes now %s", {p: list(r) for p, r in routing.routes.items()} or "none")

    # -- publishing -----------------------------------------------------------------------------

    def _prepare(self, message: IoMessage) -> Tuple[IoMessage, Optional[List[str]], List[str]]:
        published = stamped(message, self._new_id(), self._clock_ms())
        with self._lock:
            self.processed += 1
            self._per_publisher[published.publisher] = self._per_publisher.get(published.publisher, 0) + 1
            routing = self._routing
        self._count(1)
        if not routing.receivers(published.publisher):
            return published, None, []
        here, away = routing.split(published.publisher)
        return published, here, away

    def publish(self, message: IoMessage) -> IoMessage:
        """Stamp, store and route one message; returns it as published. Raises ArchiveError."""
        published, here, away = self._prepare(message)
        if here is None:
            encode(published)   # refused all the same if the binary form cannot hold it
            return published    # no route: dropped, as upstream
        self.store.store(published, self._targets(here, away))
        if away:
            self.remote.deliver(published, away)
        return published

    def publish_async(
        self, message: IoMessage, done: Callable[[IoMessage, Optional[ArchiveError]], None]
    ) -> None:
        """:meth:`publish` without waiting: ``done(published, error)`` once stored (socket publishers)."""
        published, here, away = self._prepare(message)
        if here is None:
            encode(published)
            done(published, None)
            return

        def stored(error: Optional[ArchiveError]) -> None:
            if error is None and away:
                self.remote.deliver(published, away)
            done(published, error)

        self.store.submit(published, self._targets(here, away), stored)

    def _targets(self, here: List[str], away: List[str]) -> List[str]:
        """The waiting queues a message goes to: a remote delivery that carries messages
        takes them from the remote receivers' queues (on disk until the router accepts)."""
        return here + away if away and self.remote.carries else here

    # -- receiving --------------------------------------------------------------------------------

    def next_messages(self, receiver: str) -> List[IoMessage]:
        """Take what waits for the receiver (docs/local-api.md#messages-next); nothing while its socket is open."""
        if self.sockets.is_open(receiver):
            return []
        queue = self.store.existing_queue(receiver)
        if queue is None:
            return []
        with self.sockets.receiver_lock(receiver):
            if self.sockets.is_open(receiver):
                return []
            entries = queue.read(queue.consumed, NEXT_MAX_MESSAGES, NEXT_MAX_BYTES)
            if not entries:
                return []
            queue.consume_to(entries[-1].end)
        return [decode(e.data) for e in entries]

    def query(
        self, receiver: str, publishers: Sequence[str], start: int, end: int
    ) -> Tuple[List[IoMessage], int]:
        """Archived messages of the publishers in [start, end] that ``receiver`` may read (docs/local-api.md#messages-query).

        Returns the messages and the ``timeframeend`` upstream reports: the
        timestamp of the last message of the last publisher with messages,
        else the requested end.
        """
        routing = self.routing
        out: List[IoMessage] = []
        last_end = end
        for publisher in publishers:
            if not routing.may_read(receiver, publisher):
                continue
            found = self.store.archive.query(publisher, start, end)
            if found:   # upstream indexed an empty list here and dropped the connection
                out.extend(found)
                last_end = found[-1].timestamp
        return out, last_end

    def status(self) -> str:
        return self.remote.status()

    def message_counts(self) -> Tuple[List[Dict[str, Any]], float]:
        """For the Controller's status (docs/controller-api.md#status): ``[{"id","messagecount"}]`` per publisher, and
        messages/s since the previous call."""
        now = time.monotonic()
        with self._lock:
            counts = [{"id": p, "messagecount": n} for p, n in self._per_publisher.items()]
            then, before = self._speed_mark
            self._speed_mark = (now, self.processed)
            speed = (self.processed - before) / (now - then) if now > then else 0.0
        return counts, speed
