"""ioFog's application opcodes, carried in the payload of binary frames.

The ioFog sockets (docs/websocket.md#opcodes) put an "opcode" in the
FIRST BYTE OF A BINARY FRAME'S PAYLOAD.  These values collide with RFC 6455's
reserved frame opcodes 0xB-0xF, which is why they must never appear in a frame
header: every strict client drops a connection whose server sends a header
opcode 0xB or 0xC (docs/compatibility.md#websockets).

Layouts (docs/websocket.md#message-socket, docs/compatibility.md):
- ACK 0x0B, CONTROL_SIGNAL 0x0C, RESOURCE_SIGNAL 0x0F: one byte;
- MSG 0x0D: opcode, 4-byte big-endian length L, L bytes of binary ioMessage;
- RECEIPT 0x0E: opcode, len(id), 8, id (UTF-8), 8-byte big-endian ms timestamp.

The 0x09/0x0A "ping"/"pong" bytes travel as the payloads of real ping and pong
frames (docs/websocket.md#opcodes, #ping): the SDKs ping with 0x09 and want 0x0A back, and answer
every ping of ours with 0x0A.  :func:`sdk_pong` is that rule, handed to the
RFC layer (:class:`iofogd.ws.protocol.Connection` ``pong_payload``), which
otherwise echoes ping payloads as RFC 6455 section 5.5.3 requires.
Pure: no I/O.
"""
from __future__ import annotations

import struct

from iofogd.errors import EnvelopeError

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Optional, Tuple

PING = 0x09  # payload of an SDK's ping frame, and of our keepalive pings
PONG = 0x0A  # payload of the pong answering it
SDK_PING = bytes((PING,))
SDK_PONG = bytes((PONG,))
ACK = 0x0B
CONTROL_SIGNAL = 0x0C
MSG = 0x0D
RECEIPT = 0x0E
RESOURCE_SIGNAL = 0x0F

SIGNALS = frozenset((CONTROL_SIGNAL, RESOURCE_SIGNAL))

_MSG_HEAD = struct.Struct("!BI")
_TIMESTAMP = struct.Struct("!q")


def sdk_pong(ping_payload: bytes) -> bytes:
    """The pong payload for a ping: 0x0A for the SDKs' 0x09, the ping's own payload otherwise."""
    return SDK_PONG if ping_payload == SDK_PING else ping_payload


def opcode_of(data: bytes) -> Optional[int]:
    """The ioFog opcode of a binary message, ``None`` for an empty one."""
    return data[0] if data else None


def signal(opcode: int) -> bytes:
    """The one-byte payload of a control-socket signal (0x0C or 0x0F)."""
    if opcode not in SIGNALS:
        raise ValueError(f"0x{opcode:02X} is not a control signal")
    return bytes((opcode,))


def ack() -> bytes:
    return bytes((ACK,))


def is_control_ack(data: bytes) -> bool:
    """On the control socket an ACK is exactly the byte 0x0B (docs/websocket.md#opcodes, #control)."""
    return data == b"\x0b"


def is_message_ack(data: bytes) -> bool:
    """On the message socket any binary message starting with 0x0B is an ACK (docs/websocket.md#message-socket)."""
    return data[:1] == b"\x0b"


def encode_msg(message: bytes) -> bytes:
    """0x0D + 4-byte big-endian length + the binary ioMessage."""
    return _MSG_HEAD.pack(MSG, len(message)) + message


def decode_msg(data: bytes) -> bytes:
    """The ioMessage bytes of a 0x0D payload, trusting its length (docs/iomessage.md#sdk-differences).

    Trailing bytes after the announced length are tolerated, as the Agent does.
    """
    if len(data) < _MSG_HEAD.size or data[0] != MSG:
        raise EnvelopeError("a message frame is 0x0D followed by a 4-byte length")
    _, length = _MSG_HEAD.unpack_from(data)
    end = _MSG_HEAD.size + length
    if len(data) < end:
        raise EnvelopeError(f"message frame announces {length} bytes but carries {len(data) - 5}")
    return data[_MSG_HEAD.size : end]


def encode_receipt(message_id: str, timestamp_ms: int) -> bytes:
    """0x0E, len(id), 8, id bytes, 8-byte big-endian timestamp in ms (docs/websocket.md#message-socket)."""
    raw = message_id.encode("utf-8")
    if len(raw) > 255:
        raise EnvelopeError("a receipt id is at most 255 bytes")
    return bytes((RECEIPT, len(raw), _TIMESTAMP.size)) + raw + _TIMESTAMP.pack(timestamp_ms)


def decode_receipt(data: bytes) -> Tuple[str, int]:
    """``(id, timestamp_ms)`` of a receipt; the timestamp may be 1-8 bytes wide."""
    if len(data) < 3 or data[0] != RECEIPT:
        raise EnvelopeError("a receipt is 0x0E, id length, timestamp length, id, timestamp")
    id_len, ts_len = data[1], data[2]
    end = 3 + id_len + ts_len
    if ts_len > 8 or len(data) < end:
        raise EnvelopeError("receipt shorter than its lengths announce")
    try:
        message_id = data[3 : 3 + id_len].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EnvelopeError("receipt id is not UTF-8") from exc
    return message_id, int.from_bytes(data[3 + id_len : end], "big", signed=ts_len == 8)
