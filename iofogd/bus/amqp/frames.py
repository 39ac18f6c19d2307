"""AMQP 1.0 frames and performatives (part 2): parse and serialize, nothing else.

Theory of operation
-------------------
A connection starts with an 8-byte protocol header, ``AMQP`` + protocol id +
1.0.0 (id 0 for AMQP, 3 for SASL, 2 for TLS which we never negotiate in-band).
Every frame then is a 4-byte size, a data offset (in 4-byte words, >= 2), a
type (0 AMQP, 1 SASL), a 2-byte channel, the extended header we skip, and
the body: one described list, the performative, followed for a transfer by
payload bytes.  A frame with an empty body is a heartbeat.

:func:`parse_frame` returns ``(Frame, consumed)`` or ``None`` when more bytes
are needed, in the manner of h11's ``NEED_DATA``; the size is checked against
our max-frame-size before the body is read.  Performatives are
:class:`Composite` values: named fields in list order, trailing nulls left off
when encoding, missing trailing fields read as ``None`` (the caller applies
the spec's defaults).  Descriptors are accepted numeric or symbolic.
"""
from __future__ import annotations

import struct

from iofogd.bus.amqp.types import (
    Described,
    Symbol,
    UByte,
    UInt,
    ULong,
    UShort,
    decode_value,
    encode,
    symbols,
)
from iofogd.errors import AmqpDecodeError, AmqpProtocolError
from iofogd.record import Record

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Any, Callable, ClassVar, Dict, Final, List, Optional, Tuple, Type, Union

    Buffer = Union[bytes, bytearray, memoryview]

AMQP_HEADER = b"AMQP\x00\x01\x00\x00"
SASL_HEADER = b"AMQP\x03\x01\x00\x00"
TLS_HEADER = b"AMQP\x02\x01\x00\x00"

FRAME_AMQP = 0
FRAME_SASL = 1
MIN_MAX_FRAME_SIZE = 512  # part 2, 2.7.1: no peer may ask for less

_frame_header = struct.Struct(">IBBH")

# -- error conditions (part 2, 2.8.15 - 2.8.18) -------------------------------------------
INTERNAL_ERROR = "amqp:internal-error"
NOT_FOUND = "amqp:not-found"
DECODE_ERROR = "amqp:decode-error"
RESOURCE_LIMIT_EXCEEDED = "amqp:resource-limit-exceeded"
NOT_ALLOWED = "amqp:not-allowed"
INVALID_FIELD = "amqp:invalid-field"
NOT_IMPLEMENTED = "amqp:not-implemented"
FRAMING_ERROR = "amqp:connection:framing-error"
UNATTACHED_HANDLE = "amqp:session:unattached-handle"
WINDOW_VIOLATION = "amqp:session:window-violation"
ERRANT_LINK = "amqp:session:errant-link"
HANDLE_IN_USE = "amqp:session:handle-in-use"
TRANSFER_LIMIT_EXCEEDED = "amqp:link:transfer-limit-exceeded"


def _uint(v: Any) -> Any:
    return UInt(v)


def _ulong(v: Any) -> Any:
    return ULong(v)


def _ushort(v: Any) -> Any:
    return UShort(v)


def _ubyte(v: Any) -> Any:
    return UByte(v)


def _symbol(v: Any) -> Any:
    return Symbol(v)


def _composite(v: Any) -> Any:
    return v.described() if isinstance(v, Composite) else v


if TYPE_CHECKING:
    Wrap = Optional[Callable[[Any], Any]]


