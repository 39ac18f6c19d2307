"""The message socket: push to receivers, publish with receipts (docs/websocket.md#message-socket).

Theory of operation
-------------------
A microservice opens ``/v2/message/socket/id/<id>``.  While a socket of that id
is open it is the receiver's consumer (``/v2/messages/next`` then returns
nothing, as upstream).  Several sockets may share an id (Node's SDK opens
two); the newest one gets the messages, and an ACK on any of them counts.

Push: the waiting queue (on disk) is read from the last sent position and each
message goes out as ``0x0D`` + 4-byte length + binary ioMessage, at most
``window`` unacknowledged at a time; memory holds only that window.  Every
message sent is tracked (upstream tracked only the latest and forgot the
rest), so delivery is in order and at least once.

ACKs (a binary message starting with 0x0B) carry no id.  The SDKs ACK every
0x0D and every 0x0E receipt, in the order they received them, so the hub
keeps the order in which it sent both kinds, per id, and each ACK settles the
oldest frame sent.  When the oldest messages are settled the receiver's
consumed position moves on (on disk) and more is sent.

Resends follow upstream's schedule (docs/websocket.md#control, #message-socket): ``first_retry_after`` s
after the first send, then every ``retry_every`` s, up to ``max_sends`` sends
in all; a message still unacknowledged ``retry_every`` s after its last send
closes the socket (1008).  What was not acknowledged stays waiting: the next
socket of that id or ``/v2/messages/next`` gets it.

Publish: a ``0x0D`` frame from the client is decoded, published through the
bus (stored on disk first), and answered with the receipt ``0x0E``, len(id),
8, id, 8-byte timestamp, the layout the SDKs parse.  A malformed publish
(bad length, bad version, no publisher) closes the socket with 1007 (its bytes
are not an ioMessage) or 1008 (no publisher); a full disk is logged and the
socket closed with 1011, as the message was not taken.
"""
from __future__ import annotations

import collections
import logging
import threading
import time

from iofogd.bus.message import decode
from iofogd.errors import ArchiveError, ConnectionClosed, EnvelopeError, MessageError
from iofogd.ws.envelope import decode_msg, encode_msg, encode_receipt, is_message_ack
from iofogd.ws.frames import CloseCode
from iofogd.ws.paths import MESSAGE_SOCKET_PREFIX, socket_id

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Callable, Deque, Dict, List, Optional, Protocol, Set, Tuple, Union

    from iofogd.bus.message import IoMessage
    from iofogd.bus.waiting import Entry, WaitingQueue

    class Session(Protocol):
        path: str

        def send_binary(self, data: bytes) -> None: ...
        def close(self, code: int = 1000, reason: str = "") -> None: ...

    class Publisher(Protocol):
        def publish_async(
            self, message: IoMessage, done: Callable[[IoMessage, Optional[ArchiveError]], None]
        ) -> None: ...

log = logging.getLogger(__name__)

_RECEIPT = "receipt"


def message_socket_id(path: str) -> Optional[str]:
    """The microservice id of a message-socket path (query cut off), or None (see ws.paths)."""
    return socket_id(MESSAGE_SOCKET_PREFIX, path)


class _InFlight:
    __slots__ = ("entry", "sends", "last_sent", "acked")

    def __init__(self, entry: Entry, now: float) -> None:
        self.entry = entry
        self.sends = 1
        self.last_sent = now
        self.acked = False


class _Receiver:
    """One id's sockets and what has been sent to them and not yet settled."""

    __slots__ = ("id", "lock", "sessions", "queue", "sent_to", "in_flight", "sent_order", "in_flight_bytes")

    def __init__(self, receiver_id: str) -> None:
        self.id = receiver_id
        self.lock = threading.RLock()
        self.sessions: List[Session] = []   # oldest first; the newest gets the messages
        self.queue: Optional[WaitingQueue] = None
        self.sent_to = 0    # logical queue position of the next message to send
        self.in_flight: Deque[_InFlight] = collections.deque()
        self.sent_order: Deque[Union[str, _InFlight]] = collections.deque()
        self.in_flight_bytes = 0

    def reset(self) -> None:
        """Forget what was sent: unacknowledged messages go again to the next consumer."""
        self.in_flight.clear()
        self.in_flight_bytes = 0
        self.sent_order.clear()
        self.sent_to = self.queue.consumed if self.queue is not None else 0


