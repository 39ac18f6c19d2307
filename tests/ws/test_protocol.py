"""iofogd.ws.protocol: the connection state machine, fed whole, byte by byte and with trailing bytes."""
from __future__ import annotations

import random
import struct
from typing import TYPE_CHECKING, List, Optional, Tuple

import pytest

from iofogd.errors import ConnectionClosed
from iofogd.ws import envelope
from iofogd.ws.frames import Frame, Opcode, parse_frame, serialize_frame
from iofogd.ws.protocol import Close, Connection, Message, Ping, Pong, State

if TYPE_CHECKING:  # an alias for mypy only (iofogd/record.py)
    from iofogd.ws.protocol import Event
from tests.vectors import FRAMES, MASK_5_7

V = {v.name: v for v in FRAMES}


def client_frame(opcode: int, payload: bytes = b"", fin: bool = True, rsv1: bool = False) -> bytes:
    """A masked frame as a client sends it (built by hand to allow illegal ones)."""
    return serialize_frame(Frame(Opcode(opcode), payload, fin, rsv1), mask=MASK_5_7)


def raw_client_frame(b0: int, payload: bytes) -> bytes:
    assert len(payload) < 126
    masked = bytes(c ^ MASK_5_7[i % 4] for i, c in enumerate(payload))
    return bytes((b0, 0x80 | len(payload))) + MASK_5_7 + masked


def run(conn: Connection, data: bytes, mode: str) -> Tuple[List[Event], bytes]:
    """Feed ``data`` whole or one byte at a time, collecting events and replies."""
    events: List[Event] = []
    out = b""
    chunks = [data] if mode == "whole" else [data[i : i + 1] for i in range(len(data))]
    for chunk in chunks:
        conn.receive_data(chunk)
        events += conn.events()
        out += conn.data_to_send()
    return events, out


def server_frames(data: bytes, masked: bool = False) -> List[Frame]:
    """Parse what a server (or, ``masked``, a client) sent."""
    frames = []
    while data:
        parsed = parse_frame(data, masked=masked, max_size=1 << 20)
        assert parsed is not None
        frames.append(parsed[0])
        data = data[parsed[1] :]
    return frames


# (name, bytes, client side?, expected events, expected reply frames)
CASES = [
    ("masked text", V["masked text Hello"].data, False, [Message("Hello")], []),
    ("unmasked text", V["unmasked text Hello"].data, True, [Message("Hello")], []),
    (
        "fragmented text",
        V["fragmented text, first"].data + V["fragmented text, last"].data,
        True,
        [Message("Hello")],
        [],
    ),
    ("binary 64 KiB", V["64 KiB binary, 64-bit length"].data, True, [Message(b"\xab" * 65536)], []),
    ("binary 300 masked", V["masked 300-byte binary, 16-bit length"].data, False, [Message(bytes(i % 256 for i in range(300)))], []),
    ("masked pong", V["masked pong Hello"].data, False, [Pong(b"Hello")], []),
    ("SDK ping", V["SDK ping 0x09"].data, False, [Ping(b"\x09")], [Frame(Opcode.PONG, b"\x09")]),
    ("ioFog ACK", V["ioFog ACK 0x0B from a client"].data, False, [Message(b"\x0b")], []),
    ("close", V["masked close 1000 bye"].data, False, [Close(1000, "bye")], [Frame(Opcode.CLOSE, b"\x03\xe8bye")]),
    ("empty close", V["masked empty close"].data, False, [Close(1005, "")], [Frame(Opcode.CLOSE, b"")]),
]


@pytest.mark.parametrize("mode", ["whole", "bytes"])
@pytest.mark.parametrize("name,data,client,events,replies", CASES, ids=[c[0] for c in CASES])
def test_vectors(name: str, data: bytes, client: bool, events: List[Event], replies: List[Frame], mode: str) -> None:
    conn = Connection(client=client)
    got, out = run(conn, data, mode)
    assert got == events
    assert server_frames(out, masked=client) == replies


@pytest.mark.parametrize("name,data,client,events,replies", CASES, ids=[c[0] for c in CASES])
def test_vectors_with_trailing_bytes(name: str, data: bytes, client: bool, events: List[Event], replies: List[Frame]) -> None:
    conn = Connection(client=client)
    trailing = serialize_frame(Frame(Opcode.PONG, b"t"), mask=None if client else MASK_5_7)
    conn.receive_data(data + trailing)
    first = [conn.next_event() for _ in events]
    assert first == events
    if conn.state is State.CLOSED:  # bytes after a close frame are ignored
        assert conn.next_event() is None
    else:
        assert conn.next_event() == Pong(b"t")


