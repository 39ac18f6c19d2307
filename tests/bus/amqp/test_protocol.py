"""Our connection state machine against Qpid Proton's engine (see proton_peer.py),
and against hand-made bytes for what a well-behaved engine never sends."""
from __future__ import annotations

import struct
from typing import Any, List

import pytest

proton = pytest.importorskip("proton", reason="python-qpid-proton (the test extra) is not installed")

from iofogd.bus.amqp import frames as f  # noqa: E402
from iofogd.bus.amqp import message as m  # noqa: E402
from iofogd.bus.amqp import protocol as p  # noqa: E402
from iofogd.bus.amqp.types import UInt, ULong  # noqa: E402
from iofogd.errors import AmqpAuthError, AmqpConnectionLost, AmqpProtocolError, AmqpRemoteError  # noqa: E402
from tests.bus.amqp.proton_peer import ProtonPeer  # noqa: E402


def of(events: List[p.Event], kind: type) -> List[Any]:
    return [e for e in events if isinstance(e, kind)]


def opened(**kwargs: Any) -> tuple[p.Connection, ProtonPeer, p.Session]:
    peer_args = {k: kwargs.pop(k) for k in list(kwargs) if k in (
        "idle_timeout_peer", "sender_credit", "peer_max_frame_size", "refuse", "settle_incoming")}
    ours = p.Connection(container_id="ours", hostname="peer", sasl=p.SaslAnonymous(), **kwargs)
    peer = ProtonPeer(ours, idle_timeout=peer_args.get("idle_timeout_peer", 0.0),
                      sender_credit=peer_args.get("sender_credit", 100),
                      max_frame_size=peer_args.get("peer_max_frame_size"),
                      refuse=peer_args.get("refuse", ()), settle_incoming=peer_args.get("settle_incoming", True))
    ours.initiate(0.0)
    session = ours.begin()
    events = peer.pump()
    assert of(events, p.ConnectionOpened) and of(events, p.SessionBegun)
    return ours, peer, session


def test_open_begin_attach_with_sasl_anonymous() -> None:
    ours, peer, session = opened()
    assert ours.state == p.OPENED
    assert peer.connection.remote_container == "ours"
    assert peer.connection.remote_hostname == "peer"
    sender = ours.attach_sender(session, "s1", "queue-a")
    receiver = ours.attach_receiver(session, "r1", "queue-a", credit=3)
    events = peer.pump()
    attached = [e.link for e in of(events, p.LinkAttached)]
    assert attached == [sender, receiver]
    assert sender.remote_target.address == "queue-a" and receiver.remote_source.address == "queue-a"
    assert sender.credit == 100  # the peer's flow
    assert of(events, p.CreditChanged)[0].link is sender


def test_send_is_accepted_and_settled_by_the_peer() -> None:
    ours, peer, session = opened()
    sender = ours.attach_sender(session, "s1", "queue-a")
    peer.pump()
    body = m.encode_message(m.Message("hello"))
    delivery = ours.send(sender, body)
    events = peer.pump()
    assert peer.queues["queue-a"] == [body]
    decoded = proton.Message()
    decoded.decode(body)
    assert decoded.body == "hello"
    updated = of(events, p.DeliveryUpdated)
    assert [u.delivery for u in updated] == [delivery]
    assert isinstance(delivery.state, f.Accepted) and delivery.remote_settled
    assert not sender.unsettled and not session.unsettled_out


def test_large_messages_are_split_to_the_peers_frame_size_and_reassembled_by_it() -> None:
    ours, peer, session = opened(peer_max_frame_size=4096)
    assert ours.remote_max_frame_size == 4096
    sender = ours.attach_sender(session, "s1", "big")
    peer.pump()
    payload = m.encode_message(m.Message(bytes(range(256)) * 1000))
    ours.send(sender, payload)
    frames = ours.data_to_send()
    count = 0
    pos = 0
    while pos < len(frames):
        size = struct.unpack_from(">I", frames, pos)[0]
        assert size <= 4096
        pos += size
        count += 1
    assert count >= len(payload) // 4096 + 1
    peer.push(frames)
    peer.pump()
    assert peer.queues["big"] == [payload]