class MessageSockets:
    """Every message socket, by microservice id."""

    def __init__(
        self,
        queue_for: Callable[[str], Optional[WaitingQueue]],
        clock: Callable[[], float] = time.monotonic,
        first_retry_after: float = 20.0,
        retry_every: float = 10.0,
        max_sends: int = 10,
        window: int = 64,
        window_bytes: int = 1 << 20,
    ) -> None:
        self._queue_for = queue_for
        self._clock = clock
        self.first_retry_after = first_retry_after
        self.retry_every = retry_every
        self.max_sends = max_sends
        self.window = window              # unacknowledged messages per receiver, at most
        self.window_bytes = window_bytes  # ... and their bytes (at least one message is always sent)
        self.publisher: Optional[Publisher] = None
        self._lock = threading.Lock()
        self._receivers: Dict[str, _Receiver] = {}
        self._by_session: Dict[Session, _Receiver] = {}
        self._no_socket_lock = threading.RLock()
        self._dirty: Set[str] = set()
        # Stored socket publishes whose receipt is still to be sent (or whose error is
        # to be told): the delivery thread sends them, so that the commit thread never
        # waits on a socket.
        self._receipts: Deque[Tuple[_Receiver, Session, IoMessage, Optional[ArchiveError]]] = collections.deque()
        self._wake = threading.Condition(self._lock)

    # -- registration -----------------------------------------------------------------------

    def register(self, receiver_id: str, session: Session) -> None:
        with self._lock:   # then the receiver's lock: unregister cannot drop the entry meanwhile
            receiver = self._receivers.get(receiver_id)
            if receiver is None:
                receiver = self._receivers[receiver_id] = _Receiver(receiver_id)
            self._by_session[session] = receiver
            with receiver.lock:
                receiver.sessions.append(session)
                # A new newest socket: what the older one had not acknowledged goes to it.
                receiver.reset()
        log.debug("message socket opened for %s", receiver_id)
        self.pump(receiver_id)

    def unregister(self, session: Session) -> None:
        with self._lock:
            receiver = self._by_session.pop(session, None)
        if receiver is None:
            return
        with receiver.lock:
            was_newest = bool(receiver.sessions) and receiver.sessions[-1] is session
            if session in receiver.sessions:
                receiver.sessions.remove(session)
            if was_newest:
                receiver.reset()
            last = not receiver.sessions
        if last:
            # Forgotten with its last socket: clients choose the ids, and an entry
            # per id ever seen would grow without bound.
            with self._lock:
                if not receiver.sessions and self._receivers.get(receiver.id) is receiver:
                    del self._receivers[receiver.id]
        elif was_newest:
            self.pump(receiver.id)

    def is_open(self, receiver_id: str) -> bool:
        """Whether a socket is the consumer of ``receiver_id`` (then /next returns nothing)."""
        with self._lock:
            receiver = self._receivers.get(receiver_id)
        return receiver is not None and bool(receiver.sessions)

    def in_flight(self, receiver_id: str) -> List[int]:
        """The send counts of the receiver's unacknowledged messages, oldest first."""
        with self._lock:
            receiver = self._receivers.get(receiver_id)
        if receiver is None:
            return []
        with receiver.lock:
            return [f.sends for f in receiver.in_flight if not f.acked]

    def receiver_lock(self, receiver_id: str) -> threading.RLock:
        """Held by /v2/messages/next while it reads and consumes, so it never races a socket
        (an id without a socket shares one lock: nothing to race with but another /next)."""
        with self._lock:
            receiver = self._receivers.get(receiver_id)
            return self._no_socket_lock if receiver is None else receiver.lock

    # -- delivery -------------------------------------------------------------------------------

    def notify(self, receiver_ids: Set[str]) -> None:
        """New messages are waiting for these receivers (the Store's commit thread calls this)."""
        with self._wake:
            self._dirty |= receiver_ids
            self._wake.notify()

    def run(self, stop: threading.Event, tick_every: float = 1.0) -> None:
        """The delivery thread: pump receivers with new messages; resend on schedule."""
        next_tick = self._clock() + tick_every
        while not stop.is_set():
            with self._wake:
                if not self._dirty and not self._receipts:
                    self._wake.wait(max(0.0, min(tick_every, next_tick - self._clock())))
                dirty, self._dirty = self._dirty, set()
                receipts, self._receipts = self._receipts, collections.deque()
            for receiver, session, published, error in receipts:
                self._send_receipt(receiver, session, published, error)
            for receiver_id in dirty:
                self._pump_safely(receiver_id)
            if self._clock() >= next_tick:
                next_tick = self._clock() + tick_every
                try:
                    self.tick()
                except Exception:
                    log.exception("message socket tick failed")

    def _pump_safely(self, receiver_id: str) -> None:
        try:
            self.pump(receiver_id)
        except Exception:
            log.exception("message socket delivery to %s failed", receiver_id)

    def pump(self, receiver_id: str) -> None:
        """Send waiting messages to the receiver's newest socket, up to the window."""
        with self._lock:
            receiver = self._receivers.get(receiver_id)
        if receiver is None:
            return
        with receiver.lock:
            if not receiver.sessions:
                return
            if receiver.queue is None:
                receiver.queue = self._queue_for(receiver_id)
                if receiver.queue is None:
                    return
                receiver.sent_to = receiver.queue.consumed
            session = receiver.sessions[-1]
            room = self.window - len(receiver.in_flight)
            while room > 0:
                room_bytes = self.window_bytes - receiver.in_flight_bytes
                if room_bytes <= 0 and receiver.in_flight:
                    return
                entries = receiver.queue.read(receiver.sent_to, room, max(1, room_bytes))
                if not entries:
                    return
                now = self._clock()
                for entry in entries:
                    flight = _InFlight(entry, now)
                    # Recorded before sending, so that a fast ACK finds it.
                    receiver.in_flight.append(flight)
                    receiver.in_flight_bytes += len(entry.data)
                    receiver.sent_order.append(flight)
                    receiver.sent_to = entry.end
                    if not self._send(session, encode_msg(entry.data)):
                        return
                room -= len(entries)

    def _send(self, session: Session, data: bytes) -> bool:
        try:
            session.send_binary(data)
        except ConnectionClosed:
            return False   # its read loop ends and unregisters it
        return True

    def _ack(self, receiver: _Receiver) -> None:
        with receiver.lock:
            if not receiver.sent_order:
                log.debug("message socket %s: an ACK with nothing outstanding", receiver.id)
                return
            settled = receiver.sent_order.popleft()
            if settled == _RECEIPT or not isinstance(settled, _InFlight):
                return
            settled.acked = True
            position = None
            while receiver.in_flight and receiver.in_flight[0].acked:
                done = receiver.in_flight.popleft().entry
                receiver.in_flight_bytes -= len(done.data)
                position = done.end
            if position is not None and receiver.queue is not None:
                receiver.queue.consume_to(position)
        self.pump(receiver.id)

    # -- from the client ------------------------------------------------------------------------

    def on_message(self, session: Session, data: Union[str, bytes]) -> None:
        """The ``on_message`` of a message session."""
        with self._lock:
            receiver = self._by_session.get(session)
        if receiver is None:
            return
        if isinstance(data, str):
            log.info("message socket %s: text message ignored (ioFog uses binary messages)", receiver.id)
            return
        if is_message_ack(data):
            self._ack(receiver)
            return
        if data[:1] != b"\x0d":
            log.info("message socket %s: unknown opcode %s ignored", receiver.id, data[:1].hex() or "(empty)")
            return
        try:
            iomessage = decode(decode_msg(data))
        except (EnvelopeError, MessageError) as exc:
            log.info("message socket %s: malformed publish refused: %s", receiver.id, exc)
            session.close(CloseCode.INVALID_DATA, f"malformed message: {exc}"[:120])
            return
        if not iomessage.publisher.strip():
            log.info("message socket %s: publish without a publisher refused", receiver.id)
            session.close(CloseCode.POLICY_VIOLATION, "a message needs its publisher")
            return
        publisher = self.publisher
        if publisher is None:
            session.close(CloseCode.INTERNAL_ERROR, "the message bus is not running")
            return

        def done(published: IoMessage, error: Optional[ArchiveError]) -> None:
            with self._wake:
                self._receipts.append((receiver, session, published, error))
                self._wake.notify()

        try:
            publisher.publish_async(iomessage, done)
        except MessageError as exc:
            session.close(CloseCode.INVALID_DATA, f"malformed message: {exc}"[:120])
        except ArchiveError as exc:
            done(iomessage, exc)

    def _send_receipt(
        self, receiver: _Receiver, session: Session, published: IoMessage, error: Optional[ArchiveError]
    ) -> None:
        if error is not None:
            log.warning("message socket %s: message not stored: %s", receiver.id, error)
            session.close(CloseCode.INTERNAL_ERROR, f"message not stored: {error.message}"[:120])
            return
        with receiver.lock:
            # Recorded before sending: its ACK settles the receipt, not a message.
            receiver.sent_order.append(_RECEIPT)
            if not self._send(session, encode_receipt(published.id, published.timestamp)):
                receiver.sent_order.pop()

    # -- resends --------------------------------------------------------------------------------------

    def tick(self, now: Optional[float] = None) -> None:
        """Resend what is due; close the sockets whose messages used up their sends."""
        if now is None:
            now = self._clock()
        with self._lock:
            receivers = list(self._receivers.values())
        for receiver in receivers:
            give_up: Optional[Session] = None
            with receiver.lock:
                if not receiver.sessions:
                    continue
                session = receiver.sessions[-1]
                for flight in receiver.in_flight:
                    if flight.acked:
                        continue
                    wait = self.first_retry_after if flight.sends == 1 else self.retry_every
                    if now - flight.last_sent < wait:
                        continue
                    if flight.sends >= self.max_sends:
                        give_up = session
                        break
                    flight.sends += 1
                    flight.last_sent = now
                    receiver.sent_order.append(flight)
                    if not self._send(session, encode_msg(flight.entry.data)):
                        break
            if give_up is not None:
                log.info("message socket %s: a message sent %d times was never acknowledged; closing",
                         receiver.id, self.max_sends)
                give_up.close(CloseCode.POLICY_VIOLATION, "messages not acknowledged")
                self.unregister(give_up)
