"""The AMQP 1.0 type system (OASIS AMQP 1.0 part 1): encode and decode, nothing else.

Theory of operation
-------------------
Every AMQP value is a constructor byte (the format code) followed by its
body; a described value is ``0x00``, a descriptor, then the value.  Python
values map onto AMQP types as Qpid Proton's Python binding maps them, so a
decoded value re-encodes to the same AMQP type:

=================  ==========================================================
AMQP               Python
=================  ==========================================================
null               ``None``
boolean            ``bool``
ubyte .. ulong     :class:`UByte` :class:`UShort` :class:`UInt` :class:`ULong`
byte .. int        :class:`Byte` :class:`Short` :class:`Int`
long               ``int`` (or :class:`Long`)
float / double     :class:`Float32` / ``float``
decimal32/64/128   :class:`Decimal32` .. (opaque IEEE 754 bytes: carried, not computed)
char               :class:`Char` (one code point)
timestamp          :class:`Timestamp` (ms since the epoch)
uuid               ``uuid.UUID``
binary / string    ``bytes`` / ``str``
symbol             :class:`Symbol`
list / map         ``list`` / ``dict``
array              :class:`Array` (one element type for every element)
described          :class:`Described`
=================  ==========================================================

:func:`encode` always picks the smallest encoding (``uint0``, ``smallulong``,
``str8``, ``list0``/``list8`` ...), which is what makes encodings comparable
byte for byte with other implementations; :func:`decode` accepts every
encoding part 1 defines.  A malformed or truncated encoding raises
:class:`~iofogd.errors.AmqpDecodeError`; a value that no AMQP type can carry
raises :class:`~iofogd.errors.AmqpEncodeError`.  This module does no I/O.
"""
from __future__ import annotations

import struct
import uuid

from iofogd.errors import AmqpDecodeError, AmqpEncodeError
from iofogd.record import Record

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Final, List, Optional, Tuple, Union

    Buffer = Union[bytes, bytearray, memoryview]
    Decoded = Tuple[Any, int]


# -- the Python side of the typed values ----------------------------------------------


class Symbol(str):
    """An ASCII symbolic value (``sym8``/``sym32``)."""

    __slots__ = ()


class Char(str):
    """A single Unicode code point, sent as UTF-32BE."""

    __slots__ = ()


class _Ranged(int):
    __slots__ = ()
    LOW = 0
    HIGH = 0

    def __new__(cls, value: int) -> Any:
        self = int.__new__(cls, value)
        if not cls.LOW <= self <= cls.HIGH:
            raise AmqpEncodeError(f"{int(self)} is out of range for {cls.__name__}")
        return self


class UByte(_Ranged):
    __slots__ = ()
    HIGH = 0xFF


class UShort(_Ranged):
    __slots__ = ()
    HIGH = 0xFFFF


class UInt(_Ranged):
    __slots__ = ()
    HIGH = 0xFFFFFFFF


class ULong(_Ranged):
    __slots__ = ()
    HIGH = 0xFFFFFFFFFFFFFFFF


class Byte(_Ranged):
    __slots__ = ()
    LOW, HIGH = -0x80, 0x7F


class Short(_Ranged):
    __slots__ = ()
    LOW, HIGH = -0x8000, 0x7FFF


class Int(_Ranged):
    __slots__ = ()
    LOW, HIGH = -0x80000000, 0x7FFFFFFF


class Long(_Ranged):
    __slots__ = ()
    LOW, HIGH = -0x8000000000000000, 0x7FFFFFFFFFFFFFFF


class Timestamp(_Ranged):
    """Milliseconds since the Unix epoch, signed 64 bits."""

    __slots__ = ()
    LOW, HIGH = Long.LOW, Long.HIGH


class Float32(float):
    __slots__ = ()


class _Opaque(bytes):
    SIZE = 0

    def __new__(cls, value: bytes) -> Any:
        self = bytes.__new__(cls, value)
        if len(self) != cls.SIZE:
            raise AmqpEncodeError(f"{cls.__name__} needs {cls.SIZE} bytes, got {len(self)}")
        return self


class Decimal32(_Opaque):
    SIZE = 4


class Decimal64(_Opaque):
    SIZE = 8


class Decimal128(_Opaque):
    SIZE = 16


