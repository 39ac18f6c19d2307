"""RFC 6455 frames: parse and serialize, nothing else.

Theory of operation
-------------------
A frame (RFC 6455 section 5.2) is a 2-byte header, an extended payload length
of 0, 2 or 8 bytes, a 4-byte masking key when the MASK bit is set, and the
payload.  :func:`parse_header` reads everything up to the payload and checks
what can be checked from the header alone (reserved opcodes, masking
direction, minimal length encoding, control-frame rules, the size limit)
*before* a single payload byte is read, so that a peer announcing 2**63 bytes
is refused after 10 bytes.  :func:`parse_frame` adds the payload and returns
``(Frame, consumed)`` or ``None`` when more bytes are needed, in the manner of
python-websockets ``frames.py`` and h11's ``NEED_DATA``.

Every violation raises :class:`iofogd.errors.ProtocolError` (or
:class:`~iofogd.errors.MessageTooBig`) carrying its close code; the close codes
(:class:`CloseCode`) and the rules of close frames (:class:`Close`) are
defined here, in one place, and :func:`close_code_for` maps any exception to
the code that fails the connection.  This module does no I/O.
"""
from __future__ import annotations

import enum
import struct
import sys

from iofogd.errors import MessageTooBig, ProtocolError
from iofogd.record import Record

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Final, Union

    Buffer = Union[bytes, bytearray, memoryview]

class CloseCode(enum.IntEnum):
    """Close codes (RFC 6455 section 7.4.1), named as python-websockets names them."""

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS_RCVD = 1005  # never on the wire: "the close frame had no code"
    ABNORMAL_CLOSURE = 1006  # never on the wire: "the TCP connection dropped"
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013


class Opcode(enum.IntEnum):
    """The frame-header opcodes of RFC 6455 section 5.2 (0x3-0x7, 0xB-0xF are reserved)."""

    CONT = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


DATA_OPCODES = frozenset((Opcode.CONT, Opcode.TEXT, Opcode.BINARY))
CONTROL_OPCODES = frozenset((Opcode.CLOSE, Opcode.PING, Opcode.PONG))
_OPCODES = {int(op): op for op in Opcode}

MAX_CONTROL_PAYLOAD = 125  # RFC 6455 section 5.5


def protocol_error(reason: str) -> ProtocolError:
    """A 1002 failure: the peer broke the framing rules."""
    return ProtocolError(CloseCode.PROTOCOL_ERROR, reason)


def invalid_data(reason: str) -> ProtocolError:
    """A 1007 failure: a text payload or close reason is not UTF-8 (section 8.1)."""
    return ProtocolError(CloseCode.INVALID_DATA, reason)


def close_code_for(exc: BaseException) -> int:
    """The close code that fails a connection because of ``exc``.

    Protocol errors carry their own (1002, 1007, 1009); anything else is our
    fault and is reported as 1011 without details (RFC 6455 section 7.4.1).
    """
    if isinstance(exc, ProtocolError):
        return exc.code
    return CloseCode.INTERNAL_ERROR


