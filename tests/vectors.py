"""Byte-exact vectors, each with its source.

WebSocket frames: RFC 6455 section 5.7 ("Examples") verbatim, plus our own for
the length forms and masking directions the RFC does not show, and the ioFog
envelopes of docs/websocket.md#opcodes, #message-socket (docs/compatibility.md#clients).
"""
from __future__ import annotations

import dataclasses
from typing import Tuple

from iofogd.ws.frames import Frame, Opcode

MASK_5_7 = bytes.fromhex("37fa213d")  # the masking key of RFC 6455 section 5.7


@dataclasses.dataclass(frozen=True)
class FrameVector:
    name: str
    source: str
    data: bytes
    masked: bool  # True: a client-to-server frame (section 5.1)
    frame: Frame

    @property
    def mask(self) -> bytes | None:
        """The masking key: the 4 bytes right before the payload."""
        end = len(self.data) - len(self.frame.payload)
        return self.data[end - 4 : end] if self.masked else None


RFC = "RFC 6455 section 5.7"
OURS = "iofogd (length forms and masking per RFC 6455 section 5.2)"

FRAMES: Tuple[FrameVector, ...] = (
    FrameVector(
        "unmasked text Hello", RFC, bytes.fromhex("810548656c6c6f"), False, Frame(Opcode.TEXT, b"Hello")
    ),
    FrameVector(
        "masked text Hello", RFC, bytes.fromhex("818537fa213d7f9f4d5158"), True, Frame(Opcode.TEXT, b"Hello")
    ),
    FrameVector(
        "fragmented text, first", RFC, bytes.fromhex("010348656c"), False, Frame(Opcode.TEXT, b"Hel", fin=False)
    ),
    FrameVector(
        "fragmented text, last", RFC, bytes.fromhex("80026c6f"), False, Frame(Opcode.CONT, b"lo")
    ),
    FrameVector(
        "unmasked ping Hello", RFC, bytes.fromhex("890548656c6c6f"), False, Frame(Opcode.PING, b"Hello")
    ),
    FrameVector(
        "masked pong Hello", RFC, bytes.fromhex("8a8537fa213d7f9f4d5158"), True, Frame(Opcode.PONG, b"Hello")
    ),
    FrameVector(
        "256 bytes binary, 16-bit length",
        RFC,
        bytes.fromhex("827e0100") + bytes(range(256)),
        False,
        Frame(Opcode.BINARY, bytes(range(256))),
    ),
    FrameVector(
        "64 KiB binary, 64-bit length",
        RFC,
        bytes.fromhex("827f0000000000010000") + b"\xab" * 65536,
        False,
        Frame(Opcode.BINARY, b"\xab" * 65536),
    ),
    FrameVector("empty binary", OURS, bytes.fromhex("8200"), False, Frame(Opcode.BINARY, b"")),
    FrameVector(
        "masked empty close", OURS, bytes.fromhex("888037fa213d"), True, Frame(Opcode.CLOSE, b"")
    ),
    FrameVector(
        "masked close 1000 bye",
        OURS,
        bytes.fromhex("888537fa213d3412434452"),
        True,
        Frame(Opcode.CLOSE, b"\x03\xe8bye"),
    ),
    FrameVector(
        "125 bytes, the largest 7-bit length",
        OURS,
        bytes.fromhex("827d") + b"x" * 125,
        False,
        Frame(Opcode.BINARY, b"x" * 125),
    ),
    FrameVector(
        "126 bytes, the smallest 16-bit length",
        OURS,
        bytes.fromhex("827e007e") + b"y" * 126,
        False,
        Frame(Opcode.BINARY, b"y" * 126),
    ),
    FrameVector(
        "masked 300-byte binary, 16-bit length",
        OURS,
        # payload bytes i ^ key[i % 4]
        bytes.fromhex("82fe012c37fa213d") + bytes(i % 256 ^ MASK_5_7[i % 4] for i in range(300)),
        True,
        Frame(Opcode.BINARY, bytes(i % 256 for i in range(300))),
    ),
    FrameVector(
        "ioFog control signal 0x0C in a binary frame",
        "docs/websocket.md#opcodes",
        bytes.fromhex("82010c"),
        False,
        Frame(Opcode.BINARY, b"\x0c"),
    ),
    FrameVector(
        "ioFog ACK 0x0B from a client",
        "docs/websocket.md#opcodes",
        bytes.fromhex("828137fa213d3c"),
        True,
        Frame(Opcode.BINARY, b"\x0b"),
    ),
    FrameVector(
        "SDK ping 0x09",
        "docs/websocket.md#ping",
        bytes.fromhex("898137fa213d3e"),
        True,
        Frame(Opcode.PING, b"\x09"),
    ),
    FrameVector("SDK pong 0x0A", "docs/websocket.md#ping", bytes.fromhex("8a010a"), False, Frame(Opcode.PONG, b"\x0a")),
)

# RFC 6455 section 1.3: the handshake example.
HANDSHAKE_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
HANDSHAKE_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

