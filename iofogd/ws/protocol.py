"""The RFC 6455 connection state machine, sans I/O.

Theory of operation
-------------------
A :class:`Connection` is fed the bytes read from the socket with
:meth:`Connection.receive_data` (and :meth:`Connection.receive_eof` when the
peer hangs up).  :meth:`Connection.next_event` parses lazily, like h11, up to
the next event: :class:`Message` (a whole, reassembled text or binary
message), :class:`Ping`, :class:`Pong` or :class:`Close` (``None``: need more
bytes, or the connection is closed).  Replies the protocol owes the peer (a
pong for every ping, the echo of a close frame, the close frame that fails the
connection) go to an outgoing buffer that the I/O layer drains with
:meth:`Connection.data_to_send` after each event, so that they stay in order
with what the application sends in reply to earlier messages (a message
followed by a close in one TCP segment is answered before the close); the
``send_*`` methods return the bytes of the frames the application sends.  The
model is h11 (``receive_data`` / ``next_event`` / ``send`` returning bytes) and
python-websockets ``protocol.py``; nothing here touches a socket, a thread or a
clock.

Frames are consumed as a stream: the header is parsed (and checked against the
limits) as soon as it is complete, then the payload is unmasked and handled
piece by piece as it arrives.  That is what lets a text message fail on its
first invalid UTF-8 byte, even in the middle of a frame that has not fully
arrived (Autobahn 6.4.x), and a too-big message fail on its header (1009).

States (section 7): OPEN -> CLOSING when we send a close frame, -> CLOSED when
the closing handshake completes, the connection is failed, or the peer hangs
up.  In CLOSED every further byte is ignored; the I/O layer then flushes
``data_to_send()`` and closes the TCP connection (the server closes first,
section 7.1.1).

ioFog keeps a one-byte twist on ping/pong: a ping whose payload is exactly
0x09 is answered with the payload 0x0A, which the SDKs check for (spec 2.3);
every other ping gets its payload echoed, as section 5.5.3 requires.
"""
from __future__ import annotations

import codecs
import enum
import os
import struct

