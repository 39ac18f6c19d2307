"""The AMQP 1.0 client connection state machine, sans I/O.

Theory of operation
-------------------
A :class:`Connection` is fed the bytes read from the socket with
:meth:`Connection.receive_data` and the current time (``now``, monotonic
seconds; nothing here reads a clock); :meth:`Connection.next_event` returns
the next :class:`Event` (``None``: more bytes are needed).  Everything the
protocol writes (our frames, the replies it owes the peer, heartbeats) goes to
an outgoing buffer that the I/O layer drains with
:meth:`Connection.data_to_send`; the application's calls (:meth:`begin`,
:meth:`attach_sender`, :meth:`send`, :meth:`flow`, :meth:`settle`, ...) write
there too.  The model is h11 and :mod:`iofogd.ws.protocol`.

The client side only: we open the connection (SASL first when a mechanism is
given: ANONYMOUS or PLAIN), pipeline our open, and then speak part 2:

- Sessions: one per :meth:`begin`, with windows counted in transfer frames.
  Our incoming window is refilled by a session flow when half of it is used;
  the peer's incoming window bounds what :meth:`send` puts on the wire.
- Links: a sender transfers only while the peer gave it credit (deliveries
  wait in the link's queue, so the application sees ``link.queued`` grow and
  slows down); a receiver gets exactly the credit :meth:`flow` grants.
- Transfers larger than the peer's max-frame-size are split (``more``);
  incoming multi-frame deliveries are reassembled up to ``max_message_size``.
- Settlement: senders send unsettled deliveries (at least once); the peer's
  disposition produces :class:`DeliveryUpdated`.  A received delivery stays
  unsettled until :meth:`settle`.
- Heartbeats: :meth:`tick` sends an empty frame when half of the peer's
  idle-time-out passed without a frame from us, and fails the connection when
  nothing came from the peer for our own ``idle_timeout``.

Every protocol violation by the peer closes the connection with the matching
AMQP error condition: the close frame is queued, ``failure`` is set and a
:class:`ConnectionClosed` event reports it.
"""
from __future__ import annotations

import struct

from iofogd.bus.amqp import frames as f
from iofogd.bus.amqp.frames import (
    AMQP_HEADER,
    FRAME_AMQP,
    FRAME_SASL,
    HEARTBEAT,
    MIN_MAX_FRAME_SIZE,
    SASL_HEADER,
    Accepted,
    Composite,
    Error,
    encode_frame,
    parse_frame,
    parse_protocol_header,
)
from iofogd.bus.amqp.types import symbol_list
from iofogd.errors import (
    AmqpAuthError,
    AmqpConnectionLost,
    AmqpDecodeError,
    AmqpError,
    AmqpProtocolError,
    AmqpRemoteError,
)

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Tuple, Union

SENDER = False  # the role field of attach and disposition (part 2, 2.8.1)
RECEIVER = True
SETTLE_MIXED = 2
RCV_SETTLE_FIRST = 0
_SEQ = 1 << 32  # serial numbers wrap (RFC 1982)

# States of the connection.
START, SASL, OPEN_SENT, OPENED, CLOSE_SENT, CLOSED = "start", "sasl", "open-sent", "opened", "close-sent", "closed"


# -- SASL mechanisms (part 5) -------------------------------------------------------------


class SaslAnonymous:
    mechanism = "ANONYMOUS"

    def initial_response(self) -> Optional[bytes]:
        return b""


class SaslPlain:
    """RFC 4616: authzid NUL authcid NUL password."""

    mechanism = "PLAIN"

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self.password = password

    def initial_response(self) -> Optional[bytes]:
        return b"\0" + self.username.encode("utf-8") + b"\0" + self.password.encode("utf-8")


if TYPE_CHECKING:
    Mechanism = Union[SaslAnonymous, SaslPlain]


# -- the objects the application holds --------------------------------------------------


class Delivery:
    """One message on a link: ``payload`` is the encoded message (all its sections)."""

    __slots__ = ("link", "id", "tag", "payload", "settled", "state", "remote_settled", "sent", "context")

    def __init__(self, link: Link, tag: bytes, payload: bytes, settled: bool, context: Any = None) -> None:
        self.link = link
        self.id: Optional[int] = None
        self.tag = tag
        self.payload = payload
        self.settled = settled  # by us
        self.state: Any = None  # the peer's outcome (Accepted, Rejected ...)
        self.remote_settled = False
        self.sent = 0  # payload bytes on the wire so far
        self.context = context

    def __repr__(self) -> str:
        return f"Delivery(id={self.id}, tag={self.tag!r}, {len(self.payload)} bytes, state={self.state!r})"