class Described(Record):
    """A described value: ``descriptor`` is usually a :class:`ULong` or a :class:`Symbol`."""

    __slots__ = ("descriptor", "value")
    descriptor: Final[Any]
    value: Final[Any]

    def __init__(self, descriptor: Any, value: Any) -> None:
        self.descriptor = descriptor
        self.value = value

    def __hash__(self) -> int:  # the value may be a list or a dict
        return hash((self.descriptor, repr(self.value)))


class Array(Record):
    """An AMQP array: ``code`` is the element format code (e.g. :data:`SYM32`);
    ``descriptor``, when set, describes every element (the elements are the
    plain values, as in Proton)."""

    __slots__ = ("code", "elements", "descriptor")
    code: Final[int]
    elements: Final[List[Any]]
    descriptor: Final[Any]

    def __init__(self, code: int, elements: List[Any], descriptor: Any = None) -> None:
        self.code = code
        self.elements = elements
        self.descriptor = descriptor

    def __hash__(self) -> int:
        return hash((self.code, repr(self.elements), self.descriptor))


# -- format codes (part 1, section 1.6) --------------------------------------------------
DESCRIBED = 0x00
NULL = 0x40
TRUE, FALSE, BOOLEAN = 0x41, 0x42, 0x56
UBYTE, USHORT, UINT, SMALLUINT, UINT0 = 0x50, 0x60, 0x70, 0x52, 0x43
ULONG, SMALLULONG, ULONG0 = 0x80, 0x53, 0x44
BYTE, SHORT, INT, SMALLINT, LONG, SMALLLONG = 0x51, 0x61, 0x71, 0x54, 0x81, 0x55
FLOAT, DOUBLE = 0x72, 0x82
DECIMAL32, DECIMAL64, DECIMAL128 = 0x74, 0x84, 0x94
CHAR, TIMESTAMP, UUID = 0x73, 0x83, 0x98
VBIN8, VBIN32, STR8, STR32, SYM8, SYM32 = 0xA0, 0xB0, 0xA1, 0xB1, 0xA3, 0xB3
LIST0, LIST8, LIST32 = 0x45, 0xC0, 0xD0
MAP8, MAP32 = 0xC1, 0xD1
ARRAY8, ARRAY32 = 0xE0, 0xF0

_u8 = struct.Struct(">B")
_u16 = struct.Struct(">H")
_u32 = struct.Struct(">I")
_u64 = struct.Struct(">Q")
_i8 = struct.Struct(">b")
_i16 = struct.Struct(">h")
_i32 = struct.Struct(">i")
_i64 = struct.Struct(">q")
_f32 = struct.Struct(">f")
_f64 = struct.Struct(">d")
_u8u8 = struct.Struct(">BB")
_u32u32 = struct.Struct(">II")


# -- decoding ---------------------------------------------------------------------------


def _need(buf: Buffer, pos: int, size: int) -> None:
    if pos + size > len(buf):
        raise AmqpDecodeError(f"truncated value: {size} bytes needed at offset {pos}, {len(buf) - pos} left")


def _fixed(st: struct.Struct, wrap: Callable[[Any], Any]) -> Callable[[Buffer, int], Decoded]:
    size = st.size

    def body(buf: Buffer, pos: int) -> Decoded:
        _need(buf, pos, size)
        return wrap(st.unpack_from(buf, pos)[0]), pos + size

    return body


def _constant(value: Any) -> Callable[[Buffer, int], Decoded]:
    def body(buf: Buffer, pos: int) -> Decoded:
        return value, pos

    return body


def _boolean(buf: Buffer, pos: int) -> Decoded:
    _need(buf, pos, 1)
    b = buf[pos]
    if b > 1:
        raise AmqpDecodeError(f"boolean byte must be 0 or 1, got {b}")
    return b == 1, pos + 1


def _variable(st: struct.Struct, kind: str) -> Callable[[Buffer, int], Decoded]:
    head = st.size

    def body(buf: Buffer, pos: int) -> Decoded:
        _need(buf, pos, head)
        size = st.unpack_from(buf, pos)[0]
        start = pos + head
        _need(buf, start, size)
        raw = bytes(buf[start:start + size])
        if kind == "bin":
            return raw, start + size
        try:
            if kind == "str":
                return raw.decode("utf-8"), start + size
            return Symbol(raw.decode("ascii")), start + size
        except UnicodeDecodeError as exc:
            raise AmqpDecodeError(f"invalid {'UTF-8 string' if kind == 'str' else 'ASCII symbol'}: {exc}") from exc

    return body


