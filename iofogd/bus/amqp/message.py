"""The AMQP 1.0 message format (part 3, 3.2): a bare message and its annotations.

A message is a sequence of sections, each a described value: header,
delivery-annotations, message-annotations, properties, application-properties,
the body (one or more data sections, one or more amqp-sequence sections, or
one amqp-value section), and footer.  :func:`encode_message` writes them in
that order; :func:`decode_message` reads them back and refuses a message whose
sections are out of order, repeated, or mixed in the body (part 3, 3.2).
This module does no I/O.
"""
from __future__ import annotations

from iofogd.bus.amqp.frames import Composite, _fields, _symbol, _ubyte, _uint
from iofogd.bus.amqp.types import Described, Timestamp, ULong, decode_value, encode, skip_value
from iofogd.errors import AmqpDecodeError

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

    Buffer = Union[bytes, bytearray, memoryview]

HEADER, DELIVERY_ANNOTATIONS, MESSAGE_ANNOTATIONS, PROPERTIES = 0x70, 0x71, 0x72, 0x73
APPLICATION_PROPERTIES, DATA, AMQP_SEQUENCE, AMQP_VALUE, FOOTER = 0x74, 0x75, 0x76, 0x77, 0x78
_SYMBOLIC = {
    "amqp:header:list": HEADER, "amqp:delivery-annotations:map": DELIVERY_ANNOTATIONS,
    "amqp:message-annotations:map": MESSAGE_ANNOTATIONS, "amqp:properties:list": PROPERTIES,
    "amqp:application-properties:map": APPLICATION_PROPERTIES, "amqp:data:binary": DATA,
    "amqp:amqp-sequence:list": AMQP_SEQUENCE, "amqp:amqp-value:*": AMQP_VALUE, "amqp:footer:map": FOOTER,
}

BODY_VALUE = "value"
BODY_DATA = "data"
BODY_SEQUENCE = "sequence"


def _timestamp(v: Any) -> Any:
    return Timestamp(v)


class Header(Composite):
    CODE, NAME = HEADER, "amqp:header:list"
    FIELDS = _fields(("durable", None), ("priority", _ubyte), ("ttl", _uint), ("first_acquirer", None),
                     ("delivery_count", _uint))
    __slots__ = tuple(n for n, _ in FIELDS)
    durable: Optional[bool]
    priority: Optional[int]
    ttl: Optional[int]
    first_acquirer: Optional[bool]
    delivery_count: Optional[int]


class Properties(Composite):
    CODE, NAME = PROPERTIES, "amqp:properties:list"
    FIELDS = _fields(("message_id", None), ("user_id", None), ("to", None), ("subject", None),
                     ("reply_to", None), ("correlation_id", None), ("content_type", _symbol),
                     ("content_encoding", _symbol), ("absolute_expiry_time", _timestamp),
                     ("creation_time", _timestamp), ("group_id", None), ("group_sequence", _uint),
                     ("reply_to_group_id", None))
    __slots__ = tuple(n for n, _ in FIELDS)
    message_id: Any
    user_id: Optional[bytes]
    to: Optional[str]
    subject: Optional[str]
    reply_to: Optional[str]
    correlation_id: Any
    content_type: Optional[str]
    content_encoding: Optional[str]
    absolute_expiry_time: Optional[int]
    creation_time: Optional[int]
    group_id: Optional[str]
    group_sequence: Optional[int]
    reply_to_group_id: Optional[str]


class Message:
    """A bare message plus its annotations.

    ``body`` is the amqp-value (``body_kind`` "value"), a list of ``bytes``
    (one per data section, "data") or a list of lists (one per amqp-sequence
    section, "sequence").
    """

    __slots__ = ("header", "delivery_annotations", "message_annotations", "properties",
                 "application_properties", "body", "body_kind", "footer")

    def __init__(
        self,
        body: Any = None,
        body_kind: str = BODY_VALUE,
        *,
        header: Optional[Header] = None,
        delivery_annotations: Optional[Dict[Any, Any]] = None,
        message_annotations: Optional[Dict[Any, Any]] = None,
        properties: Optional[Properties] = None,
        application_properties: Optional[Dict[Any, Any]] = None,
        footer: Optional[Dict[Any, Any]] = None,
    ) -> None:
        self.header = header
        self.delivery_annotations = delivery_annotations
        self.message_annotations = message_annotations
        self.properties = properties
        self.application_properties = application_properties
        self.body = body
        self.body_kind = body_kind
        self.footer = footer

    def __eq__(self, other: object) -> bool:
        return type(other) is Message and all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__ if getattr(self, n) is not None)
        return f"Message({shown})"


def _section(code: int, value: Any) -> bytes:
    return encode(Described(ULong(code), value))


def encode_message(message: Message) -> bytes:
    """The sections of ``message``, in the order part 3, 3.2 prescribes."""
    return encode_head(message) + encode_body(message)


def encode_head(message: Message) -> bytes:
    """The sections before the body (header, annotations, properties, application properties):
    a sender whose messages share them encodes them once (iofogd/bus/router.py)."""
    parts: List[bytes] = []
    if message.header is not None:
        parts.append(message.header.encode())
    if message.delivery_annotations is not None:
        parts.append(_section(DELIVERY_ANNOTATIONS, message.delivery_annotations))
    if message.message_annotations is not None:
        parts.append(_section(MESSAGE_ANNOTATIONS, message.message_annotations))
    if message.properties is not None:
        parts.append(message.properties.encode())
    if message.application_properties is not None:
        parts.append(_section(APPLICATION_PROPERTIES, message.application_properties))
    return b"".join(parts)