def test_multi_frame_deliveries_from_the_peer_are_reassembled() -> None:
    ours, peer, session = opened(max_frame_size=1024)
    receiver = ours.attach_receiver(session, "r1", "in", credit=5)
    peer.pump()
    msg = proton.Message(body="é" * 50000, properties={"k": 1}, subject="s")
    wire = msg.encode()
    peer.offer("in", wire)
    events = peer.pump()
    got = of(events, p.MessageReceived)
    assert len(got) == 1 and got[0].delivery.payload == wire
    ours_msg = m.decode_message(got[0].delivery.payload)
    assert ours_msg.body == "é" * 50000 and ours_msg.application_properties == {"k": 1}
    assert ours_msg.properties is not None and ours_msg.properties.subject == "s"
    assert receiver.credit == 4
    ours.settle(got[0].delivery)
    peer.pump()
    assert len(peer.outcomes) == 1 and peer.outcomes[0] == proton.Delivery.ACCEPTED


def test_the_peers_credit_bounds_what_we_put_on_the_wire() -> None:
    ours, peer, session = opened(sender_credit=2)
    sender = ours.attach_sender(session, "s1", "slow")
    peer.pump()
    for i in range(5):
        ours.send(sender, m.encode_message(m.Message(i)))
    peer.pump()
    assert len(peer.queues["slow"]) == 2
    assert sender.credit == 0 and sender.queued == 3
    peer.grant("slow", 10)
    peer.pump()
    assert [m.decode_message(x).body for x in peer.queues["slow"]] == [0, 1, 2, 3, 4]
    assert sender.queued == 0 and sender.credit == 7


def test_our_credit_bounds_what_the_peer_sends() -> None:
    ours, peer, session = opened()
    receiver = ours.attach_receiver(session, "r1", "q", credit=1)
    peer.pump()
    for i in range(3):
        peer.offer("q", m.encode_message(m.Message(i)))
    got = of(peer.pump(), p.MessageReceived)
    assert len(got) == 1 and receiver.credit == 0
    ours.flow(receiver, 5)
    got += of(peer.pump(), p.MessageReceived)
    assert [m.decode_message(e.delivery.payload).body for e in got] == [0, 1, 2]


def test_unsettled_until_the_peer_decides() -> None:
    ours, peer, session = opened(settle_incoming=False)
    sender = ours.attach_sender(session, "s1", "q")
    peer.pump()
    delivery = ours.send(sender, b"\x00Sw\xa1\x01x")
    peer.pump()
    assert not delivery.remote_settled and delivery.state is None and sender.unsettled == {delivery.id: delivery}
    d = peer.received[0]
    d.update(proton.Delivery.REJECTED)
    d.settle()
    peer.pump()
    assert isinstance(delivery.state, f.Rejected) and delivery.remote_settled


def test_session_window_is_refilled_when_half_used() -> None:
    ours, peer, session = opened(session_window=8)
    ours.attach_receiver(session, "r1", "q", credit=100)
    peer.pump()
    for i in range(30):
        peer.offer("q", m.encode_message(m.Message(i)))
    got = of(peer.pump(), p.MessageReceived)
    assert len(got) == 30  # the peer never stalls on our incoming window


def test_heartbeats_keep_an_idle_connection_alive() -> None:
    ours, peer, session = opened(idle_timeout=4.0, idle_timeout_peer=2.0)
    assert ours.remote_idle_timeout > 0  # Proton advertises half its own timeout
    for step in range(1, 41):
        peer.pump(step * 0.5)
    assert ours.state == p.OPENED and ours.failure is None
    assert not peer.transport.condition


def test_a_silent_peer_fails_our_idle_timeout() -> None:
    ours, peer, session = opened(idle_timeout=3.0)
    peer.silent = True
    peer.pump(1.0)
    assert ours.state == p.OPENED
    events = peer.pump(3.5)
    closed = of(events, p.ConnectionClosed)
    assert closed and isinstance(closed[0].error, AmqpProtocolError)
    assert closed[0].error.condition == f.RESOURCE_LIMIT_EXCEEDED
    assert peer.connection.remote_condition.name == f.RESOURCE_LIMIT_EXCEEDED


def test_a_refused_link_is_reported_with_the_peers_error() -> None:
    ours, peer, session = opened(refuse=("nowhere",))
    link = ours.attach_sender(session, "s1", "nowhere")
    events = peer.pump()
    detached = of(events, p.LinkDetached)
    assert detached and detached[0].link is link
    assert isinstance(detached[0].error, AmqpRemoteError) and detached[0].error.condition == "amqp:not-found"
    with pytest.raises(AmqpRemoteError):
        ours.send(link, b"\x00Sw\x40")