from iofogd.errors import ConnectionClosed, MessageTooBig, ProtocolError
from iofogd.record import Record
from iofogd.ws.frames import (
    CLOSE_ABNORMAL,
    CLOSE_NO_STATUS,
    CLOSE_NORMAL,
    CONTROL_OPCODES,
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

# The SDKs' keepalive (spec 2.2/2.3): ping payload 0x09 is answered with 0x0A.
SDK_PING = b"\x09"
SDK_PONG = b"\x0a"

_MAX_HEADER = 14  # 2 + 8 (64-bit length) + 4 (mask)


class State(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"  # we sent a close frame and wait for the peer's
    CLOSED = "closed"


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


class Close(Record):
    """The peer's close frame; ``code`` is 1005 when it carried none."""

    __slots__ = ("code", "reason")
    code: Final[int]
    reason: Final[str]

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


if TYPE_CHECKING:
    Event = Union[Message, Ping, Pong, Close]


def is_valid_close_code(code: int) -> bool:
    """Codes a peer may put in a close frame (RFC 6455 section 7.4, IANA registry).

    1004 is reserved, 1005/1006/1015 must never be sent, 1016-2999 are reserved
    for future RFCs, 3000-4999 belong to libraries and applications.
    """
    return code in (1000, 1001, 1002, 1003) or 1007 <= code <= 1014 or 3000 <= code <= 4999


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
        mask_source: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.client = client
        self.max_message_size = max_message_size
        self.max_frame_size = max_message_size if max_frame_size is None else max_frame_size
        self._mask_source = mask_source
        self.state = State.OPEN
        # The code that ended the connection: the peer's close code, the code we
        # failed it with, or 1006 when the TCP connection ended without a close.
        self.close_code: Optional[int] = None
        self.close_reason = ""
        self.failure: Optional[ProtocolError] = None
        self._buf = bytearray()
        self._out: List[bytes] = []
        self._events: List[Event] = []
        # The frame whose payload is being received.
        self._header: Optional[Header] = None
        self._received = 0
        self._control: List[bytes] = []
        # The data message being reassembled (section 5.4).
        self._msg_opcode: Optional[Opcode] = None
        self._msg_parts: List[bytes] = []
        self._text_parts: List[str] = []
        self._msg_size = 0
        self._decoder: Optional[codecs.IncrementalDecoder] = None

    # -- input ---------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the socket; parsing happens in :meth:`next_event`."""
        if self.state is not State.CLOSED:
            self._buf += data

    def receive_eof(self) -> None:
        """The peer closed the TCP connection."""
        if self.state is not State.CLOSED:
            self.state = State.CLOSED
            self.close_code = CLOSE_ABNORMAL
        self._buf.clear()

    def next_event(self) -> Optional[Event]:
        """Parse up to the next event; ``None`` when more bytes are needed or all is over.

        A protocol violation fails the connection here: the close frame is
        queued for :meth:`data_to_send`, ``state`` becomes CLOSED and
        ``failure`` holds the error.
        """
        if not self._events and self.state is not State.CLOSED:
            try:
                self._parse()
            except ProtocolError as exc:
                self._fail(exc)
        return self._events.pop(0) if self._events else None

    def events(self) -> List[Event]:
        """Every event the buffered bytes hold, oldest first."""
        events: List[Event] = []
        event = self.next_event()
        while event is not None:
            events.append(event)
            event = self.next_event()
        return events

    def data_to_send(self) -> bytes:
        """The replies owed to the peer (pongs, close frames) since the last call."""
        out = b"".join(self._out)
        self._out.clear()
        return out

    # -- output --------------------------------------------------------------

    def send_text(self, text: str) -> bytes:
        return self._send_data(Opcode.TEXT, text.encode("utf-8"))

    def send_binary(self, data: bytes) -> bytes:
        return self._send_data(Opcode.BINARY, bytes(data))

    def send_ping(self, payload: bytes = b"") -> bytes:
        self._check_sendable()
        return self._frame(Opcode.PING, payload)

    def send_pong(self, payload: bytes = b"") -> bytes:
        self._check_sendable()
        return self._frame(Opcode.PONG, payload)

    def send_close(self, code: int = CLOSE_NORMAL, reason: str = "") -> bytes:
        """Start the closing handshake; returns b"" if it has already started."""
        if self.state is not State.OPEN:
            return b""
        payload = self._close_payload(code, reason)
        self.state = State.CLOSING
        self.close_code, self.close_reason = code, reason
        return self._frame(Opcode.CLOSE, payload)

    # -- internals -------------------------------------------------------------

    def _check_sendable(self) -> None:
        if self.state is not State.OPEN:
            raise ConnectionClosed(self.close_code or CLOSE_ABNORMAL, self.close_reason)

    def _send_data(self, opcode: Opcode, payload: bytes) -> bytes:
        self._check_sendable()
        return self._frame(opcode, payload)

    def _frame(self, opcode: Opcode, payload: bytes) -> bytes:
        # Unfragmented, no RSV bits: the first header byte is FIN | opcode.
        return encode(0x80 | opcode, payload, self._mask_source(4) if self.client else None)

    @staticmethod
    def _close_payload(code: int, reason: str) -> bytes:
        if code == CLOSE_NO_STATUS:
            return b""
        if not is_valid_close_code(code):
            raise ValueError(f"close code {code} may not be sent")
        data = struct.pack("!H", code) + reason.encode("utf-8")
        if len(data) > 125:
            raise ValueError("close reason over 123 bytes")
        return data

    def _fail(self, exc: ProtocolError) -> None:
        """Fail the connection (section 7.1.7): send a close frame, ignore the rest."""
        self.failure = exc
        if self.state is State.OPEN:
            reason = exc.reason.encode("utf-8")[:123].decode("utf-8", "ignore")
            self._out.append(self._frame(Opcode.CLOSE, self._close_payload(exc.code, reason)))
            self.close_code, self.close_reason = exc.code, reason
        self.state = State.CLOSED
        self._buf.clear()
        self._reset_message()

    def _reset_message(self) -> None:
        self._msg_opcode = None
        self._msg_parts = []
        self._text_parts = []
        self._msg_size = 0
        self._decoder = None

    def _parse(self) -> None:
        buf = self._buf
        if self._header is None and len(buf) < 2:
            return  # the common "nothing more buffered" call
        pos = 0
        masked = not self.client
        while self.state is not State.CLOSED and not self._events:
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
        if self.state is not State.CLOSED:
            del buf[:pos]

    def _start_frame(self, header: Header) -> None:
        """Checks that need only the header (sections 5.2, 5.4)."""
        if header.rsv1 or header.rsv2 or header.rsv3:
            raise protocol_error("reserved bits set but no extension was negotiated")
        opcode = header.opcode
        if opcode in CONTROL_OPCODES:
            self._control = []
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
        total = self._msg_size + header.length
        if total > self.max_message_size:
            raise MessageTooBig(total, self.max_message_size)

    def _payload(self, header: Header, chunk: bytes) -> None:
        if header.opcode in CONTROL_OPCODES:
            self._control.append(chunk)
            return
        self._msg_size += len(chunk)
        decoder = self._decoder
        if decoder is None:
            self._msg_parts.append(chunk)
            return
        try:
            text = decoder.decode(chunk, False)
        except UnicodeDecodeError as exc:
            raise invalid_data("text message is not valid UTF-8") from exc
        if _utf8_prefix_error(decoder.getstate()[0]):
            raise invalid_data("text message is not valid UTF-8")
        self._text_parts.append(text)

    def _end_frame(self, header: Header) -> None:
        opcode = header.opcode
        if opcode in CONTROL_OPCODES:
            self._control_frame(opcode, b"".join(self._control))
            self._control = []
            return
        if not header.fin:
            return
        decoder = self._decoder
        if decoder is not None:
            try:
                tail = decoder.decode(b"", True)
            except UnicodeDecodeError as exc:
                raise invalid_data("text message ends inside a UTF-8 sequence") from exc
            self._text_parts.append(tail)
            data: Union[str, bytes] = "".join(self._text_parts)
        else:
            data = b"".join(self._msg_parts)
        self._reset_message()
        self._events.append(Message(data))

    def _control_frame(self, opcode: Opcode, payload: bytes) -> None:
        if opcode is Opcode.PING:
            self._events.append(Ping(payload))
            # Section 5.5.2: answer with a pong carrying the same payload; the
            # SDKs' 0x09 ping wants 0x0A (spec 2.3).
            self._out.append(self._frame(Opcode.PONG, SDK_PONG if payload == SDK_PING else payload))
        elif opcode is Opcode.PONG:
            self._events.append(Pong(payload))
        else:
            self._close_frame(payload)

    def _close_frame(self, payload: bytes) -> None:
        """Section 5.5.1 and 7.4: validate the peer's close frame, echo it if we did not start."""
        if not payload:
            code, reason = CLOSE_NO_STATUS, ""
        elif len(payload) == 1:
            raise protocol_error("close frame with a one-byte payload")
        else:
            (code,) = struct.unpack_from("!H", payload)
            if not is_valid_close_code(code):
                raise protocol_error(f"invalid close code {code}")
            try:
                reason = payload[2:].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise invalid_data("close reason is not valid UTF-8") from exc
        if self.state is State.OPEN:
            self._out.append(self._frame(Opcode.CLOSE, payload))
            self.close_code, self.close_reason = code, reason
        self.state = State.CLOSED
        self._buf.clear()
        self._events.append(Close(code, reason))