class Composite:
    """A described list with named fields (a performative, a section, an error ...)."""

    __slots__: Tuple[str, ...] = ()
    CODE: ClassVar[int] = 0
    NAME: ClassVar[str] = ""
    FIELDS: ClassVar[Tuple[Tuple[str, Wrap], ...]] = ()
    MANDATORY: ClassVar[Tuple[str, ...]] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        names = self.__slots__  # the field names, in list order
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes at most {len(names)} fields")
        for name, value in zip(names, args):
            setattr(self, name, value)
        for name in names[len(args):]:
            setattr(self, name, None)
        for name, value in kwargs.items():
            if name not in self.__slots__:
                raise TypeError(f"{type(self).__name__} has no field {name!r}")
            setattr(self, name, value)

    def fields(self) -> List[Any]:
        """The field values as AMQP-typed values, trailing nulls left off."""
        values = []
        for name, wrap in self.FIELDS:
            v = getattr(self, name)
            values.append(wrap(v) if v is not None and wrap is not None else v)
        while values and values[-1] is None:
            values.pop()
        return values

    def described(self) -> Described:
        return Described(ULong(self.CODE), self.fields())

    def encode(self) -> bytes:
        return encode(self.described())

    @classmethod
    def from_fields(cls, values: Any) -> Any:
        if not isinstance(values, list):
            raise AmqpDecodeError(f"{cls.NAME} must be a list, got {type(values).__name__}")
        if len(values) > len(cls.FIELDS):
            values = values[:len(cls.FIELDS)]  # fields a later version added: ignored
        instance = cls(*values)
        for name in cls.MANDATORY:
            if getattr(instance, name) is None:
                raise AmqpDecodeError(f"{cls.NAME} without its mandatory field {name.replace('_', '-')}")
        return instance

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(
            getattr(self, n) == getattr(other, n) for n, _ in self.FIELDS)

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n, _ in self.FIELDS if getattr(self, n) is not None)
        return f"{type(self).__name__}({shown})"

    __hash__ = None  # type: ignore[assignment]


def _fields(*spec: Tuple[str, Wrap]) -> Tuple[Tuple[str, Wrap], ...]:
    return spec


# -- performatives (part 2, 2.7) -----------------------------------------------------------


class Open(Composite):
    CODE, NAME = 0x10, "amqp:open:list"
    FIELDS = _fields(("container_id", None), ("hostname", None), ("max_frame_size", _uint),
                     ("channel_max", _ushort), ("idle_time_out", _uint), ("outgoing_locales", symbols),
                     ("incoming_locales", symbols), ("offered_capabilities", symbols),
                     ("desired_capabilities", symbols), ("properties", None))
    MANDATORY = ("container_id",)
    __slots__ = tuple(n for n, _ in FIELDS)
    container_id: str
    hostname: Optional[str]
    max_frame_size: Optional[int]
    channel_max: Optional[int]
    idle_time_out: Optional[int]
    outgoing_locales: Any
    incoming_locales: Any
    offered_capabilities: Any
    desired_capabilities: Any
    properties: Optional[Dict[Any, Any]]


class Begin(Composite):
    CODE, NAME = 0x11, "amqp:begin:list"
    FIELDS = _fields(("remote_channel", _ushort), ("next_outgoing_id", _uint), ("incoming_window", _uint),
                     ("outgoing_window", _uint), ("handle_max", _uint), ("offered_capabilities", symbols),
                     ("desired_capabilities", symbols), ("properties", None))
    MANDATORY = ("next_outgoing_id", "incoming_window", "outgoing_window")
    __slots__ = tuple(n for n, _ in FIELDS)
    remote_channel: Optional[int]
    next_outgoing_id: int
    incoming_window: int
    outgoing_window: int
    handle_max: Optional[int]
    offered_capabilities: Any
    desired_capabilities: Any
    properties: Optional[Dict[Any, Any]]


class Attach(Composite):
    CODE, NAME = 0x12, "amqp:attach:list"
    FIELDS = _fields(("name", None), ("handle", _uint), ("role", None), ("snd_settle_mode", _ubyte),
                     ("rcv_settle_mode", _ubyte), ("source", _composite), ("target", _composite),
                     ("unsettled", None), ("incomplete_unsettled", None), ("initial_delivery_count", _uint),
                     ("max_message_size", _ulong), ("offered_capabilities", symbols),
                     ("desired_capabilities", symbols), ("properties", None))
    MANDATORY = ("name", "handle", "role")
    __slots__ = tuple(n for n, _ in FIELDS)
    name: str
    handle: int
    role: bool  # False: sender, True: receiver
    snd_settle_mode: Optional[int]
    rcv_settle_mode: Optional[int]
    source: Any
    target: Any
    unsettled: Any
    incomplete_unsettled: Optional[bool]
    initial_delivery_count: Optional[int]
    max_message_size: Optional[int]
    offered_capabilities: Any
    desired_capabilities: Any
    properties: Optional[Dict[Any, Any]]