def test_the_peer_closing_with_an_error() -> None:
    ours, peer, session = opened()
    peer.connection.condition = proton.Condition("amqp:connection:forced", "maintenance")
    peer.connection.close()
    events = peer.pump()
    closed = of(events, p.ConnectionClosed)
    assert closed and isinstance(closed[0].error, AmqpRemoteError)
    assert closed[0].error.condition == "amqp:connection:forced" and "maintenance" in str(closed[0].error)
    assert ours.state == p.CLOSED
    with pytest.raises(AmqpRemoteError):
        ours.begin()


def test_a_clean_close_both_ways() -> None:
    ours, peer, session = opened()
    ours.close()
    events = peer.pump()
    assert peer.connection.remote_condition is None
    peer.connection.close()
    events += peer.pump()
    closed = of(events, p.ConnectionClosed)
    assert ours.state == p.CLOSED and closed and closed[0].error is None


# -- what no well-behaved peer sends -----------------------------------------------------


def after_open(**kwargs: Any) -> p.Connection:
    """Our connection, past a hand-made SASL exchange and the peer's open."""
    ours = p.Connection(container_id="ours", sasl=p.SaslAnonymous(), **kwargs)
    ours.initiate(0.0)
    ours.begin()
    ours.receive_data(f.SASL_HEADER + f.encode_frame(0, f.SaslMechanisms(["ANONYMOUS"]), b"", f.FRAME_SASL)
                      + f.encode_frame(0, f.SaslOutcome(0), b"", f.FRAME_SASL)
                      + f.AMQP_HEADER + f.encode_frame(0, f.Open("peer", None, 65536))
                      + f.encode_frame(0, f.Begin(0, 0, 100, 100)), 0.0)
    events = []
    while (e := ours.next_event()) is not None:
        events.append(e)
    assert of(events, p.SessionBegun)
    ours.data_to_send()
    return ours


def failure_of(ours: p.Connection, data: bytes) -> Any:
    ours.receive_data(data, 0.0)
    events = []
    while (e := ours.next_event()) is not None:
        events.append(e)
    closed = of(events, p.ConnectionClosed)
    assert closed and ours.state == p.CLOSED, events
    return closed[0].error


def close_sent(ours: p.Connection) -> Any:
    out = ours.data_to_send()
    parsed = f.parse_frame(out, 1 << 20)
    assert parsed is not None and isinstance(parsed[0].body, f.Close)
    return parsed[0].body.error


@pytest.mark.parametrize("data, condition, text", [
    (struct.pack(">IBBH", 4, 2, 0, 0), f.FRAMING_ERROR, "bad frame header"),
    (struct.pack(">IBBH", 100000, 2, 0, 0), f.FRAMING_ERROR, "exceeds max-frame-size"),
    (struct.pack(">IBBH", 10, 2, 1, 0) + b"\x00\x00", f.FRAMING_ERROR, "frame type 1"),
    (f.encode_frame(0, f.Open("x")), f.NOT_ALLOWED, "a second open"),
    (f.encode_frame(0, f.Transfer(7, 0, b"t", 0)), f.UNATTACHED_HANDLE, "unattached handle 7"),
    (f.encode_frame(5, f.Flow(0, 10, 0, 10)), f.NOT_FOUND, "channel 5"),
    (f.encode_frame(0, f.Detach(3)), f.UNATTACHED_HANDLE, "unattached handle 3"),
    (f.encode_frame(0, f.Attach("nobody", 0, True)), f.NOT_IMPLEMENTED, "did not ask for"),
    (f.encode_frame(1, f.Begin(None, 0, 10, 10)), f.NOT_IMPLEMENTED, "did not ask for"),
    (struct.pack(">IBBH", 12, 2, 0, 0) + b"\x00\x53\x99\x45", "amqp:decode-error", "expected Open/Begin"),
    (struct.pack(">IBBH", 12, 2, 0, 0) + b"\x00\x53\x13\x45", "amqp:decode-error", "mandatory field incoming-window"),
    (struct.pack(">IBBH", 16, 2, 0, 0) + b"\x00\x53\x16\xc0\x03\x01\xa1\x00", "amqp:decode-error", "malformed"),
    (struct.pack(">IBBH", 14, 2, 0, 0) + b"\x00\x53\x17\x45xx", f.FRAMING_ERROR, "bytes after a End"),
    (struct.pack(">IBBH", 10, 2, 0, 0) + b"\xa1\x05", "amqp:decode-error", "truncated"),
    (struct.pack(">IBBH", 11, 2, 0, 0) + b"\x00\x53\x18" + b"", "amqp:decode-error", "truncated"),
])
def test_protocol_violations_close_the_connection_with_a_condition(data: bytes, condition: str, text: str) -> None:
    ours = after_open(max_frame_size=4096)
    error = failure_of(ours, data)
    assert getattr(error, "condition", None) == condition and text in str(error)
    sent = close_sent(ours)
    assert sent is not None and sent.condition == condition


