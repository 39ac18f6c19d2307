"""The link to the ioFog router network: ioMessages to and from other nodes over AMQP 1.0.

Theory of operation
-------------------
The Controller tells each node where its router is (``routerHost``,
``routerPort`` in ``GET agent/config``; the edge router microservice or the
default router).  :class:`RouterLink` keeps one AMQP connection there
(:mod:`iofogd.bus.amqp.client`), as the Java agent does (docs/iomessage.md#routing):

- a receiver link on address ``<receiver uuid>`` for every receiver on this
  node (routes' receivers and ``isConsumer`` microservices);
- a sender link on address ``<receiver uuid>`` for every receiver on another
  node, attached when the first message for it goes out.

Wire form: what a Java agent's qpid-jms client sends for its
``session.createTextMessage(json)`` on a queue producer: message annotations
``x-opt-jms-msg-type`` = 5 (TextMessage, a byte) and ``x-opt-jms-dest`` = 0
(a queue), properties ``message-id`` (an ``ID:`` string), ``to`` (the
receiver uuid) and ``creation-time``, and the ioMessage's JSON form as an
amqp-value string.  Received messages are taken in that form and also as data
sections (UTF-8 JSON), which other AMQP clients send.  One difference on
purpose: our messages carry a header with ``durable`` true (upstream sends
non-persistent), and the daemon's links ask for a durable terminus, so a
storing broker keeps what it accepted across its own restart too (see
``DURABLE_TERMINUS`` for the price on RabbitMQ).

At least once, where upstream loses messages:

- Outgoing: :meth:`RouterLink.offer` hands over a message with a callback;
  it is kept (in memory, bounded by ``max_pending`` messages and
  ``max_pending_bytes``; the bus keeps it in its archive too) until the router
  *accepts* it, then ``on_settled(True)`` runs.  A
  router that rejects it: ``on_settled(False)`` and a log line.  Released or
  modified, or the connection lost before the outcome: sent again, after a
  reconnect if need be.  Duplicates are possible only for what was in flight.
- Incoming: a delivery is accepted only after :meth:`RouterSink.deliver_local`
  returned, which the bus does once the message is durably stored for that
  receiver.  Deliveries come in batches: all that one read of the socket
  brought for a receiver go to the sink in one call, which stores them with
  one commit (one fsync), and only then are they accepted, together (one
  disposition frame for consecutive ids).  One fsync per message bounded a
  node to a few hundred messages/s; per batch, the broker's next batch piles
  up in the socket while we sync, so batches grow with load.  A sink that
  cannot store them now (a full disk) leaves them unsettled: the router keeps
  them, that receiver's credit is not topped up, and we try again after a
  pause (what arrives meanwhile waits behind them, in order).
- Flow: each receiver link has ``prefetch`` credit (``PREFETCH``; fewer for big
  messages: ``PREFETCH_BYTES``), topped up as deliveries are stored; a slow
  store slows the routers' senders instead of growing our memory.  The client
  reads at most 1 MiB before handing over what it completed, so a batch is
  bounded in bytes whatever the credit.  Outgoing, the router's credit bounds
  what is on the wire; beyond ``max_pending`` unsettled messages :meth:`offer`
  says no and the bus keeps the message in its archive until
  :meth:`RouterSink.router_ready`.

Router down, refusing or unreachable: local delivery is not concerned (the
bus never waits for the router); we retry with exponential back-off (1 s to
60 s) and :attr:`RouterLink.status` says what is going on, for the status
report.  A changed router address (``routerChanged``) closes the connection
and connects to the new one; messages not yet accepted go there.

Wiring (iofogd/daemon.py ``_build_bus`` and ``_set_router``, iofogd/agent.py
``ControllerPort.router_changed``, iofogd/bus/remote.py ``RouterDelivery``):

- :meth:`RouterLink.set_router` after every ``GET agent/config`` (``routerHost``,
  ``routerPort``; ``None`` while unprovisioned), with ``reconnect=True`` when
  ``routerChanged`` is flagged.
- :meth:`RouterLink.set_local_receivers` whenever routes change: every receiver
  of a route that runs on this node, and every ``isConsumer`` microservice.
- Publishing: for each receiver not on this node, :meth:`RouterLink.offer`; the
  bus counts the message delivered to it only on ``on_settled(True)``, keeps
  what :meth:`offer` declined (and, across restarts, what was never settled)
  on disk, and offers it again on :meth:`RouterSink.router_ready` or start-up.
- :meth:`RouterSink.deliver_local`: append a batch to the receiver's waiting
  queue and fsync once before returning (it runs in the AMQP I/O thread:
  blocking there is the flow control); keep the id and timestamp the
  publishing node gave each message.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid

from iofogd.bus.amqp import frames as f
from iofogd.bus.amqp import message as m
from iofogd.bus.amqp.client import Client, Receiver, Sender
from iofogd.bus.amqp.types import Byte, Symbol, Timestamp
from iofogd.bus.routersink import NO_ROUTER, RouterSink as RouterSink, router_address as router_address
from iofogd.errors import AmqpDecodeError, AmqpError, AmqpRemoteError

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Callable, Dict, Iterable, List, Optional, Set, Tuple

    from iofogd.bus.amqp.protocol import Delivery

    OnSettled = Callable[[bool], None]

log = logging.getLogger(__name__)

# qpid-jms message annotations (AmqpMessageSupport / AmqpDestinationHelper).
JMS_MSG_TYPE = Symbol("x-opt-jms-msg-type")
JMS_DEST = Symbol("x-opt-jms-dest")
JMS_TEXT_MESSAGE = Byte(5)
JMS_QUEUE = Byte(0)

# With ``durable_terminus``, links ask for a durable node (terminus durability
# "unsettled-state"): a broker such as RabbitMQ then declares the receiver's queue
# durable, so what it accepted survives its restart; Qpid Dispatch routers store nothing
# and ignore it.  Off by default: a Java agent's qpid-jms attaches with none, and
# RabbitMQ refuses peers that disagree on a queue's durability.
DURABLE_TERMINUS = 2

# Credit of each receiver link: the most a router hands over in one go, so the most one
# commit (one fsync) stores; also what a receiver may hold unsettled (twice that with
# RabbitMQ's overdraw: see Receiver in amqp/client.py).  PREFETCH_BYTES shrinks it for big
# messages (to 4 for 1 MiB ones), so what waits on a failing store stays bounded in bytes.
PREFETCH = 256
PREFETCH_BYTES = 4 << 20

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0


def encode_text_message(receiver: str, text: str, message_id: str, now_ms: int, durable: bool = True) -> bytes:
    """A qpid-jms TextMessage for queue ``receiver``, as a Java agent sends it."""
    # The header and the annotations are the same for every message: encoded once.
    return _TEXT_HEAD[durable] + m.encode_head(m.Message(None, properties=m.Properties(
        message_id=message_id, to=receiver, creation_time=Timestamp(now_ms)))) + m.encode_body(m.Message(text))


_TEXT_HEAD = {durable: m.encode_head(m.Message(
    None, header=m.Header(durable=True) if durable else None,
    message_annotations={JMS_MSG_TYPE: JMS_TEXT_MESSAGE, JMS_DEST: JMS_QUEUE})) for durable in (False, True)}


def text_of(payload: bytes) -> str:
    """The ioMessage JSON carried by an AMQP message: a TextMessage's amqp-value string,
    or UTF-8 data sections.  Raises ValueError for anything else."""
    try:
        message = m.decode_body(payload)
    except AmqpDecodeError as exc:
        raise ValueError(f"not an AMQP message: {exc}") from exc
    body = message.body
    if message.body_kind == m.BODY_VALUE and isinstance(body, str):
        return body
    if message.body_kind == m.BODY_VALUE and isinstance(body, bytes):
        raw = body
    elif message.body_kind == m.BODY_DATA:
        raw = b"".join(body)
    else:
        raise ValueError(f"no text body: a {message.body_kind} section of {type(body).__name__}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"body is not UTF-8: {exc}") from exc


class _Outgoing:
    __slots__ = ("seq", "receiver", "payload", "on_settled", "attempt", "sent")

    def __init__(self, seq: int, receiver: str, payload: bytes, on_settled: OnSettled) -> None:
        self.seq = seq
        self.receiver = receiver
        self.payload = payload
        self.on_settled = on_settled
        self.attempt = 0  # which send the awaited outcome belongs to
        self.sent = False  # on the current connection, outcome awaited


class RouterLink:
    """One node's connection to the router network (see the module docstring)."""

    def __init__(
        self,
        sink: RouterSink,
        *,
        node_id: str = "",
        prefetch: int = PREFETCH,
        prefetch_bytes: int = PREFETCH_BYTES,
        max_pending: int = 10_000,
        max_pending_bytes: int = 32 << 20,
        idle_timeout: float = 30.0,
        durable: bool = True,
        durable_terminus: bool = False,
        backoff_first: float = BACKOFF_FIRST,
        backoff_max: float = BACKOFF_MAX,
        tls: bool = False,
        credentials: Optional[tuple[str, str]] = None,
    ) -> None:
        self.sink = sink
        self.node_id = node_id or uuid.uuid4().hex
        self.prefetch = prefetch
        self.prefetch_bytes = prefetch_bytes
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self._pending_bytes = 0
        self.idle_timeout = idle_timeout
        self.durable = durable
        # Ask a storing broker for durable queues (DURABLE_TERMINUS). Every peer of a queue
        # must agree: RabbitMQ refuses an attach whose durability differs from the queue's.
        self.durable_terminus = durable_terminus
        self.backoff_first = backoff_first
        self.backoff_max = backoff_max
        self.tls = tls
        self.credentials = credentials
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._host: Optional[str] = None
        self._port: Optional[int] = None
        self._router_changed = False
        self._local: Set[str] = set()
        self._client: Optional[Client] = None
        self._senders: Dict[str, Sender] = {}
        self._receivers: Dict[str, Receiver] = {}
        self._paused: Dict[str, float] = {}  # receiver -> when to retry its held deliveries
        self._held: Dict[str, List[Tuple[Receiver, Delivery]]] = {}  # behind a failed store, in order
        self._blocked: Dict[Tuple[str, str], float] = {}  # ("in"/"out", receiver) refused until
        self._deferred: Dict[str, List[_Outgoing]] = {}  # for a refused sender, in order
        self._block_delay: Dict[Tuple[str, str], float] = {}  # the last back-off of each
        self._pending: Dict[int, _Outgoing] = {}  # insertion order is send order
        self._unsent: List[_Outgoing] = []
        self._seq = 0
        self._busy_said = False
        self._status = NO_ROUTER
        self._stopping = False
        self._thread: Optional[threading.Thread] = None
        self.connects = 0  # successful connections, for tests and the log
        self._attaches = 0

    # -- what the agent calls -----------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="router-link", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
            client = self._client
        if client is not None:
            client.close(timeout=2.0)
        if self._thread is not None:
            self._thread.join(timeout)

    def set_router(self, host: Optional[str], port: Optional[int], *, reconnect: bool = False) -> None:
        """The router address from ``GET agent/config``; ``None``: no router, local delivery
        only.  At start and after each config sync; on ``routerChanged`` with ``reconnect``
        (the Java agent reconnects then even when the address is the same)."""
        with self._wake:
            if (host, port) == (self._host, self._port) and not self._router_changed and not reconnect:
                return
            self._host, self._port = (host, port) if host and port else (None, None)
            self._router_changed = True
            self._wake.notify_all()
            client = self._client
        if client is not None:
            client.close(timeout=2.0)  # the run loop reconnects to the new address

    def reconnect(self) -> None:
        """``routerChanged``: connect again to the current address (as the Java agent does)."""
        with self._lock:
            host, port = self._host, self._port
        self.set_router(host, port, reconnect=True)

    def set_local_receivers(self, receivers: Iterable[str]) -> None:
        """The receivers on this node: one receiver link each (routes change at run time)."""
        with self._wake:
            self._local = set(receivers)
            self._wake.notify_all()

    def offer(self, receiver: str, iomessage_json: str, on_settled: OnSettled) -> bool:
        """Send an ioMessage (its JSON form) to ``receiver`` on another node.

        ``True``: taken; ``on_settled(True)`` runs once the router accepted it
        (``False`` if it rejected it), from another thread.  ``False``: too many
        messages wait for the router (it is down or slow); keep this one and
        offer it again after :meth:`RouterSink.router_ready`.
        """
        with self._wake:
            full = len(self._pending) >= self.max_pending or (
                self._pending and self._pending_bytes + len(iomessage_json) > self.max_pending_bytes)
            if self._host is None or full:
                # No router (local delivery only) or too much waiting: the bus keeps it.
                self._busy_said = True
                return False
            self._seq += 1
            payload = encode_text_message(receiver, iomessage_json, f"ID:{self.node_id}:{self._seq}",
                                          int(time.time() * 1000), self.durable)
            entry = _Outgoing(self._seq, receiver, payload, on_settled)
            self._pending[entry.seq] = entry
            self._pending_bytes += len(payload)
            self._unsent.append(entry)
            self._wake.notify_all()
        return True

    @property
    def status(self) -> str:
        """One line for the status report: connected, retrying (and why), or no router."""
        with self._lock:
            refused = sorted({r for (_, r) in self._blocked})
        if refused and self.connected:
            return f"{self._status}; refused for {len(refused)} receiver(s): {', '.join(refused[:3])}"
        return self._status

    @property
    def pending(self) -> int:
        """Messages offered and not yet accepted by the router."""
        return len(self._pending)

    @property
    def connected(self) -> bool:
        client = self._client
        return client is not None and not client.closed.is_set()

    # -- the link thread --------------------------------------------------------------------

    def _run(self) -> None:
        backoff = self.backoff_first
        while True:
            with self._wake:
                while not self._stopping and self._host is None:
                    self._status = NO_ROUTER
                    self._wake.wait()
                if self._stopping:
                    return
                host, port = self._host, self._port
                self._router_changed = False
            assert host is not None and port is not None
            where = f"{'amqps' if self.tls else 'amqp'}://{host}:{port}"
            self._status = f"connecting to the router at {where}"
            connects = self.connects
            reason = "connection lost"
            try:
                self._session(host, port)
            except AmqpError as exc:
                reason = str(exc)
            except OSError as exc:
                reason = f"I/O error: {exc}"
            if self.connects > connects:
                backoff = self.backoff_first  # we were connected: start the back-off anew
            with self._wake:
                if self._stopping:
                    return
                if self._router_changed:
                    continue  # a new address: no back-off
                self._status = f"router at {where} unavailable ({reason}); retrying in {backoff:g} s"
                log.warning("router link: %s", self._status)
                # The whole back-off: offers and receiver changes notify this condition
                # too, and must not turn the back-off into a reconnect per offer.
                retry_at = time.monotonic() + backoff
                while not self._stopping and not self._router_changed:
                    left = retry_at - time.monotonic()
                    if left <= 0:
                        break
                    self._wake.wait(left)
            backoff = min(self.backoff_max, backoff * 2)

    def _url(self, host: str, port: int) -> str:
        scheme = "amqps" if self.tls else "amqp"
        userinfo = ""
        if self.credentials is not None:
            from urllib.parse import quote
            userinfo = f"{quote(self.credentials[0], safe='')}:{quote(self.credentials[1], safe='')}@"
        host = f"[{host}]" if ":" in host else host
        return f"{scheme}://{userinfo}{host}:{port}"

    def _session(self, host: str, port: int) -> None:
        """One connection's life: connect, keep links in step, send, until it ends."""
        client = Client(self._url(host, port), container_id=f"iofogd-{self.node_id}",
                        idle_timeout=self.idle_timeout, on_closed=self._on_closed)
        client.connect()
        with self._wake:
            self._client = client
            self._senders = {}
            self._receivers = {}
            # Unsettled deliveries of the last connection come again from the router.
            self._held.clear()
            self._paused.clear()
            # Refused links stay blocked until their time (a refusal may have cost the
            # last connection); what waited for them is in line again just below.
            self._deferred.clear()
            # Everything not accepted goes again, in order (at least once).
            self._unsent = list(self._pending.values())
            for entry in self._unsent:
                entry.sent = False
        self.connects += 1
        self._status = f"connected to the router at {client.endpoint!r}"
        log.info("router link: %s", self._status)
        try:
            while True:
                self._maybe_ready()
                with self._wake:
                    if self._stopping or self._router_changed or client.closed.is_set():
                        break
                    batch, self._unsent = self._unsent, []
                    local = set(self._local)
                    now = time.monotonic()
                    due = any(until <= now for until in self._paused.values()) or any(
                        until <= now for until in self._blocked.values())
                    wanted = local - {r for (d, r), until in self._blocked.items() if d == "in" and until > now}
                    if not batch and not due and wanted == set(self._receivers):
                        self._wake.wait(self._next_timer())
                        continue
                self._unblock_due()
                self._reconcile_receivers(client, local)
                self._retry_held()
                self._send_batch(client, batch)
        finally:
            with self._wake:
                self._client = None
            client.close(timeout=2.0)
            if client.error is not None:
                raise client.error

    def _next_timer(self) -> Optional[float]:
        """Seconds until a paused receiver or a refused link is due again (None: none)."""
        times = list(self._paused.values()) + list(self._blocked.values())
        if not times:
            return None
        return max(0.05, min(times) - time.monotonic())

    def _reconcile_receivers(self, client: Client, local: Set[str]) -> None:
        for receiver in list(self._receivers):
            if receiver not in local:
                with self._wake:
                    gone = self._receivers.pop(receiver)
                    self._held.pop(receiver, None)  # unsettled: the router keeps them
                    self._paused.pop(receiver, None)
                client.detach(gone.link)
        now = time.monotonic()
        for receiver in sorted(local - set(self._receivers)):
            if self._blocked.get(("in", receiver), 0.0) > now:
                continue
            # A fresh link name for each attach: RabbitMQ does not feed a link that
            # re-uses the name of one just detached (its old consumer is being cancelled).
            self._attaches += 1
            try:
                link = client.receiver(receiver, on_messages=self._on_messages, credit=self.prefetch,
                                       max_bytes=self.prefetch_bytes,
                                       name=f"iofogd-{self.node_id}-{receiver}-{self._attaches}",
                                       durable=DURABLE_TERMINUS if self.durable_terminus else 0)
            except AmqpRemoteError as exc:
                self._block("in", receiver, exc)
                if client.error is not None:
                    raise
                continue
            self._block_delay.pop(("in", receiver), None)
            with self._wake:
                self._receivers[receiver] = link
            log.info("router link: listening for %s", receiver)

    def _send_batch(self, client: Client, batch: List[_Outgoing]) -> None:
        now = time.monotonic()
        for entry in batch:
            if entry.seq not in self._pending or entry.sent:
                continue
            receiver = entry.receiver
            if self._blocked.get(("out", receiver), 0.0) > now:
                self._deferred.setdefault(receiver, []).append(entry)
                continue
            try:
                sender = self._senders.get(receiver)
                if sender is None:
                    self._senders[receiver] = sender = client.sender(
                        receiver, name=f"iofogd-{self.node_id}-to-{receiver}-{self.connects}",
                        durable=DURABLE_TERMINUS if self.durable_terminus else 0)
                    self._block_delay.pop(("out", receiver), None)
                entry.attempt += 1
                client.send(sender, entry.payload, self._on_outcome, context=(entry.seq, entry.attempt))
                entry.sent = True
            except AmqpRemoteError as exc:
                # The router refuses this address: this receiver's messages wait (with
                # back-off), the others go on.  RabbitMQ refuses by ending the session,
                # which costs the connection: we reconnect, and the block holds.
                self._block("out", receiver, exc)
                self._senders.pop(receiver, None)
                self._deferred.setdefault(receiver, []).append(entry)
                if client.error is not None:
                    raise
                now = time.monotonic()

    def _block(self, direction: str, receiver: str, exc: AmqpError) -> None:
        key = (direction, receiver)
        delay = min(self.backoff_max, self._block_delay.get(key, self.backoff_first * 2.5) * 2)
        self._block_delay[key] = delay
        log.warning("router link: the router refused the %s link of %s (%s); retrying in %g s",
                    "sender" if direction == "out" else "receiver", receiver, exc, delay)
        self._blocked[key] = time.monotonic() + delay

    def _unblock_due(self) -> None:
        """Put the messages of receivers whose block is over back in line, first (their order)."""
        now = time.monotonic()
        for key, until in list(self._blocked.items()):
            if until > now:
                continue
            del self._blocked[key]
            direction, receiver = key
            if direction == "out":
                waiting = self._deferred.pop(receiver, [])
                with self._wake:
                    self._unsent[:0] = waiting
        # A sender link the router detached: what it had in flight goes again.
        for receiver, sender in list(self._senders.items()):
            if sender.link.detached or (sender.link.error is not None):
                del self._senders[receiver]
                with self._wake:
                    again = [e for e in self._pending.values() if e.receiver == receiver and e.sent]
                    for e in again:
                        e.sent = False
                    self._unsent[:0] = again

    def _maybe_ready(self) -> None:
        with self._wake:
            say = self._busy_said and self._host is not None and len(self._pending) < self.max_pending // 2 \
                and self._pending_bytes < self.max_pending_bytes // 2
            if say:
                self._busy_said = False
        if say:
            self.sink.router_ready()

    # -- callbacks from the client's I/O thread ------------------------------------------------

    def _on_outcome(self, delivery: Delivery) -> None:
        seq, attempt = delivery.context
        state = delivery.state
        with self._wake:
            entry = self._pending.get(seq)
            if entry is None or entry.attempt != attempt:
                return  # the outcome of an earlier attempt (on a connection since lost)
            if isinstance(state, (f.Accepted, f.Rejected)):
                del self._pending[seq]
                self._pending_bytes -= len(entry.payload)
            else:  # released, modified or no outcome: it goes again
                entry.sent = False
                self._unsent.append(entry)
                self._wake.notify_all()
                return
        if isinstance(state, f.Rejected):
            log.warning("router link: the router rejected a message for %s: %s", entry.receiver, state.error)
        try:
            entry.on_settled(isinstance(state, f.Accepted))
        except Exception:
            log.exception("router link: on_settled callback failed")
        if self._busy_said:
            with self._wake:
                self._wake.notify_all()

    def _on_messages(self, link: Receiver, deliveries: List[Delivery]) -> None:
        """What one read brought for a receiver: stored as one commit, then accepted together."""
        receiver = link.address
        with self._wake:
            held = self._held.get(receiver)
            if held is not None:  # the store failed earlier: keep the order, wait behind it
                held.extend((link, d) for d in deliveries)
                return
        if not self._store(receiver, link, deliveries):
            with self._wake:
                self._held[receiver] = [(link, d) for d in deliveries]
                self._paused[receiver] = time.monotonic() + self.backoff_first * 5
                self._wake.notify_all()

    def _store(self, receiver: str, link: Receiver, deliveries: List[Delivery]) -> bool:
        """Hand deliveries to the sink (one commit) and settle them; False: the sink cannot
        take them now (none is settled)."""
        texts: List[str] = []
        taken: List[Delivery] = []
        refused: List[Tuple[Delivery, str]] = []
        for delivery in deliveries:
            try:
                texts.append(text_of(delivery.payload))
                taken.append(delivery)
            except ValueError as exc:
                refused.append((delivery, str(exc)))
        try:
            answers = self.sink.deliver_local(receiver, texts) if texts else []
        except Exception as exc:
            # Not now (a full disk ...): the deliveries stay unsettled, so the router keeps
            # them and our credit is not topped up; we try again after a pause.
            log.warning("router link: could not store %d message(s) for %s (%s); retrying later",
                        len(texts), receiver, exc)
            return False
        accepted = [d for d, why in zip(taken, answers) if why is None]
        refused += [(d, why) for d, why in zip(taken, answers) if why is not None]
        link.client.settle_many(accepted)
        for delivery, why in refused:
            log.warning("router link: rejected a message for %s: %s", receiver, why)
            link.client.settle(delivery, f.Rejected(f.Error("amqp:decode-error", why[:200])))
        return True

    def _retry_held(self) -> None:
        """Store what waits behind a failed store, in order, for receivers whose pause is over.
        The held list stays in place meanwhile, so the I/O thread keeps adding behind it."""
        now = time.monotonic()
        with self._wake:
            due = [r for r, until in self._paused.items() if until <= now]
        for receiver in due:
            while True:
                with self._wake:
                    held = self._held.get(receiver)
                    if not held:
                        self._held.pop(receiver, None)
                        self._paused.pop(receiver, None)
                        break
                    link = held[0][0]   # one link's run (a new link or connection drops them)
                    batch = []
                    for owner, delivery in held:
                        if owner is not link:
                            break
                        batch.append(delivery)
                if not self._store(receiver, link, batch):
                    with self._wake:
                        self._paused[receiver] = time.monotonic() + self.backoff_first * 5
                    break
                with self._wake:
                    del held[:len(batch)]

    def _on_closed(self, error: Optional[AmqpError]) -> None:
        with self._wake:
            self._wake.notify_all()