# ioFog envelopes (docs/websocket.md#message-socket, docs/compatibility.md).
RECEIPT_ID = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"  # 32 characters, as the Agent's ids
RECEIPT_TS = 1700000000123
RECEIPT = b"\x0e\x20\x08" + RECEIPT_ID.encode() + bytes.fromhex("0000018bcfe5687b")
MSG_PAYLOAD = b"\x00\x04" + b"\x00" * 31  # a version-4 ioMessage with every field empty
MSG = b"\x0d\x00\x00\x00\x21" + MSG_PAYLOAD


# -- ioMessages (docs/iomessage.md#json, #binary, #sdk-differences) ------------------------
#
# ``binary`` is the binary v4 form as the named source writes it; ``json`` (when
# given) is the JSON text the source produces. Each vector decodes to ``fields``;
# where the source is the Java agent's table, our encoder must give the same bytes.

SDK_PY = "iofog 3.0.0b2 (PyPI), IoMessage.to_bytearray / to_json, run 2026-12-02"
SPEC_33 = "docs/iomessage.md#binary byte table, written out field by field (the Java agent's encoder)"


@dataclasses.dataclass(frozen=True)
class IoMessageVector:
    name: str
    source: str
    binary: bytes
    fields: dict  # type: ignore[type-arg]  # IoMessage keyword arguments
    agent_form: bool  # True: these are the exact bytes our encoder writes
    json: bytes = b""


_FULL_FIELDS = dict(
    id="0123456789abcdef0123456789abcdef", tag="t", groupid="g", sequencenumber=300,
    sequencetotal=70000, priority=5, timestamp=1700000000123, publisher="pub", authid="a",
    authgroup="ag", chainposition=1, hash="h", previoushash="ph", nonce="n", difficultytarget=2,
    infotype="it", infoformat="if", contextdata=b"ctx", contentdata=b"body",
)

IOMESSAGES: Tuple[IoMessageVector, ...] = (
    IoMessageVector(
        "SDK: publisher, infotype, infoformat, content only", SDK_PY,
        bytes.fromhex(
            "00040000000001010101200000000001000000000000010405000000000000000500000000485156585978485257"
            "375a36446b4a4b483736785870424e6a4e4258626d7a630000746578747574662d3868656c6c6f"
        ),
        dict(publisher="HQVXYxHRW7Z6DkJKH76xXpBNjNBXbmzc", infotype="text", infoformat="utf-8",
             contentdata=b"hello"),
        agent_form=False,
    ),
    IoMessageVector(
        "SDK: every field, minimal integer widths", SDK_PY,
        bytes.fromhex(
            "0004200001010203010603000100020100010002000101020200000003000000043031323334353637383961626364"
            "6566303132333435363738396162636465667467012c01117005018bcfe5687b707562616167016870686e02697469"
            "66637478626f6479"
        ),
        _FULL_FIELDS,
        agent_form=False,
        json=(
            b'{"version": 4, "id": "0123456789abcdef0123456789abcdef", "tag": "t", "groupid": "g", '
            b'"timestamp": 1700000000123, "sequencenumber": 300, "sequencetotal": 70000, "priority": 5, '
            b'"publisher": "pub", "authid": "a", "authgroup": "ag", "chainposition": 1, "hash": "h", '
            b'"previoushash": "ph", "nonce": "n", "difficultytarget": 2, "infotype": "it", "infoformat": "if", '
            b'"contextdata": "Y3R4", "contentdata": "Ym9keQ=="}'
        ),
    ),
    IoMessageVector(
        "agent: every field, fixed widths", SPEC_33,
        bytes.fromhex(
            "0004200001010404010803000100020800010002000104020200000003000000043031323334353637383961626364"
            "6566303132333435363738396162636465667467" "0000012c" "00011170" "05" "0000018bcfe5687b"
            "707562" "61" "6167" "0000000000000001" "68" "7068" "6e" "00000002" "6974" "6966" "637478" "626f6479"
        ),
        _FULL_FIELDS,
        agent_form=True,
    ),
    IoMessageVector(
        "agent: every field empty", SPEC_33, b"\x00\x04" + b"\x00" * 31, {}, agent_form=True,
    ),
    IoMessageVector(
        # Java: sequence number -1 is written as 4 bytes of two's complement.
        "agent: negative numbers", SPEC_33,
        b"\x00\x04" + b"\x00\x00\x00\x00" + b"\x04\x00\x01" + b"\x00" * 24 + b"\xff\xff\xff\xff" + b"\xfe",
        dict(sequencenumber=-1, priority=-2),
        agent_form=True,
    ),
)

# The JSON form upstream writes (docs/iomessage.md#json): 20 keys in this order, compact.
IOMESSAGE_JSON_FULL = (
    b'{"id":"0123456789abcdef0123456789abcdef","tag":"t","groupid":"g","sequencenumber":300,'
    b'"sequencetotal":70000,"priority":5,"timestamp":1700000000123,"publisher":"pub","authid":"a",'
    b'"authgroup":"ag","version":4,"chainposition":1,"hash":"h","previoushash":"ph","nonce":"n",'
    b'"difficultytarget":2,"infotype":"it","infoformat":"if","contextdata":"Y3R4","contentdata":"Ym9keQ=="}'
)