class Link:
    __slots__ = ("session", "name", "handle", "role", "address", "attached", "remote_attached", "detached",
                 "remote_handle", "delivery_count", "credit", "queue", "unsettled", "incoming", "remote_source",
                 "remote_target", "error", "drain", "max_message_size", "overdrawn")

    def __init__(self, session: Session, name: str, handle: int, role: bool, address: str) -> None:
        self.session = session
        self.name = name
        self.handle = handle
        self.role = role
        self.address = address
        self.attached = False  # we sent attach
        self.remote_attached = False
        self.detached = False  # we sent detach
        self.remote_handle: Optional[int] = None
        self.delivery_count = 0
        self.credit = 0
        self.queue: List[Delivery] = []  # sender: waiting for credit or window
        self.unsettled: Dict[int, Delivery] = {}  # by delivery id
        self.incoming: Optional[Delivery] = None  # receiver: a multi-frame delivery
        self.remote_source: Any = None
        self.remote_target: Any = None
        self.error: Optional[AmqpError] = None
        self.drain = False
        self.max_message_size = 0
        self.overdrawn = 0  # transfers the peer sent beyond our credit

    @property
    def is_sender(self) -> bool:
        return self.role is SENDER

    @property
    def queued(self) -> int:
        return len(self.queue)

    def __repr__(self) -> str:
        kind = "sender" if self.is_sender else "receiver"
        return f"Link({kind} {self.name!r} -> {self.address!r}, handle={self.handle}, credit={self.credit})"


class Session:
    __slots__ = ("channel", "remote_channel", "begun", "remote_begun", "ended", "next_outgoing_id",
                 "incoming_window", "window_size", "next_incoming_id", "remote_incoming_window",
                 "remote_outgoing_window", "links", "remote_links", "unsettled_out", "error", "next_handle")

    def __init__(self, channel: int, window_size: int) -> None:
        self.channel = channel
        self.remote_channel: Optional[int] = None
        self.begun = False
        self.remote_begun = False
        self.ended = False
        self.next_outgoing_id = 0
        self.window_size = window_size
        self.incoming_window = window_size
        self.next_incoming_id = 0
        self.remote_incoming_window = 0
        self.remote_outgoing_window = 0
        self.links: Dict[int, Link] = {}  # by our handle
        self.remote_links: Dict[int, Link] = {}  # by the peer's handle
        self.unsettled_out: Dict[int, Delivery] = {}  # our deliveries by delivery id
        self.error: Optional[AmqpError] = None
        self.next_handle = 0


# -- events ---------------------------------------------------------------------------------


class Event:
    __slots__: Tuple[str, ...] = ()

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"{type(self).__name__}({shown})"


class ConnectionOpened(Event):
    __slots__ = ("open",)

    def __init__(self, open: f.Open) -> None:
        self.open = open


class SessionBegun(Event):
    __slots__ = ("session",)

    def __init__(self, session: Session) -> None:
        self.session = session


class LinkAttached(Event):
    """The peer attached its end; a refused link (no terminus) is followed by LinkDetached."""

    __slots__ = ("link",)

    def __init__(self, link: Link) -> None:
        self.link = link


class CreditChanged(Event):
    """A sender link's credit changed (the peer sent a flow)."""

    __slots__ = ("link",)

    def __init__(self, link: Link) -> None:
        self.link = link


class MessageReceived(Event):
    """A whole delivery arrived on a receiver link; settle it with :meth:`Connection.settle`."""

    __slots__ = ("delivery",)

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery


class DeliveryUpdated(Event):
    """The peer's disposition for one of our deliveries (``delivery.state``, ``remote_settled``)."""

    __slots__ = ("delivery",)

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery


class LinkDetached(Event):
    __slots__ = ("link", "error")

    def __init__(self, link: Link, error: Optional[AmqpError]) -> None:
        self.link = link
        self.error = error


class SessionEnded(Event):
    __slots__ = ("session", "error")

    def __init__(self, session: Session, error: Optional[AmqpError]) -> None:
        self.session = session
        self.error = error


class ConnectionClosed(Event):
    """The connection is over: ``error`` is None for a clean close we both agreed on."""

    __slots__ = ("error",)

    def __init__(self, error: Optional[AmqpError]) -> None:
        self.error = error


