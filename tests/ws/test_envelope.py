"""iofogd.ws.envelope: ioFog opcodes in the first payload byte (docs/websocket.md#opcodes, #message-socket)."""
from __future__ import annotations

import pytest

from iofogd.errors import EnvelopeError
from iofogd.ws import envelope
from tests.vectors import MSG, MSG_PAYLOAD, RECEIPT, RECEIPT_ID, RECEIPT_TS


def test_opcode_values_match_the_sdks() -> None:
    assert (envelope.PING, envelope.PONG) == (0x09, 0x0A)
    assert (envelope.ACK, envelope.CONTROL_SIGNAL, envelope.MSG, envelope.RECEIPT, envelope.RESOURCE_SIGNAL) == (
        0x0B, 0x0C, 0x0D, 0x0E, 0x0F,
    )


def test_signals_are_one_byte() -> None:
    assert envelope.signal(envelope.CONTROL_SIGNAL) == b"\x0c"
    assert envelope.signal(envelope.RESOURCE_SIGNAL) == b"\x0f"
    with pytest.raises(ValueError):
        envelope.signal(envelope.MSG)


def test_acks() -> None:
    assert envelope.ack() == b"\x0b"
    assert envelope.is_control_ack(b"\x0b")
    assert not envelope.is_control_ack(b"\x0b\x00")  # control: exactly one byte (docs/websocket.md#control)
    assert envelope.is_message_ack(b"\x0b\x00")  # message: any frame starting with 0x0B (docs/websocket.md#message-socket)
    assert not envelope.is_message_ack(b"")
    assert envelope.opcode_of(b"") is None and envelope.opcode_of(b"\x0d..") == 0x0D


def test_msg_vector() -> None:
    assert envelope.encode_msg(MSG_PAYLOAD) == MSG
    assert envelope.decode_msg(MSG) == MSG_PAYLOAD
    assert envelope.decode_msg(MSG + b"trailing") == MSG_PAYLOAD  # tolerated, as the Agent does


@pytest.mark.parametrize("bad", [b"", b"\x0d\x00\x00", b"\x0c\x00\x00\x00\x00", MSG[:-1]])
def test_malformed_msg(bad: bytes) -> None:
    with pytest.raises(EnvelopeError):
        envelope.decode_msg(bad)


def test_receipt_vector() -> None:
    assert envelope.encode_receipt(RECEIPT_ID, RECEIPT_TS) == RECEIPT
    assert envelope.decode_receipt(RECEIPT) == (RECEIPT_ID, RECEIPT_TS)
    assert envelope.decode_receipt(b"\x0e\x01\x02a\x01\x00") == ("a", 256)  # SDKs accept any width


@pytest.mark.parametrize("bad", [b"\x0e\x05", b"\x0e\x05\x08abc", b"\x0d\x00\x00", b"\x0e\x00\x09" + bytes(9)])
def test_malformed_receipt(bad: bytes) -> None:
    with pytest.raises(EnvelopeError):
        envelope.decode_receipt(bad)
