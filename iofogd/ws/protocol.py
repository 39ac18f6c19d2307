"""The RFC 6455 connection state machine, sans I/O.

Theory of operation
-------------------
A :class:`Connection` is fed the bytes read from the socket with
:meth:`Connection.receive_data` (and :meth:`Connection.receive_eof` when the
peer hangs up).  :meth:`Connection.next_event` parses lazily, like h11, up to
the next event: :class:`Message` (a whole, reassembled text or binary
message), :class:`Ping`, :class:`Pong` or :class:`~iofogd.ws.frames.Close`
(``None``: need more bytes, or the connection is closed).

Everything the protocol wants to send goes to ONE outbox, drained by the I/O
layer with :meth:`Connection.data_to_send`: the replies it owes the peer (a
pong for every ping, the echo of a close frame, the close frame that fails the
connection) and the frames of the ``send_*`` methods, in the order they were
made, as python-websockets ``protocol.py`` does.  So a message followed by a
close in one TCP segment is answered before the close, and a drain of several
queued frames leaves in one write.  Nothing here touches a socket, a thread or
a clock.

Any exception while parsing fails the connection: a :class:`ProtocolError`
with its own code (1002, 1007, 1009), anything else (a bug of ours) with 1011,
so the peer always gets a close frame instead of a dropped TCP connection.

Frames are consumed as a stream: the header is parsed (and checked against the
limits) as soon as it is complete, then the payload is unmasked and handled
piece by piece as it arrives.  That is what lets a text message fail on its
first invalid UTF-8 byte, even in the middle of a frame that has not fully
arrived (Autobahn 6.4.x), and a too-big message fail on its header (1009).

A fragmented message is reassembled in one ``bytearray``, bounded by bytes
(``max_message_size``) and by the number of fragments (``max_fragments``): a
peer sending a megabyte in 2-byte fragments costs a megabyte at most, and is
cut off (1009) long before that.

States (section 7): OPEN -> CLOSING when we send a close frame, -> CLOSED when
the closing handshake completes, the connection is failed, or the peer hangs
up.  In CLOSED every further byte is ignored; the I/O layer then flushes
``data_to_send()`` and closes the TCP connection (the server closes first,
section 7.1.1).

Every ping gets its payload echoed (section 5.5.2) unless the owner passes
``pong_payload``: ioFog's twist (a 0x09 ping answered with 0x0A) lives with
the ioFog envelope (:mod:`iofogd.ws.envelope`), not here.
"""
from __future__ import annotations

import codecs
import enum
import os

from iofogd.errors import ConnectionClosed, MessageTooBig, ProtocolError
from iofogd.record import Record
from iofogd.ws.frames import (
    CONTROL_OPCODES,
    Close,
    CloseCode,
    Header,
    Opcode,
    apply_mask,
    encode,
    invalid_data,
    parse_header,
    protocol_error,
)

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Callable, Final, List, Optional, Union

__all__ = ["Close", "Connection", "Message", "Ping", "Pong", "State"]

_MAX_HEADER = 14  # 2 + 8 (64-bit length) + 4 (mask)


