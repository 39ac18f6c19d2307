"""The ioMessage codec against byte-exact vectors (tests/vectors.py) and the published Python SDK."""
from __future__ import annotations

import json

import pytest

from iofogd.bus import message as m
from iofogd.errors import MessageError
from tests.vectors import IOMESSAGE_JSON_FULL, IOMESSAGES, IoMessageVector

iomessage_module = pytest.importorskip("iofog.microservices.iomessage", reason="the Python SDK is not installed")

NAMES = [v.name for v in IOMESSAGES]


@pytest.mark.parametrize("vector", IOMESSAGES, ids=NAMES)
def test_decode_whole(vector: IoMessageVector) -> None:
    assert m.decode(vector.binary) == m.IoMessage(**vector.fields)


@pytest.mark.parametrize("vector", IOMESSAGES, ids=NAMES)
def test_decode_with_trailing_bytes(vector: IoMessageVector) -> None:
    data = vector.binary + b"\x0b\xff trailing"
    assert m.message_length(data) == len(vector.binary)
    assert m.decode(data) == m.IoMessage(**vector.fields)


@pytest.mark.parametrize("vector", IOMESSAGES, ids=NAMES)
def test_every_prefix_is_incomplete_never_wrong(vector: IoMessageVector) -> None:
    """Fed byte by byte: until the last byte, the length is unknown or larger, and decode refuses."""
    for n in range(len(vector.binary)):
        prefix = vector.binary[:n]
        length = m.message_length(prefix)
        assert length is None or length > n
        with pytest.raises(MessageError):
            m.decode(prefix)
    assert m.message_length(vector.binary) == len(vector.binary)


@pytest.mark.parametrize("vector", [v for v in IOMESSAGES if v.agent_form], ids=lambda v: v.name)
def test_encode_is_the_agents_bytes(vector: IoMessageVector) -> None:
    assert m.encode(m.IoMessage(**vector.fields)) == vector.binary


@pytest.mark.parametrize("vector", [v for v in IOMESSAGES if v.json], ids=lambda v: v.name)
def test_sdk_json_decodes(vector: IoMessageVector) -> None:
    assert m.from_json(json.loads(vector.json)) == m.IoMessage(**vector.fields)


def test_json_form_is_upstreams_exactly() -> None:
    full = next(v for v in IOMESSAGES if v.name.startswith("agent: every field, fixed"))
    msg = m.IoMessage(**full.fields)
    assert json.dumps(m.to_json(msg), separators=(",", ":")).encode() == IOMESSAGE_JSON_FULL
    assert list(m.to_json(m.IoMessage())) == list(m.JSON_KEYS) and len(m.JSON_KEYS) == 20
    empty = m.to_json(m.IoMessage())
    assert empty["contextdata"] == "" and empty["difficultytarget"] == 0 and empty["version"] == 4
    assert m.from_json(json.loads(IOMESSAGE_JSON_FULL)) == msg


def test_base64_keeps_its_padding() -> None:
    assert m.to_json(m.IoMessage(contentdata=b"a"))["contentdata"] == "YQ=="


def test_sdk_decodes_what_we_encode() -> None:
    """The SDK's own decoder (numbers at any width) reads our fixed-width numbers."""
    full = next(v for v in IOMESSAGES if v.name.startswith("agent: every field, fixed"))
    sdk = iomessage_module.IoMessage.from_bytearray(bytearray(m.encode(m.IoMessage(**full.fields))))
    assert (sdk.sequencenumber, sdk.sequencetotal, sdk.priority, sdk.timestamp) == (300, 70000, 5, 1700000000123)
    assert (sdk.chainposition, sdk.difficultytarget) == (1, 2)
    assert bytes(sdk.contentdata) == b"body" and bytes(sdk.contextdata) == b"ctx"


def test_sdk_encoder_round_trip_random() -> None:
    """Many messages through the SDK's encoder decode to the same fields here."""
    import random
    rnd = random.Random(13)
    for _ in range(300):
        sdk = iomessage_module.IoMessage()
        fields = dict(
            publisher="".join(rnd.choice("abcXYZ019") for _ in range(rnd.randrange(0, 40))),
            sequencenumber=rnd.choice([0, 1, 255, 256, 70000, 2**31 - 1]),
            priority=rnd.choice([0, 1, 127]),
            timestamp=rnd.choice([0, 1, 1700000000123, 2**63 - 1]),
            chainposition=rnd.choice([0, 65535, 2**40]),
            infotype="t" * rnd.randrange(0, 200),
        )
        for key, value in fields.items():
            setattr(sdk, key, value)
        sdk.contentdata = "x" * rnd.randrange(0, 300)
        sdk.contextdata = ""
        ours = m.decode(bytes(sdk.to_bytearray()))
        for key, value in fields.items():
            assert getattr(ours, key) == value, key
        assert ours.contentdata == sdk.contentdata.encode()


def test_non_ascii_and_long_fields_survive() -> None:
    """Fixed on purpose: UTF-8 byte lengths, read unsigned (Java corrupted both)."""
    msg = m.IoMessage(publisher="é" * 100, infotype="x" * 200, tag="ü" * 1000, contentdata=bytes(range(256)))
    data = m.encode(msg)
    assert data[10] == 200 and data[23] == 200   # 1-byte lengths >= 128
    assert m.decode(data) == msg


def test_oversized_field_is_refused_not_truncated() -> None:
    with pytest.raises(MessageError, match="publisher is 256 bytes"):
        m.encode(m.IoMessage(publisher="p" * 256))


def test_one_byte_zero_and_wide_numbers_decode() -> None:
    """Go and Python write a zero as one 0x00 byte; a number may come at any width up to 8."""
    header = bytearray(m.encode(m.IoMessage()))
    header[6] = 1  # sequence number: one byte
    header[9] = 2  # timestamp: two bytes
    assert m.decode(bytes(header) + b"\x00\x01\x02") == m.IoMessage(timestamp=258)
    header[9] = 9
    with pytest.raises(MessageError, match="at most 8"):
        m.decode(bytes(header) + b"\x00" + b"\x01" * 9)


def test_bad_version_is_refused() -> None:
    with pytest.raises(MessageError, match="version 3"):
        m.decode(b"\x00\x03" + b"\x00" * 31)


@pytest.mark.parametrize("obj, error", [
    ({"publisher": 5}, "publisher must be a string"),
    ({"sequencenumber": "1"}, "sequencenumber must be an integer"),
    ({"contentdata": "not base64!"}, "contentdata is not valid base64"),
    ({"contentdata": 3}, "contentdata must be a base64 string"),
    ({"version": "4"}, "version must be an integer"),
])
def test_from_json_refuses_wrong_types(obj: dict, error: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(MessageError, match=error):
        m.from_json(obj)


def test_from_json_takes_null_data_as_empty_and_wraps_priority() -> None:
    msg = m.from_json({"contentdata": None, "priority": 200})
    assert msg.contentdata == b"" and msg.priority == -56   # Java's (byte) cast


def test_stamped_sets_id_timestamp_version() -> None:
    msg = m.stamped(m.IoMessage(id="x", timestamp=5, version=0), "ab" * 16, 1234)
    assert (msg.id, msg.timestamp, msg.version) == ("ab" * 16, 1234, 4)