class Close(Record):
    """The payload of a close frame: every rule about close frames lives here.

    ``code`` is 1005 (NO_STATUS_RCVD) for a close frame without a payload.
    Section 5.5.1: a payload is empty or a 2-byte code followed by a UTF-8
    reason, 125 bytes at most; section 7.4: only some codes may be sent.
    """

    __slots__ = ("code", "reason")
    code: Final[int]
    reason: Final[str]

    def __init__(self, code: int, reason: str = "") -> None:
        self.code = code
        self.reason = reason

    @classmethod
    def parse(cls, data: bytes) -> Close:
        """A peer's close payload; ProtocolError (1002 or 1007) when it breaks the rules."""
        if not data:
            return cls(CloseCode.NO_STATUS_RCVD, "")
        if len(data) == 1:
            raise protocol_error("close frame with a one-byte payload")
        (code,) = struct.unpack_from("!H", data)
        if not is_valid_close_code(code):
            raise protocol_error(f"invalid close code {code}")
        try:
            reason = data[2:].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise invalid_data("close reason is not valid UTF-8") from exc
        return cls(code, reason)

    def serialize(self) -> bytes:
        """The payload we send; ValueError for a code that may not be sent or a long reason."""
        if self.code == CloseCode.NO_STATUS_RCVD:
            return b""
        if not is_valid_close_code(self.code):
            raise ValueError(f"close code {self.code} may not be sent")
        data = struct.pack("!H", self.code) + self.reason.encode("utf-8")
        if len(data) > MAX_CONTROL_PAYLOAD:
            raise ValueError("close reason over 123 bytes")
        return data

    @classmethod
    def failing(cls, exc: BaseException) -> Close:
        """The close frame that fails a connection because of ``exc`` (reason cut to fit)."""
        code = close_code_for(exc)
        reason = exc.reason if isinstance(exc, ProtocolError) and code != CloseCode.INTERNAL_ERROR else ""
        if code == CloseCode.INTERNAL_ERROR:
            reason = "internal error"
        return cls(code, reason.encode("utf-8")[:123].decode("utf-8", "ignore"))


def is_valid_close_code(code: int) -> bool:
    """Codes a peer may put in a close frame (RFC 6455 section 7.4, IANA registry).

    1004 is reserved, 1005/1006/1015 must never be sent, 1016-2999 are reserved
    for future RFCs, 3000-4999 belong to libraries and applications.
    """
    return code in (1000, 1001, 1002, 1003) or 1007 <= code <= 1014 or 3000 <= code <= 4999


class Frame(Record):
    """One WebSocket frame, payload unmasked."""

    __slots__ = ("opcode", "payload", "fin", "rsv1", "rsv2", "rsv3")
    opcode: Final[Opcode]
    payload: Final[bytes]
    fin: Final[bool]
    rsv1: Final[bool]
    rsv2: Final[bool]
    rsv3: Final[bool]

    def __init__(
        self,
        opcode: Opcode,
        payload: bytes = b"",
        fin: bool = True,
        rsv1: bool = False,
        rsv2: bool = False,
        rsv3: bool = False,
    ) -> None:
        self.opcode = opcode
        self.payload = payload
        self.fin = fin
        self.rsv1 = rsv1
        self.rsv2 = rsv2
        self.rsv3 = rsv3


class Header(Record):
    """Everything before the payload; ``size`` is the number of header bytes."""

    __slots__ = ("opcode", "fin", "rsv1", "rsv2", "rsv3", "mask", "length", "size")
    opcode: Final[Opcode]
    fin: Final[bool]
    rsv1: Final[bool]
    rsv2: Final[bool]
    rsv3: Final[bool]
    mask: Final[bytes | None]
    length: Final[int]
    size: Final[int]

    def __init__(self, opcode: Opcode, fin: bool, rsv1: bool, rsv2: bool, rsv3: bool, mask: bytes | None,
                 length: int, size: int) -> None:
        self.opcode = opcode
        self.fin = fin
        self.rsv1 = rsv1
        self.rsv2 = rsv2
        self.rsv3 = rsv3
        self.mask = mask
        self.length = length
        self.size = size