def test_a_transfer_beyond_our_credit_is_taken_and_counted() -> None:
    # RabbitMQ 3.x overdraws credit while a top-up crosses its transfers: tolerated, as Proton does.
    ours = after_open()
    session = ours.sessions[0]
    link = ours.attach_receiver(session, "r", "q", credit=1)
    ours.receive_data(f.encode_frame(0, f.Attach("r", 4, False, None, None, f.Source("q"), f.Target("r"),
                                                  None, None, 0)), 0.0)
    while ours.next_event() is not None:
        pass
    ok = f.encode_frame(0, f.Transfer(4, 0, b"a", 0, False), b"\x00Sw\x40")
    again = f.encode_frame(0, f.Transfer(4, 1, b"b", 0, False), b"\x00Sw\x40")
    ours.receive_data(ok + again, 0.0)
    got = []
    while (e := ours.next_event()) is not None:
        got.append(e)
    assert len(of(got, p.MessageReceived)) == 2 and ours.state == p.OPENED
    assert link.credit == 0 and link.overdrawn == 1


def test_not_an_amqp_peer() -> None:
    ours = p.Connection(container_id="ours", sasl=p.SaslAnonymous())
    ours.initiate(0.0)
    error = failure_of(ours, b"HTTP/1.1 400 Bad Request\r\n")
    assert isinstance(error, AmqpProtocolError) and "not an AMQP peer" in str(error)


def test_a_peer_without_sasl_when_we_asked_for_it() -> None:
    ours = p.Connection(container_id="ours", sasl=p.SaslAnonymous())
    ours.initiate(0.0)
    error = failure_of(ours, f.AMQP_HEADER)
    assert isinstance(error, AmqpProtocolError) and "protocol header" in str(error)


@pytest.mark.parametrize("frames, code, text", [
    ([f.SaslMechanisms(["EXTERNAL"])], 0, "not PLAIN"),
    ([f.SaslMechanisms(["PLAIN"]), f.SaslOutcome(1)], 1, "authentication failed"),
    ([f.SaslMechanisms(["PLAIN", "ANONYMOUS"]), f.SaslChallenge(b"?")], 0, "unexpected SASL challenge"),
])
def test_sasl_failures(frames: List[f.Composite], code: int, text: str) -> None:
    ours = p.Connection(container_id="ours", sasl=p.SaslPlain("guest", "secret"))
    ours.initiate(0.0)
    assert ours.data_to_send() == f.SASL_HEADER
    data = f.SASL_HEADER + b"".join(f.encode_frame(0, x, b"", f.FRAME_SASL) for x in frames)
    error = failure_of(ours, data)
    assert isinstance(error, AmqpAuthError) and error.code == code and text in str(error)
    assert "secret" not in str(error)


def test_sasl_plain_sends_the_rfc4616_response() -> None:
    ours = p.Connection(container_id="ours", sasl=p.SaslPlain("guest", "pw"))
    ours.initiate(0.0)
    ours.data_to_send()
    ours.receive_data(f.SASL_HEADER + f.encode_frame(0, f.SaslMechanisms(["ANONYMOUS", "PLAIN"]), b"", f.FRAME_SASL),
                      0.0)
    assert ours.next_event() is None
    parsed = f.parse_frame(ours.data_to_send(), 1 << 16, sasl=True)
    assert parsed is not None
    init = parsed[0].body
    assert isinstance(init, f.SaslInit) and init.mechanism == "PLAIN" and init.initial_response == b"\0guest\0pw"


def test_the_transport_ending_without_a_close_is_connection_lost() -> None:
    ours = after_open()
    ours.receive_eof()
    event = ours.next_event()
    assert isinstance(event, p.ConnectionClosed) and isinstance(event.error, AmqpConnectionLost)