def encode_body(message: Message) -> bytes:
    """The body sections and the footer."""
    parts: List[bytes] = []
    if message.body_kind == BODY_VALUE:
        parts.append(_section(AMQP_VALUE, message.body))
    elif message.body_kind == BODY_DATA:
        parts += [_section(DATA, bytes(chunk)) for chunk in message.body]
    elif message.body_kind == BODY_SEQUENCE:
        parts += [_section(AMQP_SEQUENCE, list(seq)) for seq in message.body]
    else:
        raise ValueError(f"unknown body kind {message.body_kind!r}")
    if message.footer is not None:
        parts.append(_section(FOOTER, message.footer))
    return b"".join(parts)


_ORDER = {HEADER: 0, DELIVERY_ANNOTATIONS: 1, MESSAGE_ANNOTATIONS: 2, PROPERTIES: 3,
          APPLICATION_PROPERTIES: 4, DATA: 5, AMQP_SEQUENCE: 5, AMQP_VALUE: 5, FOOTER: 6}
_MAP_SECTIONS = {DELIVERY_ANNOTATIONS, MESSAGE_ANNOTATIONS, APPLICATION_PROPERTIES, FOOTER}


def decode_message(data: Buffer) -> Message:
    """Read a message's sections; every violation of part 3, 3.2 is an AmqpDecodeError."""
    message = Message(None, "")
    for code, v in _sections(data, skip=False):
        if code == HEADER:
            message.header = Header.from_fields(v)
        elif code == PROPERTIES:
            message.properties = Properties.from_fields(v)
        elif code == DELIVERY_ANNOTATIONS:
            message.delivery_annotations = v
        elif code == MESSAGE_ANNOTATIONS:
            message.message_annotations = v
        elif code == APPLICATION_PROPERTIES:
            message.application_properties = v
        elif code == FOOTER:
            message.footer = v
        else:
            _add_body(message, code, v)
    if not message.body_kind:
        message.body_kind = BODY_VALUE  # no body section: an absent amqp-value
    return message


def decode_body(data: Buffer) -> Message:
    """A message with only its body (``body_kind``, ``body``) read, as :func:`decode_message`
    reads it: the other sections are stepped over by their sizes, not decoded (their order
    is checked).  Cheaper for a consumer of the body alone: the router link reads the
    ioMessage JSON of every incoming message this way."""
    message = Message(None, "")
    for code, v in _sections(data, skip=True):
        if code in _BODY_KINDS:
            _add_body(message, code, v)
    if not message.body_kind:
        message.body_kind = BODY_VALUE
    return message


_BODY_KINDS = {DATA: BODY_DATA, AMQP_SEQUENCE: BODY_SEQUENCE, AMQP_VALUE: BODY_VALUE}
_MAP_CODES = {0x40, 0xC1, 0xD1}   # null, map8, map32


def _sections(data: Buffer, skip: bool) -> Iterator[Tuple[int, Any]]:
    """``(section code, value)`` in order, checked against part 3, 3.2; with ``skip``, the
    values of sections other than the body are ``None`` (stepped over, not decoded)."""
    pos = 0
    last = -1
    view = memoryview(data)
    while pos < len(view):
        if view[pos] != 0x00:
            value, _ = decode_value(view, pos)
            raise AmqpDecodeError(f"message section is not a described value: {value!r:.60}")
        descriptor, p = decode_value(view, pos + 1)
        code = _SYMBOLIC.get(descriptor) if isinstance(descriptor, str) else descriptor
        order = _ORDER.get(code) if isinstance(code, int) else None
        if order is None or not isinstance(code, int):
            raise AmqpDecodeError(f"unknown message section {descriptor!r}")
        if order < last or (order == last and order != 5):
            raise AmqpDecodeError(f"message section 0x{code:02x} out of order or repeated")
        last = order
        if skip and code not in _BODY_KINDS:
            if p >= len(view):
                raise AmqpDecodeError(f"message section 0x{code:02x} without a value")
            if code in _MAP_SECTIONS and view[p] not in _MAP_CODES:
                raise AmqpDecodeError(f"message section 0x{code:02x} must be a map")
            pos = skip_value(view, p)
            yield code, None
            continue
        v, pos = decode_value(view, p)
        if code in _MAP_SECTIONS and not (isinstance(v, dict) or v is None):
            raise AmqpDecodeError(f"message section 0x{code:02x} must be a map")
        yield code, v


def _add_body(message: Message, code: int, v: Any) -> None:
    kind = _BODY_KINDS[code]
    if message.body_kind and (message.body_kind != kind or kind == BODY_VALUE):
        raise AmqpDecodeError("a message body mixes section kinds or repeats amqp-value")
    if kind == BODY_VALUE:
        message.body = v
    elif kind == BODY_DATA:
        if not isinstance(v, bytes):
            raise AmqpDecodeError("a data section must be binary")
        message.body = (message.body or []) + [v]
    else:
        if not isinstance(v, list):
            raise AmqpDecodeError("an amqp-sequence section must be a list")
        message.body = (message.body or []) + [v]
    message.body_kind = kind
