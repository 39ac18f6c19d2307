"""iofogd.ws.frames: vectors fed whole, byte by byte and with trailing bytes; one test per rule."""
from __future__ import annotations

import struct

import pytest

from iofogd.errors import MessageTooBig, ProtocolError
from iofogd.ws.frames import (
    Close,
    CloseCode,
    Frame,
    Opcode,
    apply_mask,
    close_code_for,
    parse_frame,
    parse_header,
    serialize_frame,
)
from tests.vectors import FRAMES, MASK_5_7, FrameVector

LIMIT = 1 << 20


@pytest.mark.parametrize("vec", FRAMES, ids=lambda v: v.name)
def test_vector_whole(vec: FrameVector) -> None:
    assert parse_frame(vec.data, masked=vec.masked, max_size=LIMIT) == (vec.frame, len(vec.data))


@pytest.mark.parametrize("vec", FRAMES, ids=lambda v: v.name)
def test_vector_byte_by_byte(vec: FrameVector) -> None:
    data = vec.data
    if len(data) > 1000:  # the header and a few payload bytes, then all of it
        cuts = list(range(1, 20)) + [len(data) - 1]
    else:
        cuts = list(range(len(data)))
    for n in cuts:
        assert parse_frame(data[:n], masked=vec.masked, max_size=LIMIT) is None, n
    assert parse_frame(bytearray(data), masked=vec.masked, max_size=LIMIT) == (vec.frame, len(data))


@pytest.mark.parametrize("vec", FRAMES, ids=lambda v: v.name)
def test_vector_with_trailing_bytes(vec: FrameVector) -> None:
    buf = vec.data + b"\x81\x05Hel"
    assert parse_frame(memoryview(buf), masked=vec.masked, max_size=LIMIT) == (vec.frame, len(vec.data))


@pytest.mark.parametrize("vec", FRAMES, ids=lambda v: v.name)
def test_vector_serializes_to_the_same_bytes(vec: FrameVector) -> None:
    assert serialize_frame(vec.frame, mask=vec.mask) == vec.data


def test_mask_applied_in_pieces_equals_whole() -> None:
    payload = bytes(range(97))
    whole = apply_mask(payload, MASK_5_7)
    pieces = b"".join(apply_mask(payload[i : i + 7], MASK_5_7, i) for i in range(0, 97, 7))
    assert pieces == whole
    assert apply_mask(whole, MASK_5_7) == payload


def test_rsv_bits_are_parsed_for_the_protocol_to_judge() -> None:
    frame, _ = parse_frame(b"\xf2\x00", masked=False, max_size=LIMIT)  # type: ignore[misc]
    assert (frame.rsv1, frame.rsv2, frame.rsv3) == (True, True, True)


# -- one test per rule, asserting the close code ---------------------------------------


def _code(data: bytes, *, masked: bool = False, max_size: int = LIMIT) -> int:
    with pytest.raises(ProtocolError) as info:
        parse_frame(data, masked=masked, max_size=max_size)
    return info.value.code


@pytest.mark.parametrize("opcode", [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcode_in_the_header_is_1002(opcode: int) -> None:
    # 0xB-0xF are ioFog's payload opcodes; in a frame header they are reserved (RFC 6455 5.2).
    assert _code(bytes((0x80 | opcode, 0x00))) == 1002


def test_unmasked_client_frame_is_1002() -> None:
    assert _code(bytes.fromhex("810548656c6c6f"), masked=True) == 1002


def test_masked_server_frame_is_1002() -> None:
    assert _code(bytes.fromhex("818537fa213d7f9f4d5158"), masked=False) == 1002


def test_non_minimal_16_bit_length_is_1002() -> None:
    assert _code(b"\x82\x7e\x00\x7d" + b"x" * 125) == 1002


def test_non_minimal_64_bit_length_is_1002() -> None:
    assert _code(b"\x82\x7f" + struct.pack("!Q", 0xFFFF)) == 1002


def test_64_bit_length_with_msb_set_is_1002() -> None:
    assert _code(b"\x82\x7f" + struct.pack("!Q", 1 << 63)) == 1002


def test_fragmented_control_frame_is_1002() -> None:
    assert _code(b"\x09\x00") == 1002


def test_control_frame_over_125_bytes_is_1002() -> None:
    assert _code(b"\x89\x7e\x00\x7e" + b"p" * 126) == 1002


def test_declared_length_over_the_limit_is_1009_before_the_payload_arrives() -> None:
    with pytest.raises(MessageTooBig) as info:
        parse_header(b"\x82\x7f" + struct.pack("!Q", 1 << 40), masked=False, max_size=1000)
    assert (info.value.code, info.value.size, info.value.limit) == (1009, 1 << 40, 1000)


def test_close_code_for_maps_every_error_in_one_place() -> None:
    assert close_code_for(ProtocolError(1007, "x")) == 1007
    assert close_code_for(MessageTooBig(2, 1)) == 1009
    assert close_code_for(RuntimeError("bug")) == 1011


def test_serialize_uses_each_length_form_minimally() -> None:
    for n, head in ((125, b"\x82\x7d"), (126, b"\x82\x7e\x00\x7e"), (65536, b"\x82\x7f" + struct.pack("!Q", 65536))):
        assert serialize_frame(Frame(Opcode.BINARY, b"z" * n), mask=None).startswith(head)


def test_close_codes_are_an_enum() -> None:
    assert CloseCode.NORMAL_CLOSURE == 1000 and CloseCode(1011) is CloseCode.INTERNAL_ERROR


def test_close_parse_and_serialize_are_one_object() -> None:
    assert Close.parse(b"") == Close(1005, "")
    assert Close.parse(b"\x03\xe8bye") == Close(1000, "bye")
    assert Close(1001, "bye").serialize() == b"\x03\xe9bye"
    assert Close(1005).serialize() == b""
    for bad, code in ((b"\x03", 1002), (b"\x03\xed", 1002), (b"\x03\xe8\xff", 1007)):
        with pytest.raises(ProtocolError) as info:
            Close.parse(bad)
        assert info.value.code == code
    with pytest.raises(ValueError):
        Close(1006).serialize()
    with pytest.raises(ValueError):
        Close(1000, "x" * 124).serialize()


def test_the_close_that_fails_a_connection() -> None:
    assert Close.failing(ProtocolError(1007, "bad text")) == Close(1007, "bad text")
    assert Close.failing(RuntimeError("secret details")) == Close(1011, "internal error")
    assert len(Close.failing(ProtocolError(1002, "é" * 100)).serialize()) <= 125