def test_every_ping_is_answered_with_its_payload() -> None:
    conn = Connection()
    conn.receive_data(client_frame(0x9, b"abcd") + client_frame(0x9, b""))
    assert conn.events() == [Ping(b"abcd"), Ping(b"")]
    assert server_frames(conn.data_to_send()) == [Frame(Opcode.PONG, b"abcd"), Frame(Opcode.PONG, b"")]


def test_the_rfc_layer_echoes_the_sdk_ping_and_the_envelope_rule_answers_0x0a() -> None:
    # RFC 6455 5.5.3 alone echoes; ioFog's 0x09 -> 0x0A lives with the envelope.
    plain = Connection()
    plain.receive_data(client_frame(0x9, b"\x09"))
    plain.events()
    assert server_frames(plain.data_to_send()) == [Frame(Opcode.PONG, b"\x09")]
    iofog = Connection(pong_payload=envelope.sdk_pong)
    iofog.receive_data(client_frame(0x9, b"\x09") + client_frame(0x9, b"\x09\x09"))
    iofog.events()
    assert server_frames(iofog.data_to_send()) == [Frame(Opcode.PONG, b"\x0a"), Frame(Opcode.PONG, b"\x09\x09")]


def test_everything_to_send_leaves_through_one_outbox_in_order() -> None:
    conn = Connection()
    conn.send_text("a")
    conn.receive_data(client_frame(0x9, b"p"))
    conn.events()
    conn.send_binary(b"b")
    assert server_frames(conn.data_to_send()) == [
        Frame(Opcode.TEXT, b"a"), Frame(Opcode.PONG, b"p"), Frame(Opcode.BINARY, b"b")]
    assert conn.data_to_send() == b""


def test_control_frames_interleave_with_fragments() -> None:
    conn = Connection()
    data = client_frame(0x1, "Hé".encode()[:2], fin=False) + client_frame(0x9, b"p")
    data += client_frame(0x0, "Hé".encode()[2:] + b"!", fin=True)
    events, out = run(conn, data, "whole")
    assert events == [Ping(b"p"), Message("Hé!")]
    assert server_frames(out) == [Frame(Opcode.PONG, b"p")]


def test_utf8_split_across_fragments_is_valid() -> None:
    euro = "€".encode()
    conn = Connection()
    data = client_frame(0x1, euro[:1], fin=False) + client_frame(0x0, euro[1:2], fin=False) + client_frame(0x0, euro[2:])
    assert run(conn, data, "bytes")[0] == [Message("€")]


def test_a_message_and_a_close_in_one_chunk_come_in_order() -> None:
    # The echo of the message must be sent before the echo of the close.
    conn = Connection()
    conn.receive_data(client_frame(0x1, b"hi") + client_frame(0x8, b"\x03\xe8"))
    assert conn.next_event() == Message("hi")
    assert conn.data_to_send() == b""
    assert conn.next_event() == Close(1000, "")
    assert server_frames(conn.data_to_send()) == [Frame(Opcode.CLOSE, b"\x03\xe8")]


def test_closing_handshake_we_start() -> None:
    conn = Connection()
    assert conn.send_close(1001, "bye")
    assert server_frames(conn.data_to_send()) == [Frame(Opcode.CLOSE, b"\x03\xe9bye")]
    assert conn.state is State.CLOSING
    assert not conn.send_close()  # idempotent
    assert conn.data_to_send() == b""
    with pytest.raises(ConnectionClosed):
        conn.send_binary(b"x")
    conn.receive_data(client_frame(0x8, b"\x03\xe9"))
    assert conn.events() == [Close(1001, "")]
    assert conn.data_to_send() == b""  # not echoed: we started it
    assert conn.state in (State.CLOSED,)  # "in": mypy keeps the CLOSING narrowing


def test_bytes_after_the_close_are_ignored() -> None:
    conn = Connection()
    conn.receive_data(client_frame(0x8, b"\x03\xe8") + b"\x00\x00garbage")
    assert conn.events() == [Close(1000, "")]
    conn.receive_data(client_frame(0x1, b"late"))
    assert conn.events() == [] and conn.failure is None


def test_eof_without_close_is_1006() -> None:
    conn = Connection()
    conn.receive_eof()
    assert (conn.state, conn.close_code) == (State.CLOSED, 1006)