class State(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"  # we sent a close frame and wait for the peer's
    CLOSED = "closed"


# The hot paths compare with these: ``State.OPEN`` is a lookup through the
# enum's metaclass, ~60 ns on CPython 3.11, several times per message.
_OPEN: Final = State.OPEN
_CLOSED: Final = State.CLOSED


# The header of every unmasked binary frame of 0-125 bytes, built once.
_BINARY_HEADS: Final = [bytes((0x80 | Opcode.BINARY, n)) for n in range(126)]
# For a payload of n < 126 bytes: 1 in the low bit of each of its ceil(n / 4) 32-bit lanes.
_MASK_REPEAT: Final = [sum(1 << (32 * lane) for lane in range((n + 3) // 4)) for n in range(126)]


class Message(Record):
    """A whole data message: ``str`` for a text message, ``bytes`` for binary."""

    __slots__ = ("data",)
    data: Final[Union[str, bytes]]

    def __init__(self, data: Union[str, bytes]) -> None:
        self.data = data

    @property
    def is_text(self) -> bool:
        return isinstance(self.data, str)


class Ping(Record):
    __slots__ = ("payload",)
    payload: Final[bytes]

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


class Pong(Record):
    __slots__ = ("payload",)
    payload: Final[bytes]

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


if TYPE_CHECKING:
    Event = Union[Message, Ping, Pong, Close]


def _echo(payload: bytes) -> bytes:
    return payload


def _utf8_prefix_error(pending: bytes) -> bool:
    """True when the decoder's buffered partial sequence can never become valid.

    CPython's incremental UTF-8 decoder rejects most invalid prefixes at once
    but buffers ``ED A0``..``ED BF`` (the start of a UTF-16 surrogate, invalid in
    UTF-8, RFC 3629 section 4) until the third byte arrives.
    """
    return len(pending) >= 2 and pending[0] == 0xED and pending[1] >= 0xA0


class Connection:
    """One WebSocket connection's protocol state, server side unless ``client``."""

    def __init__(
        self,
        *,
        client: bool = False,
        max_message_size: int = 1 << 20,
        max_frame_size: Optional[int] = None,
        max_fragments: int = 1024,
        pong_payload: Callable[[bytes], bytes] = _echo,
        mask_source: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.client = client
        self.max_message_size = max_message_size
        self.max_frame_size = max_message_size if max_frame_size is None else max_frame_size
        self.max_fragments = max_fragments
        self._pong_payload = pong_payload
        self._mask_source = mask_source
        self.state = State.OPEN
        # The code that ended the connection: the peer's close code, the code we
        # failed it with, or 1006 when the TCP connection ended without a close.
        self.close_code: Optional[int] = None
        self.close_reason = ""
        self.failure: Optional[BaseException] = None
        self._buf = bytearray()
        self._out: List[bytes] = []   # the one outbox
        self._events: List[Event] = []
        # The frame whose payload is being received.
        self._header: Optional[Header] = None
        self._received = 0
        self._control = bytearray()
        # The data message being reassembled (section 5.4), in one buffer.
        self._msg_opcode: Optional[Opcode] = None
        self._msg = bytearray()
        self._fragments = 0
        self._decoder: Optional[codecs.IncrementalDecoder] = None

    # -- input ---------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the socket; parsing happens in :meth:`next_event`."""
        if self.state is not _CLOSED:
            self._buf += data

    def receive_eof(self) -> None:
        """The peer closed the TCP connection."""
        if self.state is not _CLOSED:
            self.state = State.CLOSED
            self.close_code = CloseCode.ABNORMAL_CLOSURE
        self._buf.clear()
        self._reset_message()

    def next_event(self) -> Optional[Event]:
        """Parse up to the next event; ``None`` when more bytes are needed or all is over.

        Any exception while parsing fails the connection here: the close frame
        (1002/1007/1009 for a protocol error, 1011 for anything else) is queued
        in the outbox, ``state`` becomes CLOSED and ``failure`` holds the error.
        """
        if not self._events and self.state is not _CLOSED:
            try:
                self._parse()
            except Exception as exc:   # a bug of ours must not drop TCP without a close frame
                self._fail(exc)
        return self._events.pop(0) if self._events else None

    def whole_message(self, data: bytes) -> Optional[Union[str, bytes]]:
        """The message ``data`` holds when it is exactly one common frame, as
        :class:`Message` would hold it (``str`` for text, ``bytes`` for binary;
        no Message object on this path, ~100 ns); else ``None``.

        The common frame: a whole, final text or binary frame from a client,
        masked, with a 7- or 16-bit length within the limits, no RSV bit, and
        nothing else pending (no buffered bytes, no frame or fragmented message
        in progress, no queued event, the connection OPEN).  Every check of the
        general path holds for it by construction (a known opcode, FIN, minimal
        length encoding, masking), and a text payload must decode as UTF-8.

        This changes NOTHING in the connection, so the I/O layer may call it
        without the lock that serialises other threads' sends: on ``None`` it
        passes the same bytes to :meth:`receive_data` and :meth:`next_event`,
        which parse them in full and fail the connection where they must (an
        invalid UTF-8 payload is refused here and failed there with 1007).
        """
        n = len(data)
        if n < 6 or self._buf or self._header is not None or self._msg_opcode is not None \
                or self._events or self.client or self.state is not _OPEN:
            return None
        b0 = data[0]
        if b0 != 0x82 and b0 != 0x81:
            return None
        length = data[1] ^ 0x80   # MASK set: 0..127 below, else >= 128
        if length < 126:
            start = 6
        elif length == 126 and n >= 8:
            length = (data[2] << 8) | data[3]
            if length < 126:
                return None   # non-minimal: the general path fails it
            start = 8
        else:
            return None
        if n != start + length or length > self.max_frame_size or length > self.max_message_size:
            return None
        if length < 126:
            # apply_mask, inlined for the short frame: the mask and the payload read
            # as ONE little-endian integer (the mask its low 32 bits), and the mask
            # repeated over the payload by one multiplication (_MASK_REPEAT: a 1 in
            # every 32-bit lane, no carries), ~100 ns less than building the key.
            x = int.from_bytes(data[2:], "little")
            unmasked = (x >> 32) ^ ((x & 0xFFFFFFFF) * _MASK_REPEAT[length])
            if length & 3:   # the last lane is partly past the payload
                payload = unmasked.to_bytes((length + 3) & ~3, "little")[:length]
            else:
                payload = unmasked.to_bytes(length, "little")
        else:   # 126 bytes or more: the call is nothing beside the payload's XOR
            payload = apply_mask(data[8:], data[4:8])
        if b0 == 0x82:
            return payload
        try:
            return payload.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def has_input(self) -> bool:
        """Whether :meth:`next_event` has anything left to look at (events or bytes)."""
        return bool(self._events or self._buf)

    def events(self) -> List[Event]:
        """Every event the buffered bytes hold, oldest first."""
        events: List[Event] = []
        event = self.next_event()
        while event is not None:
            events.append(event)
            event = self.next_event()
        return events

    def data_to_send(self) -> bytes:
        """Everything queued for the peer since the last call, in order, as one buffer."""
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data

    # -- output (queued in the outbox) --------------------------------------------

    def send_text(self, text: str) -> None:
        self._check_sendable()
        self._frame(Opcode.TEXT, text.encode("utf-8"))

    def send_binary(self, data: bytes) -> None:
        # The echo's and the hub's every message: _check_sendable and _frame
        # inlined (a call each, per message, while holding the GIL).
        if self.state is not _OPEN:
            raise ConnectionClosed(self.close_code or CloseCode.ABNORMAL_CLOSURE, self.close_reason)
        self._out.append(encode(0x82, data, self._mask_source(4) if self.client else None))

    def send_binary_now(self, data: bytes) -> bytes:
        """:meth:`send_binary` then :meth:`data_to_send`, in one call: the outbox with the frame last.

        The session's every outgoing binary message goes through here (a call
        less each, and a short server frame's header taken from a table).
        """
        if self.state is not _OPEN:
            raise ConnectionClosed(self.close_code or CloseCode.ABNORMAL_CLOSURE, self.close_reason)
        n = len(data)
        if n < 126 and not self.client:
            frame = _BINARY_HEADS[n] + data
        else:
            frame = encode(0x82, data, self._mask_source(4) if self.client else None)
        out = self._out
        if not out:
            return frame
        out.append(frame)
        joined = b"".join(out)
        out.clear()
        return joined

    def send_ping(self, payload: bytes = b"") -> None:
        self._check_sendable()
        self._frame(Opcode.PING, payload)

    def send_pong(self, payload: bytes = b"") -> None:
        self._check_sendable()
        self._frame(Opcode.PONG, payload)

    def send_close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> bool:
        """Start the closing handshake; False (nothing queued) if it has already started."""
        if self.state is not _OPEN:
            return False
        close = Close(code, reason)
        payload = close.serialize()   # ValueError before any state changes
        self.state = State.CLOSING
        self.close_code, self.close_reason = code, reason
        self._frame(Opcode.CLOSE, payload)
        return True

    # -- internals -------------------------------------------------------------

    def _check_sendable(self) -> None:
        if self.state is not _OPEN:
            raise ConnectionClosed(self.close_code or CloseCode.ABNORMAL_CLOSURE, self.close_reason)

    def _frame(self, opcode: Opcode, payload: bytes) -> None:
        # Unfragmented, no RSV bits: the first header byte is FIN | opcode.
        self._out.append(encode(0x80 | opcode, payload, self._mask_source(4) if self.client else None))

    def _fail(self, exc: BaseException) -> None:
        """Fail the connection (section 7.1.7): send a close frame, ignore the rest."""
        self.failure = exc
        if self.state is State.OPEN:
            close = Close.failing(exc)
            self._frame(Opcode.CLOSE, close.serialize())
            self.close_code, self.close_reason = close.code, close.reason
        self.state = State.CLOSED
        self._buf.clear()
        self._reset_message()

    def _reset_message(self) -> None:
        self._msg_opcode = None
        self._msg = bytearray()
        self._fragments = 0
        self._decoder = None

    def _parse(self) -> None:
        buf = self._buf
        if self._header is None:
            size = len(buf)
            if size < 2:
                return  # the common "nothing more buffered" call
            # The common frame: a whole, small, unfragmented, masked text or
            # binary frame from a client, no fragmented message in progress.
            # Every check of the general path holds for it by construction
            # (FIN set, no RSV bits, a known opcode, masked, minimal length).
            b0 = buf[0]
            b1 = buf[1]
            length = b1 & 0x7F
            if ((b0 == 0x82 or b0 == 0x81) and b1 & 0x80 and length < 126 and size >= 6 + length
                    and self._msg_opcode is None and not self.client
                    and length <= self.max_frame_size and length <= self.max_message_size):
                payload = apply_mask(buf[6 : 6 + length], bytes(buf[2:6]))
                del buf[: 6 + length]
                if b0 == 0x82:
                    self._events.append(Message(payload))
                    return
                try:
                    self._events.append(Message(payload.decode("utf-8")))
                except UnicodeDecodeError as exc:
                    raise invalid_data("text message is not valid UTF-8") from exc
                return
            # The keepalive: a whole masked ping or pong (FIN set, no RSV bits,
            # at most 125 bytes by its 7-bit length), allowed between the
            # fragments of a message, so whatever is being reassembled.
            if (b0 == 0x89 or b0 == 0x8A) and b1 & 0x80 and length < 126 and size >= 6 + length \
                    and not self.client:
                payload = apply_mask(buf[6 : 6 + length], bytes(buf[2:6]))
                del buf[: 6 + length]
                self._control_frame(Opcode.PING if b0 == 0x89 else Opcode.PONG, payload)
                return
        pos = 0
        masked = not self.client
        try:
            while self.state is not _CLOSED and not self._events:
                header = self._header
                if header is None:
                    header = parse_header(
                        bytes(buf[pos : pos + _MAX_HEADER]), masked=masked, max_size=self.max_frame_size
                    )
                    if header is None:
                        break
                    self._start_frame(header)
                    pos += header.size
                    self._header = header
                    self._received = 0
                take = min(header.length - self._received, len(buf) - pos)
                if take:
                    chunk = bytes(buf[pos : pos + take])
                    pos += take
                    if header.mask is not None:
                        chunk = apply_mask(chunk, header.mask, self._received)
                    self._received += take
                    self._payload(header, chunk)
                if self._received < header.length:
                    break
                self._header = None
                self._end_frame(header)
        finally:
            if self.state is not _CLOSED:
                del buf[:pos]

    def _start_frame(self, header: Header) -> None:
        """Checks that need only the header (sections 5.2, 5.4)."""
        if header.rsv1 or header.rsv2 or header.rsv3:
            raise protocol_error("reserved bits set but no extension was negotiated")
        opcode = header.opcode
        if opcode in CONTROL_OPCODES:
            self._control = bytearray()
            return
        if opcode is Opcode.CONT:
            if self._msg_opcode is None:
                raise protocol_error("continuation frame without a message to continue")
        elif self._msg_opcode is not None:
            raise protocol_error("new data frame before the fragmented message ended")
        else:
            self._msg_opcode = opcode
            self._decoder = (
                codecs.getincrementaldecoder("utf-8")() if opcode is Opcode.TEXT else None
            )
        self._fragments += 1
        if self._fragments > self.max_fragments:
            # Every fragment costs a header parse and a call; a message in
            # thousands of tiny fragments is an attack, not a client (1009).
            raise ProtocolError(
                CloseCode.MESSAGE_TOO_BIG, f"message in more than {self.max_fragments} fragments"
            )
        total = len(self._msg) + header.length
        if total > self.max_message_size:
            raise MessageTooBig(total, self.max_message_size)

    def _payload(self, header: Header, chunk: bytes) -> None:
        if header.opcode in CONTROL_OPCODES:
            self._control += chunk
            return
        self._msg += chunk
        decoder = self._decoder
        if decoder is None:
            return
        # Validated as it arrives (Autobahn 6.4.x: fail on the first bad byte);
        # decoded once, at the end.
        try:
            decoder.decode(chunk, False)
        except UnicodeDecodeError as exc:
            raise invalid_data("text message is not valid UTF-8") from exc
        if _utf8_prefix_error(decoder.getstate()[0]):
            raise invalid_data("text message is not valid UTF-8")

    def _end_frame(self, header: Header) -> None:
        opcode = header.opcode
        if opcode in CONTROL_OPCODES:
            payload = bytes(self._control)
            self._control = bytearray()
            self._control_frame(opcode, payload)
            return
        if not header.fin:
            return
        data: Union[str, bytes]
        if self._decoder is not None:
            try:
                self._decoder.decode(b"", True)
                data = self._msg.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise invalid_data("text message ends inside a UTF-8 sequence") from exc
        else:
            data = bytes(self._msg)
        self._reset_message()
        self._events.append(Message(data))

    def _control_frame(self, opcode: Opcode, payload: bytes) -> None:
        if opcode is Opcode.PING:
            self._events.append(Ping(payload))
            # Section 5.5.2: answer with a pong (the same payload unless the
            # owner's rule says otherwise).
            self._frame(Opcode.PONG, self._pong_payload(payload))
        elif opcode is Opcode.PONG:
            self._events.append(Pong(payload))
        else:
            self._close_frame(payload)

    def _close_frame(self, payload: bytes) -> None:
        """Section 5.5.1 and 7.4: the peer's close frame; echoed if we did not start."""
        close = Close.parse(payload)
        if self.state is State.OPEN:
            self._frame(Opcode.CLOSE, payload)
            self.close_code, self.close_reason = close.code, close.reason
        self.state = State.CLOSED
        self._buf.clear()
        self._events.append(close)