class Flow(Composite):
    CODE, NAME = 0x13, "amqp:flow:list"
    FIELDS = _fields(("next_incoming_id", _uint), ("incoming_window", _uint), ("next_outgoing_id", _uint),
                     ("outgoing_window", _uint), ("handle", _uint), ("delivery_count", _uint),
                     ("link_credit", _uint), ("available", _uint), ("drain", None), ("echo", None),
                     ("properties", None))
    MANDATORY = ("incoming_window", "next_outgoing_id", "outgoing_window")
    __slots__ = tuple(n for n, _ in FIELDS)
    next_incoming_id: Optional[int]
    incoming_window: int
    next_outgoing_id: int
    outgoing_window: int
    handle: Optional[int]
    delivery_count: Optional[int]
    link_credit: Optional[int]
    available: Optional[int]
    drain: Optional[bool]
    echo: Optional[bool]
    properties: Optional[Dict[Any, Any]]


class Transfer(Composite):
    CODE, NAME = 0x14, "amqp:transfer:list"
    FIELDS = _fields(("handle", _uint), ("delivery_id", _uint), ("delivery_tag", None),
                     ("message_format", _uint), ("settled", None), ("more", None), ("rcv_settle_mode", _ubyte),
                     ("state", _composite), ("resume", None), ("aborted", None), ("batchable", None))
    MANDATORY = ("handle",)
    __slots__ = tuple(n for n, _ in FIELDS)
    handle: int
    delivery_id: Optional[int]
    delivery_tag: Optional[bytes]
    message_format: Optional[int]
    settled: Optional[bool]
    more: Optional[bool]
    rcv_settle_mode: Optional[int]
    state: Any
    resume: Optional[bool]
    aborted: Optional[bool]
    batchable: Optional[bool]


class Disposition(Composite):
    CODE, NAME = 0x15, "amqp:disposition:list"
    FIELDS = _fields(("role", None), ("first", _uint), ("last", _uint), ("settled", None),
                     ("state", _composite), ("batchable", None))
    MANDATORY = ("role", "first")
    __slots__ = tuple(n for n, _ in FIELDS)
    role: bool
    first: int
    last: Optional[int]
    settled: Optional[bool]
    state: Any
    batchable: Optional[bool]


class Detach(Composite):
    CODE, NAME = 0x16, "amqp:detach:list"
    FIELDS = _fields(("handle", _uint), ("closed", None), ("error", _composite))
    MANDATORY = ("handle",)
    __slots__ = tuple(n for n, _ in FIELDS)
    handle: int
    closed: Optional[bool]
    error: Any


class End(Composite):
    CODE, NAME = 0x17, "amqp:end:list"
    FIELDS = _fields(("error", _composite))
    __slots__ = tuple(n for n, _ in FIELDS)
    error: Any


class Close(Composite):
    CODE, NAME = 0x18, "amqp:close:list"
    FIELDS = _fields(("error", _composite))
    __slots__ = tuple(n for n, _ in FIELDS)
    error: Any


class Error(Composite):
    CODE, NAME = 0x1D, "amqp:error:list"
    FIELDS = _fields(("condition", _symbol), ("description", None), ("info", None))
    MANDATORY = ("condition",)
    __slots__ = tuple(n for n, _ in FIELDS)
    condition: str
    description: Optional[str]
    info: Optional[Dict[Any, Any]]


# -- link terminus and delivery states (part 3, 3.4 and 3.5) ----------------------------------


class Source(Composite):
    CODE, NAME = 0x28, "amqp:source:list"
    FIELDS = _fields(("address", None), ("durable", _uint), ("expiry_policy", _symbol), ("timeout", _uint),
                     ("dynamic", None), ("dynamic_node_properties", None), ("distribution_mode", _symbol),
                     ("filter", None), ("default_outcome", _composite), ("outcomes", symbols),
                     ("capabilities", symbols))
    __slots__ = tuple(n for n, _ in FIELDS)
    address: Optional[str]


class Target(Composite):
    CODE, NAME = 0x29, "amqp:target:list"
    FIELDS = _fields(("address", None), ("durable", _uint), ("expiry_policy", _symbol), ("timeout", _uint),
                     ("dynamic", None), ("dynamic_node_properties", None), ("capabilities", symbols))
    __slots__ = tuple(n for n, _ in FIELDS)
    address: Optional[str]


class Received(Composite):
    CODE, NAME = 0x23, "amqp:received:list"
    FIELDS = _fields(("section_number", _uint), ("section_offset", _ulong))
    __slots__ = tuple(n for n, _ in FIELDS)


