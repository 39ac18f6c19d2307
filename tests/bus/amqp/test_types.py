"""The type codec against Qpid Proton's (an independent, C-backed implementation).

Every value is encoded by Proton (``proton.Data``), decoded by ours, encoded by
ours and decoded by Proton again.  Scalars must come out byte for byte as
Proton writes them (both pick the smallest encoding); Proton writes compounds
in their 32-bit forms where we write list8/map8/array8 (both are valid part 1
encodings), so for those the decoded values are compared.
"""
from __future__ import annotations

import math
import uuid
from typing import Any

import pytest

from iofogd.bus.amqp import frames as fr
from iofogd.bus.amqp import types as t
from iofogd.errors import AmqpDecodeError, AmqpEncodeError

proton = pytest.importorskip("proton", reason="python-qpid-proton (the test extra) is not installed")
from proton import Data  # noqa: E402


def proton_encode(value: Any) -> bytes:
    d = Data()
    d.put_object(value)
    return bytes(d.encode())


def proton_decode(data: bytes) -> Any:
    """Proton's reading of ``data``, in the neutral form (Proton's binary values
    are views into the Data object, so they must be copied before it goes)."""
    d = Data()
    d.decode(data)
    d.rewind()
    d.next()
    return neutral_proton(d.get_object())


def neutral_ours(v: Any) -> Any:
    """A library-independent view: (AMQP type name, plain value)."""
    if isinstance(v, t.Described):
        return ("described", neutral_ours(v.descriptor), neutral_ours(v.value))
    if isinstance(v, t.Array):
        return ("array", [neutral_ours(e) for e in v.elements])
    if isinstance(v, list):
        return ("list", [neutral_ours(e) for e in v])
    if isinstance(v, dict):
        return ("map", sorted((repr(neutral_ours(k)), neutral_ours(x)) for k, x in v.items()))
    names = [(bool, "bool"), (t.Symbol, "symbol"), (t.Char, "char"), (str, "string"), (t.UByte, "ubyte"),
             (t.UShort, "ushort"), (t.UInt, "uint"), (t.ULong, "ulong"), (t.Byte, "byte"), (t.Short, "short"),
             (t.Int, "int"), (t.Timestamp, "timestamp"), (int, "long"), (t.Float32, "float"), (float, "double"),
             (t.Decimal32, "decimal32"), (t.Decimal64, "decimal64"), (t.Decimal128, "decimal128"),
             (bytes, "binary"), (uuid.UUID, "uuid"), (type(None), "null")]
    for cls, name in names:
        if isinstance(v, cls):
            if name in ("decimal32", "decimal64"):
                return (name, int.from_bytes(v, "big"))
            if name in ("float", "double") and math.isnan(v):
                return (name, "nan")
            return (name, v if not isinstance(v, (int, float, str, bytes)) or isinstance(v, bool)
                    else type(v).__mro__[-2](v))
    raise AssertionError(f"no neutral form for {v!r}")


def neutral_proton(v: Any) -> Any:
    if isinstance(v, memoryview):  # Proton hands binary out as a memoryview
        return ("binary", bytes(v))
    if isinstance(v, proton.Described):
        return ("described", neutral_proton(v.descriptor), neutral_proton(v.value))
    if isinstance(v, proton.Array):
        return ("array", [neutral_proton(e) for e in v.elements])
    if isinstance(v, list):
        return ("list", [neutral_proton(e) for e in v])
    if isinstance(v, dict):
        return ("map", sorted((repr(neutral_proton(k)), neutral_proton(x)) for k, x in v.items()))
    names = [(bool, "bool"), (proton.symbol, "symbol"), (proton.char, "char"), (str, "string"),
             (proton.ubyte, "ubyte"), (proton.ushort, "ushort"), (proton.uint, "uint"), (proton.ulong, "ulong"),
             (proton.byte, "byte"), (proton.short, "short"), (proton.int32, "int"), (proton.timestamp, "timestamp"),
             (proton.decimal32, "decimal32"), (proton.decimal64, "decimal64"), (int, "long"),
             (proton.float32, "float"), (float, "double"), (proton.decimal128, "decimal128"), (bytes, "binary"),
             (uuid.UUID, "uuid"), (type(None), "null")]
    for cls, name in names:
        if isinstance(v, cls):
            if name in ("float", "double") and math.isnan(v):
                return (name, "nan")
            return (name, v if not isinstance(v, (int, float, str, bytes)) or isinstance(v, bool)
                    else type(v).__mro__[-2](v))
    raise AssertionError(f"no neutral form for {v!r}")


