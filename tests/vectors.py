"""Byte-exact vectors, each with its source.

WebSocket frames: RFC 6455 section 5.7 ("Examples") verbatim, plus our own for
the length forms and masking directions the RFC does not show, and the ioFog
envelopes of spec 2.2/2.6 (compatibility.md "the same SDKs, WebSockets").
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
        "spec 2.2; sdk-wire.md section 3",
        bytes.fromhex("82010c"),
        False,
        Frame(Opcode.BINARY, b"\x0c"),
    ),
    FrameVector(
        "ioFog ACK 0x0B from a client",
        "spec 2.2; sdk-wire.md section 3",
        bytes.fromhex("828137fa213d3c"),
        True,
        Frame(Opcode.BINARY, b"\x0b"),
    ),
    FrameVector(
        "SDK ping 0x09",
        "spec 2.3",
        bytes.fromhex("898137fa213d3e"),
        True,
        Frame(Opcode.PING, b"\x09"),
    ),
    FrameVector("SDK pong 0x0A", "spec 2.3", bytes.fromhex("8a010a"), False, Frame(Opcode.PONG, b"\x0a")),
)

# RFC 6455 section 1.3: the handshake example.
HANDSHAKE_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
HANDSHAKE_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

# ioFog envelopes (spec 2.6; compatibility.md).
RECEIPT_ID = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"  # 32 characters, as the Agent's ids
RECEIPT_TS = 1700000000123
RECEIPT = b"\x0e\x20\x08" + RECEIPT_ID.encode() + bytes.fromhex("0000018bcfe5687b")
MSG_PAYLOAD = b"\x00\x04" + b"\x00" * 31  # a version-4 ioMessage with every field empty
MSG = b"\x0d\x00\x00\x00\x21" + MSG_PAYLOAD