def _remote_error(error: Any, scope: str) -> Optional[AmqpRemoteError]:
    if error is None:
        return None
    if isinstance(error, Error):
        return AmqpRemoteError(str(error.condition), error.description or "", scope)
    return AmqpRemoteError(f.INTERNAL_ERROR, f"malformed error {error!r:.60}", scope)


def _error_of(exc: AmqpError) -> Error:
    condition = getattr(exc, "condition", f.INTERNAL_ERROR)
    return Error(condition, str(getattr(exc, "description", None) or getattr(exc, "message", None) or exc))


# Room for a frame header and a transfer performative with every field we set (handles and
# ids up to 2**32, a 32-byte tag): computed once, not per message sent.
_TRANSFER_OVERHEAD = 8 + len(f.Transfer(0xFFFFFFFF, 0xFFFFFFFF, b"\0" * 32, 0, False, True).encode())


class Connection:
    """One client connection (see the module docstring)."""

    def __init__(
        self,
        *,
        container_id: str,
        hostname: Optional[str] = None,
        sasl: Optional[Mechanism] = None,
        max_frame_size: int = 1 << 16,
        idle_timeout: float = 60.0,
        session_window: int = 2048,
        max_message_size: int = 1 << 24,
        now: float = 0.0,
    ) -> None:
        if max_frame_size < MIN_MAX_FRAME_SIZE:
            raise ValueError(f"max_frame_size must be at least {MIN_MAX_FRAME_SIZE}")
        self.container_id = container_id
        self.hostname = hostname
        self.sasl = sasl
        self.max_frame_size = max_frame_size
        self.idle_timeout = idle_timeout
        self.session_window = session_window
        self.max_message_size = max_message_size
        self.state = START
        self.remote_open: Optional[f.Open] = None
        self.remote_max_frame_size = MIN_MAX_FRAME_SIZE
        self.remote_idle_timeout = 0.0
        self.remote_channel_max = 0xFFFF
        self.failure: Optional[AmqpError] = None
        self.sessions: Dict[int, Session] = {}  # by our channel
        self.remote_sessions: Dict[int, Session] = {}  # by the peer's channel
        self._buf = bytearray()
        self._out: List[bytes] = []
        self._events: List[Event] = []
        self._header_due: Optional[bytes] = None  # the protocol header we expect next
        self._last_received = now
        self._last_sent = now
        self._close_reported = False
        self._tag = 0
        self._remote_closed = False
        self._sent_since_tick = False
        self._held: List[bytes] = []

    # -- starting ------------------------------------------------------------------

    def initiate(self, now: float = 0.0) -> None:
        """Queue the protocol header(s) and, without SASL, our open (pipelined)."""
        if self.state is not START:
            raise AmqpProtocolError(f.NOT_ALLOWED, "the connection was initiated already")
        self._last_received = self._last_sent = now
        if self.sasl is not None:
            self.state = SASL
            self._header_due = SASL_HEADER
            self._out.append(SASL_HEADER)
        else:
            self._send_open()

    def _send_open(self) -> None:
        self.state = OPEN_SENT
        self._header_due = AMQP_HEADER
        idle = int(self.idle_timeout * 1000) if self.idle_timeout else None
        self._out.append(AMQP_HEADER)
        self._write(0, f.Open(self.container_id, self.hostname, self.max_frame_size, 0xFFFF, idle))
        self._out += self._held
        self._held.clear()

    # -- input --------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> None:
        if self.state is CLOSED:
            return
        if data:
            self._last_received = now
            self._buf += data

    def receive_eof(self) -> None:
        """The peer closed the TCP connection."""
        if self.state is not CLOSED:
            clean = self._remote_closed and self.state is CLOSE_SENT
            self.state = CLOSED
            if not clean and self.failure is None:
                self.failure = AmqpConnectionLost("the peer closed the TCP connection")
            self._report_closed()
        self._buf.clear()

    def next_event(self) -> Optional[Event]:
        while not self._events and self.state is not CLOSED and self._buf:
            try:
                if not self._parse_one():
                    break
            except AmqpError as exc:
                self._fail(exc)
            except (TypeError, ValueError, AttributeError) as exc:
                # A field of the wrong AMQP type (a string where a handle goes ...).
                self._fail(AmqpDecodeError(f"malformed performative: {exc}"))
        return self._events.pop(0) if self._events else None

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        if out:
            self._sent_since_tick = True
        return out

    def tick(self, now: float) -> Optional[float]:
        """Timers: send a heartbeat or fail an idle peer; returns when to call again.

        The I/O layer calls it after every write and at the deadline it returns.
        """
        if self._sent_since_tick:
            self._last_sent = now
            self._sent_since_tick = False
        if self.state in (START, CLOSED):
            return None
        deadlines = []
        if self.idle_timeout and self.state is not SASL:
            if now - self._last_received >= self.idle_timeout:
                self._fail(AmqpProtocolError(
                    f.RESOURCE_LIMIT_EXCEEDED, f"local-idle-timeout expired: nothing received for {self.idle_timeout:g} s"))
                return None
            deadlines.append(self._last_received + self.idle_timeout)
        if self.remote_idle_timeout:
            half = self.remote_idle_timeout / 2
            if now - self._last_sent >= half and not self._out:
                self._out.append(HEARTBEAT)
            deadlines.append(max(self._last_sent, now if self._out else self._last_sent) + half)
        return min(deadlines) if deadlines else None

    # -- parsing --------------------------------------------------------------------

    def _parse_one(self) -> bool:
        if self._header_due is not None:
            header = parse_protocol_header(self._buf)
            if header is None:
                return False
            del self._buf[:8]
            if header != self._header_due:
                raise AmqpProtocolError(f.NOT_IMPLEMENTED, f"peer answered protocol header {header!r}, expected {self._header_due!r}")
            self._header_due = None
            return True
        limit = self.max_frame_size if self.state is not SASL else max(MIN_MAX_FRAME_SIZE, 1 << 16)
        parsed = parse_frame(self._buf, limit, sasl=self.state is SASL)
        if parsed is None:
            return False
        frame, consumed = parsed
        del self._buf[:consumed]
        if frame.body is None:
            return True  # a heartbeat: _last_received already moved
        if frame.type == FRAME_SASL:
            self._on_sasl(frame.body)
        else:
            self._on_frame(frame)
        return True

    def _on_sasl(self, body: Composite) -> None:
        assert self.sasl is not None
        if isinstance(body, f.SaslMechanisms):
            offered = symbol_list(body.sasl_server_mechanisms)
            if self.sasl.mechanism not in offered:
                raise AmqpAuthError(0, f"the peer offers SASL {offered}, not {self.sasl.mechanism}")
            self._write(0, f.SaslInit(self.sasl.mechanism, self.sasl.initial_response(), self.hostname), FRAME_SASL)
        elif isinstance(body, f.SaslChallenge):
            raise AmqpAuthError(0, f"unexpected SASL challenge for {self.sasl.mechanism}")
        elif isinstance(body, f.SaslOutcome):
            if body.code != 0:
                detail = {1: "authentication failed", 2: "system error", 3: "permanent system error",
                          4: "transient system error"}.get(int(body.code), f"code {body.code}")
                raise AmqpAuthError(int(body.code), f"SASL {self.sasl.mechanism} refused: {detail}")
            self._send_open()
        else:
            raise AmqpProtocolError(f.NOT_ALLOWED, f"{type(body).__name__} sent to a SASL client")

    def _on_frame(self, frame: f.Frame) -> None:
        body = frame.body
        if self.state is OPEN_SENT:
            if not isinstance(body, f.Open):
                raise AmqpProtocolError(f.NOT_ALLOWED, f"{type(body).__name__} before open")
            self._on_open(body)
            return
        if isinstance(body, f.Close):
            self._on_close(body)
            return
        if isinstance(body, f.Open):
            raise AmqpProtocolError(f.NOT_ALLOWED, "a second open")
        if isinstance(body, f.Begin):
            self._on_begin(frame.channel, body)
            return
        session = self.remote_sessions.get(frame.channel)
        if session is None:
            raise AmqpProtocolError(f.NOT_FOUND, f"{type(body).__name__} on channel {frame.channel} with no session")
        if isinstance(body, f.Transfer):
            self._on_transfer(session, body, frame.payload)
        elif isinstance(body, f.Flow):
            self._on_flow(session, body)
        elif isinstance(body, f.Disposition):
            self._on_disposition(session, body)
        elif isinstance(body, f.Attach):
            self._on_attach(session, body)
        elif isinstance(body, f.Detach):
            self._on_detach(session, body)
        elif isinstance(body, f.End):
            self._on_end(session, body)

    def _on_open(self, body: f.Open) -> None:
        self.remote_open = body
        self.remote_max_frame_size = int(body.max_frame_size) if body.max_frame_size is not None else 0xFFFFFFFF
        if self.remote_max_frame_size < MIN_MAX_FRAME_SIZE:
            raise AmqpProtocolError(f.INVALID_FIELD, f"peer max-frame-size {self.remote_max_frame_size} < 512")
        self.remote_idle_timeout = (body.idle_time_out or 0) / 1000.0
        self.remote_channel_max = int(body.channel_max) if body.channel_max is not None else 0xFFFF
        self.state = OPENED
        self._events.append(ConnectionOpened(body))

    def _on_close(self, body: f.Close) -> None:
        self._remote_closed = True
        error = _remote_error(body.error, "connection")
        if self.state is not CLOSE_SENT:
            self._write(0, f.Close())
        if error is not None and self.failure is None:
            self.failure = error
        self.state = CLOSED
        self._buf.clear()
        self._report_closed()

    def _report_closed(self) -> None:
        if not self._close_reported:
            self._close_reported = True
            self._events.append(ConnectionClosed(self.failure))

    def _on_begin(self, channel: int, body: f.Begin) -> None:
        if body.remote_channel is None or body.remote_channel not in self.sessions:
            raise AmqpProtocolError(f.NOT_IMPLEMENTED, "the peer began a session we did not ask for")
        session = self.sessions[body.remote_channel]
        if session.remote_begun:
            raise AmqpProtocolError(f.NOT_ALLOWED, f"second begin for channel {channel}")
        session.remote_begun = True
        session.remote_channel = channel
        session.next_incoming_id = int(body.next_outgoing_id)
        session.remote_incoming_window = int(body.incoming_window)
        session.remote_outgoing_window = int(body.outgoing_window)
        self.remote_sessions[channel] = session
        self._events.append(SessionBegun(session))

    def _on_end(self, session: Session, body: f.End) -> None:
        error = _remote_error(body.error, "session")
        session.error = error
        if not session.ended:
            session.ended = True
            self._write(session.channel, f.End())
        self._drop_session(session)
        self._events.append(SessionEnded(session, error))

    def _drop_session(self, session: Session) -> None:
        self.sessions.pop(session.channel, None)
        if session.remote_channel is not None:
            self.remote_sessions.pop(session.remote_channel, None)

    def _on_attach(self, session: Session, body: f.Attach) -> None:
        link = next((l for l in session.links.values() if l.name == body.name and not l.remote_attached), None)
        if link is None:
            raise AmqpProtocolError(f.NOT_IMPLEMENTED, f"the peer attached link {body.name!r} we did not ask for")
        if bool(body.role) == link.role:
            raise AmqpProtocolError(f.INVALID_FIELD, f"link {body.name!r} attached with our own role")
        if int(body.handle) in session.remote_links:
            raise AmqpProtocolError(f.HANDLE_IN_USE, f"handle {body.handle} is in use")
        link.remote_attached = True
        link.remote_handle = int(body.handle)
        link.remote_source = body.source
        link.remote_target = body.target
        link.max_message_size = int(body.max_message_size or 0)
        session.remote_links[link.remote_handle] = link
        if not link.is_sender and body.initial_delivery_count is not None:
            link.delivery_count = int(body.initial_delivery_count)
        self._events.append(LinkAttached(link))

    def _on_detach(self, session: Session, body: f.Detach) -> None:
        link = session.remote_links.pop(int(body.handle), None)
        if link is None:
            raise AmqpProtocolError(f.UNATTACHED_HANDLE, f"detach of unattached handle {body.handle}")
        error = _remote_error(body.error, "link")
        link.error = error
        link.remote_attached = False
        if not link.detached:
            link.detached = True
            self._write(session.channel, f.Detach(link.handle, True))
        session.links.pop(link.handle, None)
        self._events.append(LinkDetached(link, error))

    def _on_flow(self, session: Session, body: f.Flow) -> None:
        next_in = session.next_outgoing_id if body.next_incoming_id is None else int(body.next_incoming_id)
        session.remote_incoming_window = (next_in + int(body.incoming_window) - session.next_outgoing_id) % _SEQ
        session.remote_outgoing_window = int(body.outgoing_window)
        if body.handle is not None:
            link = session.remote_links.get(int(body.handle))
            if link is None:
                raise AmqpProtocolError(f.UNATTACHED_HANDLE, f"flow for unattached handle {body.handle}")
            if link.is_sender:
                remote_count = link.delivery_count if body.delivery_count is None else int(body.delivery_count)
                # Serial-number arithmetic (RFC 1982): the peer may lower its credit below
                # what is in flight already, which leaves us none, not 2**32 - n.
                credit = (remote_count + int(body.link_credit or 0) - link.delivery_count) % _SEQ
                link.credit = credit if credit < _SEQ // 2 else 0
                link.drain = bool(body.drain)
                self._pump(link)
                if link.drain and link.credit:
                    link.delivery_count = (link.delivery_count + link.credit) % _SEQ
                    link.credit = 0
                    self._write_link_flow(link)
                self._events.append(CreditChanged(link))
            elif body.delivery_count is not None:
                # Our receiver: a peer that drained (or had nothing) advanced its delivery
                # count, which used up that much of the credit we gave.
                advanced = (int(body.delivery_count) - link.delivery_count) % _SEQ
                if 0 < advanced < _SEQ // 2:
                    link.delivery_count = int(body.delivery_count)
                    link.credit = max(0, link.credit - advanced)
            if body.echo:
                self._write_link_flow(link)
        elif body.echo:
            self._write_session_flow(session)
        # A bigger window may let queued deliveries of any sender go.
        for other in list(session.links.values()):
            if other.is_sender and other.queue:
                self._pump(other)

    def _on_transfer(self, session: Session, body: f.Transfer, payload: bytes) -> None:
        link = session.remote_links.get(int(body.handle))
        if link is None:
            raise AmqpProtocolError(f.UNATTACHED_HANDLE, f"transfer on unattached handle {body.handle}")
        if link.is_sender:
            raise AmqpProtocolError(f.INVALID_FIELD, f"transfer to our sender link {link.name!r}")
        if session.incoming_window <= 0:
            raise AmqpProtocolError(f.WINDOW_VIOLATION, "transfer beyond our incoming window")
        session.next_incoming_id = (session.next_incoming_id + 1) % _SEQ
        session.incoming_window -= 1
        session.remote_outgoing_window = max(0, session.remote_outgoing_window - 1)
        delivery = link.incoming
        if delivery is None:
            if body.delivery_id is None or body.delivery_tag is None:
                raise AmqpProtocolError(f.INVALID_FIELD, "first transfer of a delivery without id or tag")
            if link.credit <= 0:
                # A transfer beyond our credit.  Part 2 makes it an error, but RabbitMQ 3.x
                # overdraws after a flow that tops credit up while its transfers are in
                # flight; like Proton we take it (memory stays bounded by what is in flight)
                # and count it.
                link.overdrawn += 1
            delivery = Delivery(link, bytes(body.delivery_tag), b"", False)
            delivery.id = int(body.delivery_id)
            delivery.remote_settled = bool(body.settled)
            link.credit = max(0, link.credit - 1)
            link.delivery_count = (link.delivery_count + 1) % _SEQ
            chunks: List[bytes] = [payload]
            delivery.context = chunks
            link.incoming = delivery
        else:
            if body.delivery_id is not None and int(body.delivery_id) != delivery.id:
                raise AmqpProtocolError(f.INVALID_FIELD, "a continuation transfer names another delivery")
            delivery.context.append(payload)
            if body.settled:
                delivery.remote_settled = True
        delivery.sent += len(payload)
        if delivery.sent > self.max_message_size:
            raise AmqpProtocolError(f.RESOURCE_LIMIT_EXCEEDED,
                                    f"message over {self.max_message_size} bytes on link {link.name!r}")
        if session.incoming_window <= session.window_size // 2:
            session.incoming_window = session.window_size
            self._write_session_flow(session)
        if body.aborted:
            link.incoming = None
            return
        if body.more:
            return
        link.incoming = None
        delivery.payload = b"".join(delivery.context)
        delivery.context = None
        if not delivery.remote_settled:
            link.unsettled[delivery.id] = delivery  # type: ignore[index]
        self._events.append(MessageReceived(delivery))

    def _on_disposition(self, session: Session, body: f.Disposition) -> None:
        first = int(body.first)
        last = first if body.last is None else int(body.last)
        if (last - first) % _SEQ > 1 << 20:
            raise AmqpProtocolError(f.INVALID_FIELD, f"disposition range {first}..{last}")
        state = body.state
        n: int = first
        while True:
            if body.role == RECEIVER:  # about our outgoing deliveries
                delivery = session.unsettled_out.get(n)
                if delivery is not None:
                    delivery.state = state
                    if body.settled:
                        delivery.remote_settled = True
                        session.unsettled_out.pop(n, None)
                        delivery.link.unsettled.pop(n, None)
                    elif state is not None and not isinstance(state, f.Received):
                        # A terminal outcome unsettled by the peer (rcv-settle-mode second
                        # or a lazy peer): we settle, which completes the delivery.
                        self.settle(delivery, state)
                    self._events.append(DeliveryUpdated(delivery))
            else:  # the peer settled something it sent us
                for link in session.links.values():
                    d = link.unsettled.pop(n, None) if body.settled else None
                    if d is not None:
                        d.remote_settled = True
                        break
            if n == last:
                break
            n = (n + 1) % _SEQ

    # -- the application's calls ------------------------------------------------------------

    def _check_usable(self) -> None:
        if self.state in (CLOSED, CLOSE_SENT):
            raise self.failure or AmqpConnectionLost("the connection is closed")

    def begin(self) -> Session:
        self._check_usable()
        channel = next(c for c in range(len(self.sessions) + 1) if c not in self.sessions)
        session = Session(channel, self.session_window)
        self.sessions[channel] = session
        session.begun = True
        self._write(channel, f.Begin(None, session.next_outgoing_id, session.incoming_window, 0x7FFFFFFF))
        return session

    def _attach(self, session: Session, name: str, role: bool, address: str, durable: int = 0,
                **extra: Any) -> Link:
        self._check_usable()
        if session.ended:
            raise AmqpConnectionLost("the session has ended")
        handle = session.next_handle
        session.next_handle += 1
        link = Link(session, name, handle, role, address)
        session.links[handle] = link
        link.attached = True
        # The node's terminus (the peer's end) asks for ``durable`` (0 none, 1 configuration,
        # 2 unsettled-state, AMQP 1.0 section 3.5.5): RabbitMQ then declares the queue
        # durable, so what it accepted survives its restart.
        if role is SENDER:
            source, target = f.Source(name), f.Target(address, durable or None)
        else:
            source, target = f.Source(address, durable or None), f.Target(name)
        self._write(session.channel, f.Attach(name, handle, role, SETTLE_MIXED, RCV_SETTLE_FIRST, source, target,
                                              **extra))
        return link

    def attach_sender(self, session: Session, name: str, address: str, durable: int = 0) -> Link:
        return self._attach(session, name, SENDER, address, durable, initial_delivery_count=0)

    def attach_receiver(self, session: Session, name: str, address: str, credit: int = 0,
                        durable: int = 0) -> Link:
        link = self._attach(session, name, RECEIVER, address, durable)
        if credit:
            self.flow(link, credit)
        return link

    def flow(self, link: Link, credit: int) -> None:
        """Grant a receiver link ``credit`` (the total outstanding, not an increment)."""
        self._check_usable()
        if link.is_sender:
            raise ValueError("credit is granted on receiver links")
        link.credit = credit
        self._write_link_flow(link)

    def _write_session_flow(self, session: Session) -> None:
        self._write(session.channel, f.Flow(session.next_incoming_id, session.incoming_window,
                                            session.next_outgoing_id, 0x7FFFFFFF))

    def _write_link_flow(self, link: Link) -> None:
        s = link.session
        self._write(s.channel, f.Flow(s.next_incoming_id if s.remote_begun else None, s.incoming_window,
                                      s.next_outgoing_id, 0x7FFFFFFF, link.handle, link.delivery_count,
                                      link.credit, len(link.queue) if link.is_sender else None,
                                      link.drain if link.is_sender else None))

    def next_tag(self) -> bytes:
        self._tag += 1
        return struct.pack(">Q", self._tag)

    def send(self, link: Link, payload: bytes, *, tag: Optional[bytes] = None, settled: bool = False,
             context: Any = None) -> Delivery:
        """Queue one encoded message on a sender link; it goes as soon as credit allows."""
        self._check_usable()
        if not link.is_sender:
            raise ValueError("send() needs a sender link")
        if link.detached:
            raise link.error or AmqpConnectionLost(f"link {link.name!r} is detached")
        delivery = Delivery(link, tag if tag is not None else self.next_tag(), payload, settled, context)
        link.queue.append(delivery)
        self._pump(link)
        return delivery

    def _pump(self, link: Link) -> None:
        """Put queued deliveries on the wire while credit and the peer's window allow."""
        session = link.session
        if not link.remote_attached or link.detached:
            return
        room = self.remote_max_frame_size - _TRANSFER_OVERHEAD
        while link.queue and session.remote_incoming_window > 0:
            delivery = link.queue[0]
            if delivery.sent == 0:
                if link.credit <= 0:
                    break
                delivery.id = session.next_outgoing_id
                link.credit -= 1
                link.delivery_count = (link.delivery_count + 1) % _SEQ
                if not delivery.settled:
                    session.unsettled_out[delivery.id] = delivery
                    link.unsettled[delivery.id] = delivery
            chunk = delivery.payload[delivery.sent:delivery.sent + room]
            first = delivery.sent == 0
            delivery.sent += len(chunk)
            more = delivery.sent < len(delivery.payload)
            if first:
                assert delivery.id is not None
                self._out.append(f.encode_transfer_frame(session.channel, link.handle, delivery.id, delivery.tag,
                                                         delivery.settled, more, chunk))
            else:
                self._out.append(encode_frame(session.channel, f.Transfer(link.handle, more=more), chunk))
            session.next_outgoing_id = (session.next_outgoing_id + 1) % _SEQ
            session.remote_incoming_window -= 1
            if not more:
                link.queue.pop(0)

    def settle(self, delivery: Delivery, state: Any = None) -> None:
        """Settle a delivery with an outcome (default: accepted)."""
        self.settle_many([delivery], state)

    def settle_many(self, deliveries: List[Delivery], state: Any = None) -> None:
        """Settle deliveries with one outcome (default: accepted): one disposition frame
        per run of consecutive delivery ids (``first``..``last``), not one per delivery."""
        runs: List[List[Any]] = []   # [session, role, first, last]
        for delivery in deliveries:
            if delivery.settled:
                continue
            delivery.settled = True
            if delivery.id is None:
                continue
            link = delivery.link
            link.unsettled.pop(delivery.id, None)
            session = link.session
            if link.is_sender:
                session.unsettled_out.pop(delivery.id, None)
            elif delivery.remote_settled:
                continue   # the peer settled it already: nothing to say
            run = runs[-1] if runs else None
            if run is not None and run[0] is session and run[1] is link.role \
                    and (run[3] + 1) % _SEQ == delivery.id:
                run[3] = delivery.id
            else:
                runs.append([session, link.role, delivery.id, delivery.id])
        if self.state in (CLOSED, CLOSE_SENT):
            return
        outcome = Accepted() if state is None else state
        for session, role, first, last in runs:
            self._write(session.channel, f.Disposition(role, first, None if last == first else last, True, outcome))

    def detach(self, link: Link, error: Optional[Error] = None) -> None:
        if link.detached or self.state in (CLOSED, CLOSE_SENT):
            return
        link.detached = True
        self._write(link.session.channel, f.Detach(link.handle, True, error))

    def end(self, session: Session, error: Optional[Error] = None) -> None:
        if session.ended or self.state in (CLOSED, CLOSE_SENT):
            return
        session.ended = True
        self._write(session.channel, f.End(error))

    def close(self, error: Optional[Error] = None) -> None:
        if self.state in (CLOSED, CLOSE_SENT, START):
            self.state = CLOSED if self.state is START else self.state
            return
        if self.state is SASL:
            self.state = CLOSED
            self._report_closed()
            return
        self.state = CLOSE_SENT
        self._write(0, f.Close(error))

    # -- output and failure -------------------------------------------------------------

    def _write(self, channel: int, body: Composite, frame_type: int = FRAME_AMQP) -> None:
        frame = encode_frame(channel, body, b"", frame_type)
        if frame_type == FRAME_AMQP and self.state is SASL:
            self._held.append(frame)  # begin/attach pipelined behind SASL: they follow our open
        else:
            self._out.append(frame)

    def _fail(self, exc: AmqpError) -> None:
        """A protocol violation: close with the matching condition and stop reading."""
        if self.failure is None:
            self.failure = exc
        if self.state in (OPEN_SENT, OPENED) and not isinstance(exc, AmqpAuthError):
            self._write(0, f.Close(_error_of(exc)))
        self.state = CLOSED
        self._buf.clear()
        self._report_closed()


__all__ = [
    "AmqpDecodeError", "Connection", "ConnectionClosed", "ConnectionOpened", "CreditChanged", "Delivery",
    "DeliveryUpdated", "Link", "LinkAttached", "LinkDetached", "MessageReceived", "SaslAnonymous", "SaslPlain",
    "Session", "SessionBegun", "SessionEnded",
]