U = uuid.UUID("12345678-1234-5678-1234-567812345678")
SCALARS = [
    None, True, False,
    proton.ubyte(0), proton.ubyte(255), proton.ushort(0), proton.ushort(65535),
    proton.uint(0), proton.uint(7), proton.uint(255), proton.uint(256), proton.uint(2**32 - 1),
    proton.ulong(0), proton.ulong(1), proton.ulong(255), proton.ulong(256), proton.ulong(2**64 - 1),
    proton.byte(-128), proton.byte(127), proton.short(-32768), proton.short(32767),
    proton.int32(0), proton.int32(-128), proton.int32(127), proton.int32(128), proton.int32(-2**31),
    0, -128, 127, 128, -129, 2**63 - 1, -2**63,
    proton.float32(1.5), proton.float32(-0.0), proton.float32(float("inf")), 1.25, -1e300, float("nan"),
    proton.decimal32(0x3040000A), proton.decimal64(0x31C000000000000A), proton.decimal128(b"\x30" * 16),
    proton.char("a"), proton.char("\U0001F600"),
    proton.timestamp(0), proton.timestamp(1764650000123), proton.timestamp(-1),
    U,
    b"", b"\x00\xff", b"x" * 255, b"y" * 256, b"z" * 70000,
    "", "héllo ✓", "s" * 255, "s" * 256,
    proton.symbol(""), proton.symbol("amqp:accepted:list"), proton.symbol("q" * 300),
]
COMPOUNDS = [
    [], [1, "a", None, [True, []]], list(range(300)), ["x" * 300],
    {}, {proton.symbol("k"): 1, "s": [1, 2]}, {i: str(i) for i in range(200)},
    proton.Array(proton.UNDESCRIBED, Data.SYMBOL, proton.symbol("a"), proton.symbol("bb")),
    proton.Array(proton.UNDESCRIBED, Data.INT, proton.int32(1), proton.int32(-2), proton.int32(3)),
    proton.Array(proton.UNDESCRIBED, Data.ULONG, proton.ulong(1), proton.ulong(2**40)),
    proton.Array(proton.UNDESCRIBED, Data.STRING, "x" * 300),
    proton.Array(proton.UNDESCRIBED, Data.BOOL, True, False),
    proton.Array(proton.UNDESCRIBED, Data.UUID, U, U),
    proton.Array(proton.ulong(0x24), Data.LIST, [], [1]),
    proton.Described(proton.ulong(0x10), ["container", None, proton.uint(512)]),
    proton.Described(proton.symbol("com.example:thing"), {"a": b"b"}),
    proton.Described(proton.ulong(0x77), proton.Described(proton.ulong(1), "nested")),
]


@pytest.mark.parametrize("value", SCALARS, ids=lambda v: f"{type(v).__name__}:{str(v)[:20]}")
def test_scalars_are_byte_exact_both_ways(value: Any) -> None:
    wire = proton_encode(value)
    ours = t.decode(wire)
    assert neutral_ours(ours) == neutral_proton(value)
    assert t.encode(ours) == wire
    assert proton_decode(t.encode(ours)) == neutral_proton(value)


@pytest.mark.parametrize("value", COMPOUNDS, ids=lambda v: f"{type(v).__name__}:{str(v)[:20]}")
def test_compounds_round_trip_through_both(value: Any) -> None:
    wire = proton_encode(value)
    ours = t.decode(wire)
    assert neutral_ours(ours) == neutral_proton(value)
    again = t.encode(ours)
    assert proton_decode(again) == neutral_proton(value)
    assert neutral_ours(t.decode(again)) == neutral_ours(ours)