def test_client_side_masks_what_it_sends() -> None:
    conn = Connection(client=True, mask_source=lambda n: MASK_5_7)
    conn.send_text("Hello")
    assert conn.data_to_send() == V["masked text Hello"].data


def test_we_refuse_to_send_an_invalid_close_code() -> None:
    with pytest.raises(ValueError):
        Connection().send_close(1005 + 1)


# -- failures: one test per rule, asserting the close code sent -------------------------


def fail_code(data: bytes, mode: str = "whole", **limits: int) -> Optional[int]:
    """Feed ``data`` to a server; return the code of the close frame it sent to fail."""
    conn = Connection(**limits)  # type: ignore[arg-type]
    _, out = run(conn, data, mode)
    assert conn.state is State.CLOSED and conn.failure is not None
    frames = server_frames(out)
    assert frames[-1].opcode is Opcode.CLOSE
    code: int = struct.unpack("!H", frames[-1].payload[:2])[0]
    assert code == conn.close_code
    return code


@pytest.mark.parametrize("bit", [0x40, 0x20, 0x10])
def test_rsv_bit_without_extension_is_1002(bit: int) -> None:
    assert fail_code(raw_client_frame(0x81 | bit, b"x")) == 1002


@pytest.mark.parametrize("opcode", [0x3, 0x7, 0xB, 0xC, 0xF])
def test_reserved_opcode_is_1002(opcode: int) -> None:
    assert fail_code(raw_client_frame(0x80 | opcode, b"x")) == 1002


def test_unmasked_client_frame_is_1002() -> None:
    assert fail_code(V["unmasked text Hello"].data) == 1002


def test_fragmented_control_frame_is_1002() -> None:
    assert fail_code(raw_client_frame(0x09, b"x")) == 1002


def test_control_frame_over_125_bytes_is_1002() -> None:
    data = b"\x89\xfe\x00\x7e" + MASK_5_7 + b"\x00" * 126
    assert fail_code(data) == 1002


def test_continuation_without_a_message_is_1002() -> None:
    assert fail_code(client_frame(0x0, b"x")) == 1002


def test_new_message_inside_a_fragmented_one_is_1002() -> None:
    assert fail_code(client_frame(0x1, b"a", fin=False) + client_frame(0x1, b"b")) == 1002


@pytest.mark.parametrize("mode", ["whole", "bytes"])
def test_invalid_utf8_text_is_1007(mode: str) -> None:
    assert fail_code(client_frame(0x1, b"ok\xff"), mode) == 1007


def test_invalid_utf8_fails_before_the_frame_is_complete() -> None:
    # Autobahn 6.4.x: fail on the first bad byte, not at the end of the frame.
    for prefix in (b"\xce\xba\xf4\x90", b"ab\xed\xa0"):  # > U+10FFFF; a UTF-16 surrogate
        conn = Connection()
        frame = client_frame(0x1, prefix + b"x" * 50)
        conn.receive_data(frame[: 6 + len(prefix)])
        assert conn.events() == []
        assert conn.state is State.CLOSED and conn.close_code == 1007


def test_text_ending_inside_a_sequence_is_1007() -> None:
    assert fail_code(client_frame(0x1, "€".encode()[:2])) == 1007


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
def test_invalid_close_code_is_1002(code: int) -> None:
    assert fail_code(client_frame(0x8, struct.pack("!H", code))) == 1002


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999])
def test_valid_close_codes_are_echoed(code: int) -> None:
    conn = Connection()
    conn.receive_data(client_frame(0x8, struct.pack("!H", code)))
    assert conn.events() == [Close(code, "")]
    assert server_frames(conn.data_to_send()) == [Frame(Opcode.CLOSE, struct.pack("!H", code))]


def test_one_byte_close_payload_is_1002() -> None:
    assert fail_code(client_frame(0x8, b"\x03")) == 1002


def test_close_reason_not_utf8_is_1007() -> None:
    assert fail_code(client_frame(0x8, b"\x03\xe8\xff")) == 1007


def test_frame_over_the_frame_limit_is_1009() -> None:
    assert fail_code(client_frame(0x2, b"x" * 200), max_message_size=1000, max_frame_size=100) == 1009


def test_fragments_over_the_message_limit_are_1009_on_the_header() -> None:
    conn = Connection(max_message_size=100)
    conn.receive_data(client_frame(0x2, b"x" * 60, fin=False))
    conn.receive_data(client_frame(0x0, b"y" * 60)[:8])  # only the header of the second
    assert conn.events() == []
    assert conn.close_code == 1009