def test_message_sections_against_proton() -> None:
    full = proton.Message(
        id="ID:1", user_id=b"u", address="q", subject="s", reply_to="r", correlation_id=ULong(5),
        content_type="text/plain", content_encoding="utf-8", expiry_time=10.0, creation_time=5.0, group_id="g",
        group_sequence=3, reply_to_group_id="rg", durable=True, priority=7, ttl=2.5, first_acquirer=True,
        delivery_count=2, properties={"a": 1, "b": "x"}, body=["seq", 1],
    )
    full.annotations = {proton.symbol("x-opt-jms-msg-type"): proton.byte(5)}
    full.instructions = {proton.symbol("x-opt-i"): 1}
    wire = full.encode()
    ours = m.decode_message(wire)
    assert ours.header is not None and ours.header.durable is True and ours.header.priority == 7
    assert ours.header.ttl == 2500 and ours.header.delivery_count == 2
    assert ours.properties is not None and ours.properties.message_id == "ID:1"
    assert ours.properties.to == "q" and ours.properties.content_type == "text/plain"
    assert ours.properties.absolute_expiry_time == 10000 and ours.properties.group_sequence == 3
    assert ours.message_annotations == {"x-opt-jms-msg-type": 5}
    assert ours.delivery_annotations == {"x-opt-i": 1}
    assert ours.application_properties == {"a": 1, "b": "x"}
    assert ours.body == ["seq", 1] and ours.body_kind == m.BODY_VALUE
    body_only = m.decode_body(wire)   # the router link's reader: the other sections stepped over
    assert (body_only.body, body_only.body_kind) == (ours.body, ours.body_kind) and body_only.properties is None
    back = proton.Message()
    back.decode(m.encode_message(ours))
    for name in ("id", "user_id", "address", "subject", "reply_to", "correlation_id", "content_type",
                 "content_encoding", "expiry_time", "creation_time", "group_id", "group_sequence",
                 "reply_to_group_id", "durable", "priority", "ttl", "first_acquirer", "delivery_count",
                 "properties", "body", "annotations", "instructions"):
        assert getattr(back, name) == getattr(full, name), name


@pytest.mark.parametrize("message", [
    m.Message([b"part one", b"part two"], m.BODY_DATA),
    m.Message([[1, "a"], [UInt(2)]], m.BODY_SEQUENCE, footer={"f": 1}),
    m.Message(None),
])
def test_body_kinds_decode_in_proton_and_back(message: m.Message) -> None:
    wire = m.encode_message(message)
    back = proton.Message()
    back.decode(wire)  # proton accepts it
    assert m.decode_message(wire) == message
    body_only = m.decode_body(wire)
    assert (body_only.body, body_only.body_kind) == (message.body, message.body_kind)


@pytest.mark.parametrize("wire, text", [
    (b"\x00Sw\x40\x00Sw\x40", "repeats amqp-value"),
    (b"\x00Su\xa0\x01x\x00Sw\x40", "mixes section kinds"),
    (b"\x00Sw\x40\x00Sp\x45", "out of order"),
    (b"\x00Sr\x45", "must be a map"),
    (b"\x00Su\xa1\x01x", "must be binary"),
    (b"\x00S\x99\x40", "unknown message section"),
    (b"\xa1\x01x", "not a described value"),
])
@pytest.mark.parametrize("decoder", [m.decode_message, m.decode_body])
def test_malformed_messages(wire: bytes, text: str, decoder: Any) -> None:
    from iofogd.errors import AmqpDecodeError
    with pytest.raises(AmqpDecodeError, match=text):
        decoder(wire)


@pytest.mark.parametrize("wire", [
    b"\x00Sp\xc0\x10\x01\x41\x00Sw\x40",   # a header list8 announcing 16 bytes, holding 1
    b"\x00Sr\xd1\x00\x00\x00",                # a map32 whose size is cut off
    b"\x00Sp",                                    # a section without a value
    b"\x00Sp\x3f\x00Sw\x40",                  # an unknown format code
])
def test_sections_stepped_over_must_still_fit(wire: bytes) -> None:
    from iofogd.errors import AmqpDecodeError
    with pytest.raises(AmqpDecodeError):
        m.decode_body(wire)


def test_credit_the_peer_lowers_below_what_is_in_flight_is_none() -> None:
    ours = after_open()
    session = ours.sessions[0]
    link = ours.attach_sender(session, "s", "q")
    ours.receive_data(f.encode_frame(0, f.Attach("s", 3, True, None, None, f.Source("s"), f.Target("q")))
                      + f.encode_frame(0, f.Flow(0, 100, 0, 100, 3, 0, 2)), 0.0)
    while ours.next_event() is not None:
        pass
    ours.send(link, b"\x00Sw\x40")
    ours.send(link, b"\x00Sw\x40")
    assert link.delivery_count == 2 and link.credit == 0
    # The peer revokes: delivery-count 0, credit 1, sent before our two arrived.
    ours.receive_data(f.encode_frame(0, f.Flow(0, 100, 0, 100, 3, 0, 1)), 0.0)
    while ours.next_event() is not None:
        pass
    assert link.credit == 0
    ours.send(link, b"\x00Sw\x40")
    assert link.queued == 1