def test_we_accept_the_compact_forms_proton_never_writes() -> None:
    assert t.decode(bytes.fromhex("45")) == []
    assert t.decode(bytes.fromhex("c0080355015502a30161")) == [1, 2, t.Symbol("a")]
    assert t.decode(bytes.fromhex("c1050241a10161")) == {True: "a"}
    assert t.decode(b"\xe0\x05\x02\xa3\x01a\x00") == t.Array(t.SYM8, [t.Symbol("a"), t.Symbol("")])
    assert t.decode(b"\x56\x01") is True and t.decode(b"\x56\x00") is False
    assert t.decode(b"\x43") == 0 and type(t.decode(b"\x43")) is t.UInt
    assert t.decode(b"\x44") == 0 and type(t.decode(b"\x44")) is t.ULong
    # What we write is what Proton reads.
    assert proton_decode(t.encode([1, t.Symbol("a")])) == neutral_proton([1, proton.symbol("a")])
    assert proton_decode(t.encode({t.Symbol("k"): [t.UInt(1)]})) == neutral_proton({proton.symbol("k"): [proton.uint(1)]})


@pytest.mark.parametrize("data, message", [
    (b"", "nothing at offset"),
    (b"\x01", "unknown format code 0x01"),
    (b"\xa1\x05ab", "truncated"),
    (b"\xb1\xff\xff\xff\xffab", "truncated"),
    (b"\xa1\x02\xff\xfe", "invalid UTF-8"),
    (b"\xa3\x01\xe9", "ASCII"),
    (b"\x56\x02", "boolean byte"),
    (b"\x73\x00\x11\x00\x00", "not a Unicode scalar"),
    (b"\x73\x00\x00\xd8\x00", "not a Unicode scalar"),
    (b"\xc0\x01\x05", "cannot fit"),  # 5 elements in 0 bytes
    (b"\xd0\x00\x00\x00\x04\xff\xff\xff\xff", "cannot fit"),
    (b"\xc0\x04\x01\x55\x01\x40", "does not match"),  # size says 4, one 2-byte element
    (b"\xc0\x02\x01\xa1\x05abcde", "runs past"),
    (b"\xc1\x03\x01\x55\x01", "odd number"),
    (b"\xc1\x05\x02\xc0\x01\x00\x40", "not usable"),  # a list as a map key
    (b"\xe0\x03\x01\x01\x00", "unknown array element"),
    (b"\x00" * 40 + b"\x40", "nested too deeply"),
    (b"\x40\x40", "bytes left"),
])
def test_malformed_encodings_are_clear_errors(data: bytes, message: str) -> None:
    with pytest.raises(AmqpDecodeError, match=message):
        t.decode(data)


@pytest.mark.parametrize("make", [
    lambda: t.encode(object()), lambda: t.UInt(-1), lambda: t.UByte(256), lambda: t.encode(2**63),
    lambda: t.encode(t.Symbol("é")), lambda: t.Decimal32(b"abc"),
    lambda: t.encode(t.Array(t.INT, ["x"])), lambda: t.encode(t.Array(t.DESCRIBED, [1])),
])
def test_values_no_amqp_type_carries_are_encode_errors(make: Any) -> None:
    with pytest.raises(AmqpEncodeError):
        make()


@pytest.mark.parametrize("tag", [b"", b"\0" * 8, b"x" * 32, b"y" * 240, b"z" * 300])
def test_the_transfer_fast_path_writes_the_generic_encoders_bytes(tag: bytes) -> None:
    for handle, delivery_id in [(0, 0), (1, 255), (255, 256), (256, 70000), (0xFFFFFFFF, 0xFFFFFFFF)]:
        for settled, more, channel in [(False, False, 0), (True, False, 1), (False, True, 300)]:
            generic = fr.encode_frame(channel, fr.Transfer(handle, delivery_id, tag, 0, settled, more), b"body")
            assert fr.encode_transfer_frame(channel, handle, delivery_id, tag, settled, more, b"body") == generic