def test_fragment_count_is_bounded_1009() -> None:
    # 2-byte fragments: the bound is the count, long before the byte limit.
    data = client_frame(0x2, b"ab", fin=False) + client_frame(0x0, b"cd", fin=False) * 20
    assert fail_code(data, max_fragments=10) == 1009


def test_reassembly_is_one_buffer_and_is_freed() -> None:
    conn = Connection(max_fragments=10_000)
    conn.receive_data(client_frame(0x2, b"ab", fin=False) + client_frame(0x0, b"cd", fin=False) * 999)
    assert conn.events() == []
    buffered = conn._msg   # the one reassembly buffer: bytes, not a list of fragments
    assert isinstance(buffered, bytearray) and len(buffered) == 2000
    conn.receive_data(client_frame(0x0, b"!"))
    assert conn.events() == [Message(b"ab" + b"cd" * 999 + b"!")]
    assert len(conn._msg) == 0


def test_text_fragments_are_validated_as_they_come_and_decoded_once() -> None:
    conn = Connection()
    snowman = "☃".encode()
    conn.receive_data(client_frame(0x1, snowman[:1], fin=False) + client_frame(0x0, snowman[1:]))
    assert conn.events() == [Message("☃")]


def test_an_unexpected_error_while_parsing_is_1011(monkeypatch: pytest.MonkeyPatch) -> None:
    # A bug of ours must still give the peer a close frame, not a dropped TCP connection.
    import iofogd.ws.protocol as protocol

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(protocol, "apply_mask", broken)
    conn = Connection()
    conn.receive_data(client_frame(0x1, b"hi"))
    assert conn.events() == []
    assert conn.state is State.CLOSED and isinstance(conn.failure, RuntimeError)
    assert server_frames(conn.data_to_send()) == [Frame(Opcode.CLOSE, b"\x03\xf3internal error")]
    assert conn.close_code == 1011


# -- whole_message: the session's lock-free path for the common frame ---------------------

def _snapshot(conn: Connection) -> Tuple[object, ...]:
    return (conn.state, bytes(conn._buf), list(conn._out), list(conn._events), conn._header,
            conn._msg_opcode, bytes(conn._msg), conn.close_code)


WHOLE = [  # frames that whole_message takes, and what they hold
    (client_frame(0x2, b"\x0b"), Message(b"\x0b")),
    (client_frame(0x2, b""), Message(b"")),
    (client_frame(0x1, "h\u00e9llo \u2603".encode()), Message("h\u00e9llo \u2603")),
    (client_frame(0x2, bytes(range(125))), Message(bytes(range(125)))),
    (client_frame(0x2, bytes(i % 251 for i in range(126))), Message(bytes(i % 251 for i in range(126)))),
    (client_frame(0x1, b"x" * 65535), Message("x" * 65535)),
    (V["masked 300-byte binary, 16-bit length"].data, Message(bytes(i % 256 for i in range(300)))),
    (V["masked text Hello"].data, Message("Hello")),
]