class Accepted(Composite):
    CODE, NAME = 0x24, "amqp:accepted:list"
    __slots__ = ()


class Rejected(Composite):
    CODE, NAME = 0x25, "amqp:rejected:list"
    FIELDS = _fields(("error", _composite))
    __slots__ = tuple(n for n, _ in FIELDS)
    error: Any


class Released(Composite):
    CODE, NAME = 0x26, "amqp:released:list"
    __slots__ = ()


class Modified(Composite):
    CODE, NAME = 0x27, "amqp:modified:list"
    FIELDS = _fields(("delivery_failed", None), ("undeliverable_here", None), ("message_annotations", None))
    __slots__ = tuple(n for n, _ in FIELDS)
    delivery_failed: Optional[bool]
    undeliverable_here: Optional[bool]


# -- SASL (part 5, 5.3.3) ---------------------------------------------------------------------


class SaslMechanisms(Composite):
    CODE, NAME = 0x40, "amqp:sasl-mechanisms:list"
    FIELDS = _fields(("sasl_server_mechanisms", symbols),)
    MANDATORY = ("sasl_server_mechanisms",)
    __slots__ = tuple(n for n, _ in FIELDS)
    sasl_server_mechanisms: Any


class SaslInit(Composite):
    CODE, NAME = 0x41, "amqp:sasl-init:list"
    FIELDS = _fields(("mechanism", _symbol), ("initial_response", None), ("hostname", None))
    MANDATORY = ("mechanism",)
    __slots__ = tuple(n for n, _ in FIELDS)
    mechanism: str
    initial_response: Optional[bytes]
    hostname: Optional[str]


class SaslChallenge(Composite):
    CODE, NAME = 0x42, "amqp:sasl-challenge:list"
    FIELDS = _fields(("challenge", None),)
    MANDATORY = ("challenge",)
    __slots__ = tuple(n for n, _ in FIELDS)
    challenge: bytes


class SaslResponse(Composite):
    CODE, NAME = 0x43, "amqp:sasl-response:list"
    FIELDS = _fields(("response", None),)
    MANDATORY = ("response",)
    __slots__ = tuple(n for n, _ in FIELDS)
    response: bytes


class SaslOutcome(Composite):
    CODE, NAME = 0x44, "amqp:sasl-outcome:list"
    FIELDS = _fields(("code", _ubyte), ("additional_data", None))
    MANDATORY = ("code",)
    __slots__ = tuple(n for n, _ in FIELDS)
    code: int
    additional_data: Optional[bytes]


PERFORMATIVES: Tuple[Type[Composite], ...] = (
    Open, Begin, Attach, Flow, Transfer, Disposition, Detach, End, Close)
SASL_FRAMES: Tuple[Type[Composite], ...] = (
    SaslMechanisms, SaslInit, SaslChallenge, SaslResponse, SaslOutcome)
_COMPOSITES: Tuple[Type[Composite], ...] = PERFORMATIVES + SASL_FRAMES + (
    Error, Source, Target, Received, Accepted, Rejected, Released, Modified)
_BY_DESCRIPTOR: Dict[Any, Type[Composite]] = {}
for _cls in _COMPOSITES:
    _BY_DESCRIPTOR[_cls.CODE] = _cls
    _BY_DESCRIPTOR[_cls.NAME] = _cls


def composite_of(value: Any, expected: Tuple[Type[Composite], ...] = _COMPOSITES) -> Any:
    """The :class:`Composite` a described value stands for, checked against ``expected``.

    A value that is not one of them is returned unchanged when ``expected``
    is every known composite (an unknown terminus or outcome is carried
    through); it is a decode error otherwise.
    """
    if isinstance(value, Described):
        cls = _BY_DESCRIPTOR.get(value.descriptor)
        if cls is not None and cls in expected:
            instance = cls.from_fields(value.value)
            for name, wrap in cls.FIELDS:  # nested composites (source, error, state)
                if wrap is _composite:
                    inner = getattr(instance, name)
                    if isinstance(inner, Described):
                        object.__setattr__(instance, name, composite_of(inner))
            return instance
    if expected is _COMPOSITES:
        return value
    names = "/".join(c.__name__ for c in expected)
    raise AmqpDecodeError(f"expected {names}, got {value!r:.80}")