def apply_mask(data: Buffer, mask: bytes, offset: int = 0) -> bytes:
    """XOR ``data`` with the 4-byte ``mask`` (section 5.3).

    ``offset`` is the position of ``data[0]`` within the frame's payload, so a
    payload may be unmasked in pieces as it arrives.  One big-integer XOR is
    far faster in CPython than a per-byte loop (python-websockets ``utils.py``).
    """
    n = len(data)
    if n == 0:
        return b""
    if offset % 4:
        k = offset % 4
        mask = mask[k:] + mask[:k]
    key = mask * (n // 4) + mask[: n % 4]
    return (
        int.from_bytes(data, sys.byteorder) ^ int.from_bytes(key, sys.byteorder)
    ).to_bytes(n, sys.byteorder)


def parse_header(buf: Buffer, *, masked: bool, max_size: int) -> Header | None:
    """Parse a frame header at the start of ``buf``; ``None`` means "need more bytes".

    ``masked`` says whether the peer must mask (a server parsing client frames:
    True, section 5.1).  ``max_size`` bounds the declared payload length.
    """
    n = len(buf)
    if n < 2:
        return None
    b0 = buf[0]
    b1 = buf[1]
    fin = bool(b0 & 0x80)
    try:
        opcode = _OPCODES[b0 & 0x0F]
    except KeyError:
        raise protocol_error(f"reserved opcode 0x{b0 & 0x0F:X}") from None
    if bool(b1 & 0x80) != masked:
        # Section 5.1: a server MUST close on an unmasked client frame and a
        # client on a masked server frame.
        raise protocol_error("frame must be masked" if masked else "frame must not be masked")
    length = b1 & 0x7F
    pos = 2
    if length == 126:
        if n < 4:
            return None
        (length,) = struct.unpack_from("!H", buf, 2)
        pos = 4
        if length < 126:
            raise protocol_error("non-minimal payload length")  # section 5.2
    elif length == 127:
        if n < 10:
            return None
        (length,) = struct.unpack_from("!Q", buf, 2)
        pos = 10
        if length >> 63:
            raise protocol_error("payload length has the most significant bit set")
        if length < 0x10000:
            raise protocol_error("non-minimal payload length")
    if opcode in CONTROL_OPCODES:
        # Section 5.5: control frames are never fragmented and carry <= 125 bytes.
        if not fin:
            raise protocol_error("fragmented control frame")
        if length > MAX_CONTROL_PAYLOAD:
            raise protocol_error("control frame payload over 125 bytes")
    elif length > max_size:
        raise MessageTooBig(length, max_size)
    mask: bytes | None = None
    if masked:
        if n < pos + 4:
            return None
        mask = bytes(buf[pos : pos + 4])
        pos += 4
    return Header(opcode, fin, bool(b0 & 0x40), bool(b0 & 0x20), bool(b0 & 0x10), mask, length, pos)


def parse_frame(buf: Buffer, *, masked: bool, max_size: int) -> tuple[Frame, int] | None:
    """Parse one whole frame at the start of ``buf``.

    Returns ``(frame, consumed)`` or ``None`` when ``buf`` holds only part of a
    frame.  Bytes after the frame are left alone.
    """
    header = parse_header(buf, masked=masked, max_size=max_size)
    if header is None:
        return None
    end = header.size + header.length
    if len(buf) < end:
        return None
    payload = bytes(buf[header.size : end])
    if header.mask is not None:
        payload = apply_mask(payload, header.mask)
    frame = Frame(header.opcode, payload, header.fin, header.rsv1, header.rsv2, header.rsv3)
    return frame, end


def serialize_frame(frame: Frame, *, mask: bytes | None) -> bytes:
    """Encode ``frame``; ``mask`` is the 4-byte key a client must use, ``None`` for a server."""
    b0 = (
        (0x80 if frame.fin else 0)
        | (0x40 if frame.rsv1 else 0)
        | (0x20 if frame.rsv2 else 0)
        | (0x10 if frame.rsv3 else 0)
        | frame.opcode
    )
    return encode(b0, frame.payload, mask)


def encode(b0: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """Encode a frame from its first header byte (FIN, RSV, opcode) and payload.

    The shortest length form is always used (section 5.2).
    """
    mask_bit = 0x80 if mask is not None else 0
    n = len(payload)
    if n < 126:
        head = bytes((b0, mask_bit | n))
    elif n < 0x10000:
        head = struct.pack("!BBH", b0, mask_bit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mask_bit | 127, n)
    if mask is None:
        return head + payload
    if len(mask) != 4:
        raise ValueError("a masking key is 4 bytes")
    return head + mask + apply_mask(payload, mask)