def test_a_drained_peer_uses_up_our_credit() -> None:
    ours = after_open()
    session = ours.sessions[0]
    link = ours.attach_receiver(session, "r", "q", credit=10)
    ours.receive_data(f.encode_frame(0, f.Attach("r", 4, False, None, None, f.Source("q"), f.Target("r"),
                                                  None, None, 0))
                      + f.encode_frame(0, f.Flow(0, 100, 0, 100, 4, 10, 0)), 0.0)
    while ours.next_event() is not None:
        pass
    assert link.credit == 0 and link.delivery_count == 10


def test_a_multi_frame_delivery_waits_for_the_peers_session_window() -> None:
    ours = p.Connection(container_id="ours", sasl=p.SaslAnonymous())
    ours.initiate(0.0)
    session = ours.begin()
    link = ours.attach_sender(session, "s", "q")
    ours.receive_data(f.SASL_HEADER + f.encode_frame(0, f.SaslMechanisms(["ANONYMOUS"]), b"", f.FRAME_SASL)
                      + f.encode_frame(0, f.SaslOutcome(0), b"", f.FRAME_SASL)
                      + f.AMQP_HEADER + f.encode_frame(0, f.Open("peer", None, 512))
                      + f.encode_frame(0, f.Begin(0, 0, 2, 100))  # the peer takes 2 frames for now
                      + f.encode_frame(0, f.Attach("s", 0, True, None, None, f.Source("s"), f.Target("q")))
                      + f.encode_frame(0, f.Flow(0, 2, 0, 100, 0, 0, 10)), 0.0)
    while ours.next_event() is not None:
        pass
    ours.data_to_send()
    payload = bytes(range(256)) * 8  # 2048 bytes: 5 frames of at most 512
    ours.send(link, payload)

    def transfers() -> list[f.Frame]:
        out, frames = ours.data_to_send(), []
        while out:
            parsed = f.parse_frame(out, 512)
            assert parsed is not None
            frames.append(parsed[0])
            out = out[parsed[1]:]
        return frames

    first = transfers()
    assert len(first) == 2 and all(fr.body.more for fr in first)
    assert link.queued == 1 and session.remote_incoming_window == 0
    ours.receive_data(f.encode_frame(0, f.Flow(2, 10, 0, 100)), 0.0)  # the window opens
    while ours.next_event() is not None:
        pass
    rest = transfers()
    assert [fr.body.more for fr in rest][-1] is False and link.queued == 0
    assert b"".join(fr.payload for fr in first + rest) == payload
    assert first[0].body.delivery_id == 0 and rest[0].body.delivery_id is None


def test_settle_many_is_one_disposition_per_run_of_ids_and_the_peer_takes_every_outcome() -> None:
    ours, peer, session = opened()
    r1 = ours.attach_receiver(session, "r1", "q1", credit=10)
    r2 = ours.attach_receiver(session, "r2", "q2", credit=10)
    peer.pump()
    for i in range(5):
        peer.offer("q1", m.encode_message(m.Message(i)))
    peer.offer("q2", m.encode_message(m.Message("other")))   # takes the next delivery id
    for i in range(5, 7):
        peer.offer("q1", m.encode_message(m.Message(i)))
    got = [e.delivery for e in of(peer.pump(), p.MessageReceived)]
    mine = [d for d in got if d.link is r1]
    assert len(mine) == 7 and len(got) == 8
    ours.settle_many(mine)
    wire = ours.data_to_send()
    out = bytearray(wire)
    dispositions = []
    while out:
        parsed = f.parse_frame(out, 1 << 20)
        assert parsed is not None
        frame, used = parsed
        del out[:used]
        if isinstance(frame.body, f.Disposition):
            dispositions.append((int(frame.body.first), int(frame.body.last if frame.body.last is not None
                                                            else frame.body.first)))
    # One frame per run of consecutive ids: the other link's delivery splits the seven in two.
    assert sorted(dispositions) == [(mine[0].id, mine[4].id), (mine[5].id, mine[6].id)]
    peer.push(wire)
    peer.pump()
    assert peer.outcomes == [proton.Delivery.ACCEPTED] * 7   # Proton reads the ranges
    assert not r1.unsettled and all(d.settled for d in mine) and len(r2.unsettled) == 1