# -- frames ---------------------------------------------------------------------------------


class Frame(Record):
    """One frame: ``body`` is the performative (``None`` for a heartbeat), ``payload``
    the bytes after it (a transfer's message data)."""

    __slots__ = ("type", "channel", "body", "payload")
    type: Final[int]
    channel: Final[int]
    body: Final[Any]
    payload: Final[bytes]

    def __init__(self, type: int, channel: int, body: Any, payload: bytes = b"") -> None:
        self.type = type
        self.channel = channel
        self.body = body
        self.payload = payload


def encode_frame(channel: int, body: Optional[Composite], payload: bytes = b"", frame_type: int = FRAME_AMQP) -> bytes:
    """The bytes of one frame (``body`` ``None``: an empty heartbeat frame)."""
    raw = body.encode() if body is not None else b""
    return _frame_header.pack(8 + len(raw) + len(payload), 2, frame_type, channel) + raw + payload


HEARTBEAT = encode_frame(0, None)


def encode_transfer_frame(channel: int, handle: int, delivery_id: int, tag: bytes, settled: bool, more: bool,
                          payload: bytes) -> bytes:
    """``encode_frame(channel, Transfer(handle, delivery_id, tag, 0, settled, more), payload)``,
    the same bytes without building the performative: the first frame of every delivery
    we send goes through here (the generic encoder cost more than the rest of a send)."""
    fields = b"".join((encode(UInt(handle)), encode(UInt(delivery_id)), encode(bytes(tag)), b"\x43",
                       b"\x41" if settled else b"\x42", b"\x41" if more else b"\x42"))
    if len(fields) < 255:   # list8: size (count byte included) and count in a byte each
        raw = b"\x00\x53\x14\xc0" + bytes((len(fields) + 1, 6)) + fields
    else:
        raw = b"\x00\x53\x14\xd0" + struct.pack(">II", len(fields) + 4, 6) + fields
    return _frame_header.pack(8 + len(raw) + len(payload), 2, FRAME_AMQP, channel) + raw + payload


def parse_frame(buf: Buffer, max_frame_size: int, sasl: bool = False) -> Optional[Tuple[Frame, int]]:
    """Parse the frame at the start of ``buf``: ``(Frame, consumed)`` or ``None`` for more bytes.

    Raises :class:`AmqpProtocolError` (framing-error) for a bad header and
    :class:`AmqpDecodeError` for a body that is not one performative.
    """
    if len(buf) < 8:
        return None
    size, doff, frame_type, channel = _frame_header.unpack_from(buf, 0)
    if size < 8 or doff < 2 or doff * 4 > size:
        raise AmqpProtocolError(FRAMING_ERROR, f"bad frame header: size {size}, data offset {doff}")
    if size > max_frame_size:
        raise AmqpProtocolError(FRAMING_ERROR, f"frame of {size} bytes exceeds max-frame-size {max_frame_size}")
    expected_type = FRAME_SASL if sasl else FRAME_AMQP
    if frame_type != expected_type:
        raise AmqpProtocolError(FRAMING_ERROR, f"frame type {frame_type} where {expected_type} was due")
    if len(buf) < size:
        return None
    start = doff * 4
    if start == size:
        return Frame(frame_type, channel, None), size
    data = bytes(buf[:size])  # a copy: the caller trims its buffer, even after an error
    value, end = decode_value(data, start)
    body = composite_of(value, SASL_FRAMES if sasl else PERFORMATIVES)
    payload = data[end:] if end < size else b""
    if payload and not isinstance(body, Transfer):
        raise AmqpProtocolError(FRAMING_ERROR, f"{len(payload)} bytes after a {type(body).__name__}")
    return Frame(frame_type, channel, body, payload), size


def parse_protocol_header(buf: Buffer) -> Optional[bytes]:
    """The 8-byte protocol header at the start of ``buf`` (``None``: need more), checked."""
    if len(buf) < 8:
        if bytes(buf[:4]) != b"AMQP"[:len(buf[:4])]:
            raise AmqpProtocolError(FRAMING_ERROR, f"not an AMQP peer: {bytes(buf)!r}")
        return None
    header = bytes(buf[:8])
    if header[:4] != b"AMQP":
        raise AmqpProtocolError(FRAMING_ERROR, f"not an AMQP peer: {header!r}")
    return header