NOT_WHOLE = [  # frames the general path must see: refused, and nothing changes
    ("partial", client_frame(0x2, b"abc")[:-1]),
    ("two frames", client_frame(0x2, b"a") + client_frame(0x2, b"b")),
    ("trailing byte", client_frame(0x2, b"a") + b"\x82"),
    ("not final", client_frame(0x2, b"a", fin=False)),
    ("continuation", client_frame(0x0, b"a")),
    ("rsv1", client_frame(0x2, b"a", rsv1=True)),
    ("unmasked", bytes((0x82, 1)) + b"a"),
    ("ping", client_frame(0x9, b"\x09")),
    ("pong", client_frame(0xA, b"")),
    ("close", client_frame(0x8, b"\x03\xe8")),
    ("reserved opcode 0x3", raw_client_frame(0x83, b"a")),
    ("invalid UTF-8", client_frame(0x1, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80")),
    ("non-minimal 16-bit length", bytes((0x82, 0xFE, 0, 5)) + MASK_5_7 + b"abcde"),
    ("64-bit length", client_frame(0x2, b"z" * 65536)),
]


@pytest.mark.parametrize("data,message", WHOLE, ids=[f"whole{i}" for i in range(len(WHOLE))])
def test_whole_message_agrees_with_the_general_path_and_changes_nothing(data: bytes, message: Message) -> None:
    conn = Connection()
    before = _snapshot(conn)
    assert conn.whole_message(data) == message.data
    assert _snapshot(conn) == before
    general = Connection()
    general.receive_data(data)
    assert general.events() == [message] and general.data_to_send() == b""


def test_whole_message_unmasks_every_short_length_and_mask_as_the_general_path_does() -> None:
    # The short frame's unmasking multiplies the mask across the payload: every
    # length up to 125 (each remainder mod 4), masks with high bits and zero bytes.
    rng = random.Random(6455)
    for length in range(0, 140):
        for mask in (b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x80\x00\x01\xfe", bytes(rng.randrange(256) for _ in range(4))):
            payload = bytes(rng.randrange(256) for _ in range(length))
            data = serialize_frame(Frame(Opcode.BINARY, payload, True, False), mask=mask)
            assert Connection().whole_message(data) == payload, (length, mask)


@pytest.mark.parametrize("name,data", NOT_WHOLE, ids=[c[0] for c in NOT_WHOLE])
def test_whole_message_leaves_every_other_frame_to_the_general_path(name: str, data: bytes) -> None:
    conn = Connection()
    before = _snapshot(conn)
    assert conn.whole_message(data) is None
    assert _snapshot(conn) == before


def test_whole_message_keeps_the_limits() -> None:
    data = client_frame(0x2, b"x" * 100)
    assert Connection(max_frame_size=99).whole_message(data) is None
    assert Connection(max_message_size=99).whole_message(data) is None
    assert Connection(max_frame_size=100).whole_message(data) == b"x" * 100
    assert fail_code(data, max_frame_size=99) == 1009


def test_whole_message_waits_for_what_is_pending() -> None:
    frame = client_frame(0x2, b"b")
    conn = Connection()
    conn.receive_data(client_frame(0x2, b"a", fin=False))   # a fragmented message in progress
    assert conn.events() == [] and conn.whole_message(frame) is None
    conn = Connection()
    conn.receive_data(client_frame(0x2, b"a")[:3])   # a frame begun
    assert conn.whole_message(frame) is None
    conn = Connection()
    conn.receive_data(client_frame(0x2, b"a") + client_frame(0x2, b"c"))   # events queued
    assert conn.next_event() == Message(b"a") and conn.whole_message(frame) is None
    conn = Connection()
    conn.send_close()   # closing: the general path decides what still counts
    assert conn.whole_message(frame) is None
    assert Connection(client=True).whole_message(frame) is None


def test_send_binary_now_is_send_binary_and_data_to_send() -> None:
    for payload in (b"", b"\x0d" * 125, b"y" * 126, b"z" * 70000):
        one, two = Connection(), Connection()
        two.send_binary(payload)
        assert one.send_binary_now(payload) == two.data_to_send()
        assert server_frames(Connection().send_binary_now(payload)) == [Frame(Opcode.BINARY, payload)]
    conn = Connection()
    conn.receive_data(client_frame(0x9, b"p"))
    assert conn.events() == [Ping(b"p")]
    # the pong owed before the message, in one buffer, and the outbox drained
    assert server_frames(conn.send_binary_now(b"m")) == [Frame(Opcode.PONG, b"p"), Frame(Opcode.BINARY, b"m")]
    assert conn.data_to_send() == b""
    client = Connection(client=True, mask_source=lambda n: MASK_5_7)
    assert server_frames(client.send_binary_now(b"abc"), masked=True) == [Frame(Opcode.BINARY, b"abc")]
    conn.send_close()
    with pytest.raises(ConnectionClosed):
        conn.send_binary_now(b"late")


@pytest.mark.parametrize("length", [0, 1, 4, 5, 124, 125])
def test_whole_pings_and_pongs_of_every_size_class(length: int) -> None:
    payload = bytes(range(length))
    conn = Connection()
    conn.receive_data(client_frame(0x9, payload) + client_frame(0xA, payload[::-1]))
    assert conn.events() == [Ping(payload), Pong(payload[::-1])]
    assert server_frames(conn.data_to_send()) == [Frame(Opcode.PONG, payload)]
    # and while a fragmented message is being reassembled
    conn.receive_data(client_frame(0x1, b"he", fin=False) + client_frame(0x9, payload) + client_frame(0x0, b"llo"))
    assert conn.events() == [Ping(payload), Message("hello")]
    assert server_frames(conn.data_to_send()) == [Frame(Opcode.PONG, payload)]