def _char(buf: Buffer, pos: int) -> Decoded:
    _need(buf, pos, 4)
    cp = _u32.unpack_from(buf, pos)[0]
    if cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF:
        raise AmqpDecodeError(f"char U+{cp:X} is not a Unicode scalar value")
    return Char(chr(cp)), pos + 4


def _uuid(buf: Buffer, pos: int) -> Decoded:
    _need(buf, pos, 16)
    return uuid.UUID(bytes=bytes(buf[pos:pos + 16])), pos + 16


def _compound_header(buf: Buffer, pos: int, wide: bool) -> Tuple[int, int, int]:
    """(size, count, position after the header) of a list/map/array body, checked."""
    if wide:
        _need(buf, pos, 8)
        size, count = _u32u32.unpack_from(buf, pos)
        head = 4
    else:
        _need(buf, pos, 2)
        size, count = _u8u8.unpack_from(buf, pos)
        head = 1
    if size < head:
        raise AmqpDecodeError(f"compound size {size} is smaller than its count field")
    _need(buf, pos + head, size)
    # Each element takes one byte at least: a count beyond the size is a lie
    # that would otherwise make us loop (or allocate) for nothing.
    if count > size - head:
        raise AmqpDecodeError(f"compound count {count} cannot fit in {size} bytes")
    return size, count, pos + 2 * head


def _list(wide: bool) -> Callable[[Buffer, int], Decoded]:
    def body(buf: Buffer, pos: int) -> Decoded:
        size, count, p = _compound_header(buf, pos, wide)
        end = pos + (4 if wide else 1) + size
        items = []
        for _ in range(count):
            value, p = decode_value(buf, p, end)
            items.append(value)
        if p != end:
            raise AmqpDecodeError(f"list size {size} does not match its {count} elements")
        return items, end

    return body


def _map(wide: bool) -> Callable[[Buffer, int], Decoded]:
    def body(buf: Buffer, pos: int) -> Decoded:
        size, count, p = _compound_header(buf, pos, wide)
        if count % 2:
            raise AmqpDecodeError(f"map with an odd number of elements ({count})")
        end = pos + (4 if wide else 1) + size
        result: Dict[Any, Any] = {}
        for _ in range(count // 2):
            key, p = decode_value(buf, p, end)
            value, p = decode_value(buf, p, end)
            try:
                result[key] = value
            except TypeError as exc:
                raise AmqpDecodeError(f"map key of type {type(key).__name__} is not usable") from exc
        if p != end:
            raise AmqpDecodeError(f"map size {size} does not match its {count} elements")
        return result, end

    return body


def _array(wide: bool) -> Callable[[Buffer, int], Decoded]:
    def body(buf: Buffer, pos: int) -> Decoded:
        size, count, p = _compound_header(buf, pos, wide)
        end = pos + (4 if wide else 1) + size
        descriptor = None
        _need(buf, p, 1)
        code = buf[p]
        p += 1
        if code == DESCRIBED:
            descriptor, p = decode_value(buf, p, end)
            _need(buf, p, 1)
            code = buf[p]
            p += 1
        element = _BODIES.get(code)
        if element is None or code == DESCRIBED:
            raise AmqpDecodeError(f"unknown array element format code 0x{code:02x}")
        elements = []
        for _ in range(count):
            value, p = element(buf, p)
            if p > end:
                raise AmqpDecodeError("array element runs past the array's size")
            elements.append(value)
        if p != end:
            raise AmqpDecodeError(f"array size {size} does not match its {count} elements")
        return Array(code, elements, descriptor), end

    return body


_BODIES: Dict[int, Callable[[Buffer, int], Decoded]] = {
    NULL: _constant(None),
    TRUE: _constant(True),
    FALSE: _constant(False),
    BOOLEAN: _boolean,
    UBYTE: _fixed(_u8, UByte),
    USHORT: _fixed(_u16, UShort),
    UINT: _fixed(_u32, UInt),
    SMALLUINT: _fixed(_u8, UInt),
    UINT0: _constant(UInt(0)),
    ULONG: _fixed(_u64, ULong),
    SMALLULONG: _fixed(_u8, ULong),
    ULONG0: _constant(ULong(0)),
    BYTE: _fixed(_i8, Byte),
    SHORT: _fixed(_i16, Short),
    INT: _fixed(_i32, Int),
    SMALLINT: _fixed(_i8, Int),
    LONG: _fixed(_i64, int),
    SMALLLONG: _fixed(_i8, int),
    FLOAT: _fixed(_f32, Float32),
    DOUBLE: _fixed(_f64, float),
    DECIMAL32: _fixed(struct.Struct("4s"), Decimal32),
    DECIMAL64: _fixed(struct.Struct("8s"), Decimal64),
    DECIMAL128: _fixed(struct.Struct("16s"), Decimal128),
    CHAR: _char,
    TIMESTAMP: _fixed(_i64, Timestamp),
    UUID: _uuid,
    VBIN8: _variable(_u8, "bin"),
    VBIN32: _variable(_u32, "bin"),
    STR8: _variable(_u8, "str"),
    STR32: _variable(_u32, "str"),
    SYM8: _variable(_u8, "sym"),
    SYM32: _variable(_u32, "sym"),
    LIST0: _constant(None),  # replaced below: a fresh list each time
    LIST8: _list(False),
    LIST32: _list(True),
    MAP8: _map(False),
    MAP32: _map(True),
    ARRAY8: _array(False),
    ARRAY32: _array(True),
}
_BODIES[LIST0] = lambda buf, pos: ([], pos)

# Described values nest; a peer could nest them without end.
_MAX_DEPTH = 32


def _value_at(buf: Buffer, pos: int, end: Optional[int], depth: int) -> Tuple[int, int]:
    """``(limit, format code)`` of the value at ``pos``, after the checks every reader makes."""
    limit = len(buf) if end is None else end
    if pos >= limit:
        raise AmqpDecodeError(f"truncated value: nothing at offset {pos}")
    code = buf[pos]
    if code == DESCRIBED and depth >= _MAX_DEPTH:
        raise AmqpDecodeError("described values nested too deeply")
    return limit, code


def decode_value(buf: Buffer, pos: int = 0, end: Optional[int] = None, _depth: int = 0) -> Decoded:
    """Decode the value at ``buf[pos:]``: ``(value, position after it)``.

    ``end`` bounds the value (the enclosing compound's end); the default is the
    end of ``buf``.
    """
    limit, code = _value_at(buf, pos, end, _depth)
    if code == DESCRIBED:
        descriptor, p = decode_value(buf, pos + 1, limit, _depth + 1)
        value, p = decode_value(buf, p, limit, _depth + 1)
        return Described(descriptor, value), p
    body = _BODIES.get(code)
    if body is None:
        raise AmqpDecodeError(f"unknown format code 0x{code:02x} at offset {pos}")
    value, p = body(buf, pos + 1)
    if p > limit:
        raise AmqpDecodeError(f"value at offset {pos} runs past its enclosing compound")
    return value, p


# Bytes after the format code, by its high nibble (part 1, 1.2): fixed widths, then
# variable and compound values whose size follows in 1 or 4 bytes.
_FIXED_WIDTH = {0x4: 0, 0x5: 1, 0x6: 2, 0x7: 4, 0x8: 8, 0x9: 16}
_SIZE_WIDTH = {0xA: 1, 0xC: 1, 0xE: 1, 0xB: 4, 0xD: 4, 0xF: 4}


def skip_value(buf: Buffer, pos: int = 0, end: Optional[int] = None, _depth: int = 0) -> int:
    """The position after the value at ``buf[pos:]``, found by its sizes, not decoded: for a
    reader that needs only part of a message.  A size that runs past ``end`` (the end of
    ``buf`` by default) or an unknown format code is an AmqpDecodeError."""
    limit, code = _value_at(buf, pos, end, _depth)
    if code == DESCRIBED:
        p = skip_value(buf, pos + 1, limit, _depth + 1)
        return skip_value(buf, p, limit, _depth + 1)
    if code not in _BODIES:
        raise AmqpDecodeError(f"unknown format code 0x{code:02x} at offset {pos}")
    nibble = code >> 4
    width = _FIXED_WIDTH.get(nibble)
    if width is not None:
        p = pos + 1 + width
    else:
        size_width = _SIZE_WIDTH[nibble]
        _need(buf, pos + 1, size_width)
        size = buf[pos + 1] if size_width == 1 else _u32.unpack_from(buf, pos + 1)[0]
        p = pos + 1 + size_width + size
    if p > limit:
        raise AmqpDecodeError(f"value at offset {pos} runs past its enclosing compound")
    return p


def decode(data: Buffer) -> Any:
    """Decode exactly one value that fills ``data``."""
    value, end = decode_value(data, 0)
    if end != len(data):
        raise AmqpDecodeError(f"{len(data) - end} bytes left after the value")
    return value


# -- encoding ---------------------------------------------------------------------------


def _enc_int(value: int) -> bytes:
    if -128 <= value <= 127:
        return bytes((SMALLLONG, value & 0xFF))
    try:
        return b"\x81" + _i64.pack(value)
    except struct.error:
        raise AmqpEncodeError(f"{value} does not fit in an AMQP long") from None


def _enc_uint(value: int) -> bytes:
    if value == 0:
        return b"\x43"
    if value < 256:
        return bytes((SMALLUINT, value))
    return b"\x70" + _u32.pack(value)


def _enc_ulong(value: int) -> bytes:
    if value == 0:
        return b"\x44"
    if value < 256:
        return bytes((SMALLULONG, value))
    return b"\x80" + _u64.pack(value)


def _enc_Int(value: int) -> bytes:
    if -128 <= value <= 127:
        return bytes((SMALLINT, value & 0xFF))
    return b"\x71" + _i32.pack(value)


def _enc_variable(small: int, wide: int, raw: bytes) -> bytes:
    n = len(raw)
    if n < 256:
        return bytes((small, n)) + raw
    if n > 0xFFFFFFFF:
        raise AmqpEncodeError(f"{n} bytes do not fit in one AMQP value")
    return bytes((wide,)) + _u32.pack(n) + raw


def _enc_str(value: str) -> bytes:
    return _enc_variable(STR8, STR32, value.encode("utf-8"))


def _enc_sym(value: str) -> bytes:
    try:
        return _enc_variable(SYM8, SYM32, value.encode("ascii"))
    except UnicodeEncodeError:
        raise AmqpEncodeError(f"symbol {value!r} is not ASCII") from None


def _enc_bin(value: bytes) -> bytes:
    return _enc_variable(VBIN8, VBIN32, bytes(value))


def _enc_compound(small: int, wide: int, count: int, body: bytes) -> bytes:
    if len(body) + 1 <= 255 and count <= 255:
        return bytes((small, len(body) + 1, count)) + body
    return bytes((wide,)) + _u32u32.pack(len(body) + 4, count) + body


def _enc_list(value: List[Any]) -> bytes:
    if not value:
        return b"\x45"
    return _enc_compound(LIST8, LIST32, len(value), b"".join([encode(v) for v in value]))


def _enc_map(value: Dict[Any, Any]) -> bytes:
    parts = []
    for k, v in value.items():
        parts.append(encode(k))
        parts.append(encode(v))
    return _enc_compound(MAP8, MAP32, len(parts), b"".join(parts))


def _enc_described(value: Described) -> bytes:
    return b"\x00" + encode(value.descriptor) + encode(value.value)


# Element encoders of arrays: one constructor for all, so fixed widths.
_ARRAY_FIXED: Dict[int, Callable[[Any], bytes]] = {
    BOOLEAN: lambda v: b"\x01" if v else b"\x00",
    UBYTE: _u8.pack, USHORT: _u16.pack, UINT: _u32.pack, ULONG: _u64.pack,
    BYTE: _i8.pack, SHORT: _i16.pack, INT: _i32.pack, LONG: _i64.pack,
    FLOAT: _f32.pack, DOUBLE: _f64.pack, TIMESTAMP: _i64.pack,
    CHAR: lambda v: _u32.pack(ord(v)),
    UUID: lambda v: v.bytes,
    DECIMAL32: bytes, DECIMAL64: bytes, DECIMAL128: bytes,
    NULL: lambda v: b"",
}
_ARRAY_VARIABLE: Dict[int, Tuple[int, int, Callable[[Any], bytes]]] = {
    VBIN8: (VBIN8, VBIN32, bytes), VBIN32: (VBIN8, VBIN32, bytes),
    STR8: (STR8, STR32, lambda v: v.encode("utf-8")), STR32: (STR8, STR32, lambda v: v.encode("utf-8")),
    SYM8: (SYM8, SYM32, lambda v: v.encode("ascii")), SYM32: (SYM8, SYM32, lambda v: v.encode("ascii")),
}
_ARRAY_COMPOUND = {LIST8: LIST32, LIST32: LIST32, LIST0: LIST32, MAP8: MAP32, MAP32: MAP32,
                   ARRAY8: ARRAY32, ARRAY32: ARRAY32}


def _enc_array(value: Array) -> bytes:
    code = value.code
    elements = value.elements
    ctor = b"\x00" + encode(value.descriptor) if value.descriptor is not None else b""
    try:
        if code in _ARRAY_VARIABLE:
            small, wide, raw_of = _ARRAY_VARIABLE[code]
            raws = [raw_of(e) for e in elements]
            if all(len(r) < 256 for r in raws):
                code, body = small, b"".join([bytes((len(r),)) + r for r in raws])
            else:
                code, body = wide, b"".join([_u32.pack(len(r)) + r for r in raws])
        elif code in _ARRAY_FIXED:
            pack = _ARRAY_FIXED[code]
            body = b"".join([pack(e) for e in elements])
        elif code in _ARRAY_COMPOUND:
            code = _ARRAY_COMPOUND[code]
            # Each element is a whole encoding minus its constructor, in the wide form.
            body = b"".join([_wide_body(code, e) for e in elements])
        else:
            raise AmqpEncodeError(f"format code 0x{code:02x} cannot be an array element")
    except (struct.error, UnicodeEncodeError, AttributeError, TypeError) as exc:
        raise AmqpEncodeError(f"array element does not fit format code 0x{code:02x}: {exc}") from exc
    return _enc_compound(ARRAY8, ARRAY32, len(elements), ctor + bytes((code,)) + body)


def _wide_body(code: int, element: Any) -> bytes:
    if code == LIST32:
        parts = [encode(v) for v in element]
    elif code == MAP32:
        parts = []
        for k, v in element.items():
            parts += [encode(k), encode(v)]
    else:
        return _enc_array(element)[1:]  # nested arrays keep their own size form
    body = b"".join(parts)
    return _u32u32.pack(len(body) + 4, len(parts)) + body


_ENCODERS: Dict[type, Callable[[Any], bytes]] = {
    type(None): lambda v: b"\x40",
    bool: lambda v: b"\x41" if v else b"\x42",
    int: _enc_int,
    Long: lambda v: b"\x81" + _i64.pack(v),
    float: lambda v: b"\x82" + _f64.pack(v),
    str: _enc_str,
    bytes: _enc_bin,
    bytearray: _enc_bin,
    memoryview: _enc_bin,
    list: _enc_list,
    tuple: _enc_list,
    dict: _enc_map,
    Symbol: _enc_sym,
    Char: lambda v: b"\x73" + _u32.pack(ord(v)),
    UByte: lambda v: bytes((UBYTE, v)),
    UShort: lambda v: b"\x60" + _u16.pack(v),
    UInt: _enc_uint,
    ULong: _enc_ulong,
    Byte: lambda v: b"\x51" + _i8.pack(v),
    Short: lambda v: b"\x61" + _i16.pack(v),
    Int: _enc_Int,
    Timestamp: lambda v: b"\x83" + _i64.pack(v),
    Float32: lambda v: b"\x72" + _f32.pack(v),
    Decimal32: lambda v: b"\x74" + v,
    Decimal64: lambda v: b"\x84" + v,
    Decimal128: lambda v: b"\x94" + v,
    uuid.UUID: lambda v: b"\x98" + v.bytes,
    Described: _enc_described,
    Array: _enc_array,
}


def encode(value: Any) -> bytes:
    """The smallest AMQP encoding of ``value`` (see the table above)."""
    encoder = _ENCODERS.get(type(value))
    if encoder is None:
        raise AmqpEncodeError(f"no AMQP type for a Python {type(value).__name__}")
    return encoder(value)


def symbols(values: Union[None, str, List[str], Tuple[str, ...]]) -> Any:
    """A multiple-symbol field (capabilities, locales): a single symbol or an array of them."""
    if values is None or isinstance(values, Array):
        return values
    if isinstance(values, str):
        return Symbol(values)
    return Array(SYM8, [Symbol(v) for v in values])


def symbol_list(value: Any) -> List[str]:
    """The symbols of a multiple-symbol field as received (single, array or absent)."""
    if value is None:
        return []
    if isinstance(value, Array):
        return [str(v) for v in value.elements]
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)]
