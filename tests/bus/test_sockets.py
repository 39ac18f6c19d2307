"""The message socket and the REST endpoints' refusals, against the daemon in this process.

The daemon runs here (``inproc_daemon``) so that a test can shorten the resend
schedule (20 s, then every 10 s, up to 10 sends in production) and hand the
bus its microservice list directly, the one internal call through which the
Controller's list enters.  Everything else is real: sockets, files, threads.
"""
from __future__ import annotations

import base64
import json
import os
import struct
import time
from typing import Any, Iterator

import pytest
import websocket  # websocket-client

from iofogd.bus import message as m
from tests.controller.standin import wait_until

TX, RX, LONELY = "txTXtxTXtxTXtxTXtxTXtxTXtxTXtxTX", "rxRXrxRXrxRXrxRXrxRXrxRXrxRXrxRX", "lonely-microservice"


class Local:
    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon
        self.bus = daemon.app.bus()
        self.port = daemon.api_port

    def post(self, path: str, body: Any = None, raw: bytes | None = None,
             content_type: str = "application/json") -> tuple[int, Any]:
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        data = raw if raw is not None else json.dumps(body).encode()
        conn.request("POST", path, data, {"Content-Type": content_type})
        resp = conn.getresponse()
        text = resp.read()
        conn.close()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text

    def publish(self, text: str, publisher: str = TX) -> dict[str, Any]:
        status, answer = self.post("/v2/messages/new", {
            "publisher": publisher, "version": 4, "infotype": "t", "infoformat": "f",
            "contentdata": base64.b64encode(text.encode()).decode()})
        assert status == 200, answer
        return dict(answer)

    def socket(self, mid: str) -> websocket.WebSocket:
        return websocket.create_connection(f"ws://127.0.0.1:{self.port}/v2/message/socket/id/{mid}", timeout=10)


@pytest.fixture
def local(inproc_daemon: Any) -> Iterator[Local]:
    node = Local(inproc_daemon)
    node.bus.set_microservices([
        {"uuid": TX, "routes": [RX, "elsewhere-microservice"], "isConsumer": False, "logSize": 1},
        {"uuid": RX, "routes": [], "isConsumer": True, "logSize": 1},
        {"uuid": LONELY, "routes": [], "isConsumer": False, "logSize": 1},
    ])
    hub = node.bus.sockets
    hub.first_retry_after, hub.retry_every, hub.max_sends = 0.6, 0.3, 4
    yield node


def text_of(frame: bytes) -> str:
    assert frame[0] == 0x0D
    (length,) = struct.unpack(">I", frame[1:5])
    return m.decode(frame[5 : 5 + length]).contentdata.decode()


# -- the resend schedule ---------------------------------------------------------------------------------


def test_never_acking_socket_gets_resends_then_is_closed_and_nothing_is_lost(local: Local) -> None:
    for text in ("a", "b", "c"):
        local.publish(text)
    ws = local.socket(RX)
    seen: list[tuple[float, str]] = []
    t0 = time.monotonic()
    try:
        while True:
            opcode, data = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code = struct.unpack(">H", data[:2])[0]
                break
            if opcode == websocket.ABNF.OPCODE_BINARY:
                seen.append((time.monotonic() - t0, text_of(data)))
    finally:
        ws.close()
    assert code == 1008
    assert [t for _, t in seen][:3] == ["a", "b", "c"]          # in order first
    for text in "abc":
        times = [at for at, t in seen if t == text]
        assert len(times) == 4                                  # max_sends in all
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert gaps[0] >= 0.6 - 0.05 and all(g >= 0.3 - 0.05 for g in gaps[1:])
    # Not one was acknowledged: all wait for /v2/messages/next now.
    assert wait_until(lambda: not local.bus.sockets.is_open(RX))
    status, body = local.post("/v2/messages/next", {"id": RX})
    assert [base64.b64decode(x["contentdata"]) for x in body["messages"]] == [b"a", b"b", b"c"]


def test_reconnect_gets_what_was_not_acknowledged(local: Local) -> None:
    for text in ("one", "two", "three"):
        local.publish(text)
    ws = local.socket(RX)
    assert text_of(ws.recv_data()[1]) == "one"
    ws.send_binary(b"\x0b")   # "one" acknowledged
    assert text_of(ws.recv_data()[1]) == "two"
    assert text_of(ws.recv_data()[1]) == "three"
    ws.close()
    assert wait_until(lambda: not local.bus.sockets.is_open(RX))
    ws = local.socket(RX)
    try:
        assert [text_of(ws.recv_data()[1]) for _ in range(2)] == ["two", "three"]
        ws.send_binary(b"\x0b")
        ws.send_binary(b"\x0b")
        assert wait_until(lambda: local.bus.sockets.in_flight(RX) == [])
    finally:
        ws.close()
    assert wait_until(lambda: not local.bus.sockets.is_open(RX))
    assert local.post("/v2/messages/next", {"id": RX})[1]["count"] == 0


def test_acks_of_receipts_and_messages_are_told_apart(local: Local) -> None:
    """A microservice that publishes and receives on one socket ACKs both kinds in order."""
    local.bus.set_microservices([{"uuid": RX, "routes": [RX], "isConsumer": True}])
    ws = local.socket(RX)
    try:
        body = m.encode(m.IoMessage(publisher=RX, infotype="t", infoformat="f", contentdata=b"self"))
        ws.send_binary(b"\x0d" + struct.pack(">I", len(body)) + body)
        frames = [ws.recv_data()[1] for _ in range(2)]
        assert sorted(f[0] for f in frames) == [0x0D, 0x0E]
        receipt = next(f for f in frames if f[0] == 0x0E)
        assert (receipt[1], receipt[2], len(receipt)) == (32, 8, 3 + 32 + 8)
        ws.send_binary(b"\x0b")
        ws.send_binary(b"\x0b")
        assert wait_until(lambda: local.bus.sockets.in_flight(RX) == [])
    finally:
        ws.close()


# -- malformed input on the socket ---------------------------------------------------------------------


def close_code(ws: websocket.WebSocket) -> int:
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return int(struct.unpack(">H", data[:2])[0])


@pytest.mark.parametrize("frame, code", [
    (b"\x0d\x00\x00\x01\x00" + b"\x00\x04" + b"\x00" * 31, 1007),          # announces more than it carries
    (b"\x0d\x00\x00\x00\x21" + b"\x00\x03" + b"\x00" * 31, 1007),          # version 3
    (b"\x0d\x00\x00\x00\x10" + b"\x00\x04" + b"\x00" * 14, 1007),          # shorter than a header
    (b"\x0d\x00\x00\x00\x21" + b"\x00\x04" + b"\x00" * 31, 1008),          # no publisher
    (b"\x0d", 1007),
])
def test_malformed_publish_closes_the_socket(local: Local, frame: bytes, code: int) -> None:
    ws = local.socket(TX)
    try:
        ws.send_binary(frame)
        assert close_code(ws) == code
    finally:
        ws.close()
    assert local.bus.processed == 0


def test_garbage_frames_are_ignored_and_the_socket_stays(local: Local) -> None:
    ws = local.socket(TX)
    try:
        ws.send_binary(b"\x42garbage")
        ws.send("text is not ioFog")
        ws.send_binary(b"\x0b")   # an ACK with nothing outstanding
        body = m.encode(m.IoMessage(publisher=TX, infotype="t", infoformat="f", contentdata=b"ok"))
        ws.send_binary(b"\x0d" + struct.pack(">I", len(body)) + body)
        assert ws.recv_data()[1][0] == 0x0E
    finally:
        ws.close()


def test_oversized_socket_message_closes_1009(local: Local) -> None:
    ws = local.socket(TX)
    try:
        ws.send_binary(b"\x0d" + b"\x00" * (2 << 20))
        assert close_code(ws) == 1009
    finally:
        ws.close()


# -- REST validation (docs/local-api.md#messages-new, #messages-query, #messages-next) ----------------------

GOOD = {"publisher": TX, "version": 4, "infotype": "t", "infoformat": "f", "contentdata": ""}


def without(key: str) -> dict[str, Any]:
    return {k: v for k, v in GOOD.items() if k != key}


@pytest.mark.parametrize("body, error", [
    (without("publisher"), "Validation Error, Error: Missing input field publisher "),
    (without("version"), "Validation Error, Error: Missing input field version "),
    (without("infotype"), "Validation Error, Error: Missing input field infotype "),
    (without("infoformat"), "Validation Error, Error: Missing input field infoformat "),
    (without("contentdata"), "Validation Error, Error: Missing input field contentdata "),
    (dict(GOOD, publisher=" "), "Validation Error, Error: Missing input field value publisher "),
    (dict(GOOD, infotype=""), "Validation Error, Error: Missing input field value infotype "),
    (dict(GOOD, infoformat=""), "Validation Error, Error: Missing input field value infoformat "),
    (dict(GOOD, publisher=5), "Validation Error, Error: field publisher must be a string"),
    (dict(GOOD, version="4"), "Validation Error, Error: Invalid  value for version"),
    (dict(GOOD, sequencenumber=-1), "Validation Error, Error: Invalid  value for field sequence number "),
    (dict(GOOD, sequencetotal="2"), "Validation Error, Error: Invalid  value for field sequence total "),
    (dict(GOOD, priority=1.5), "Validation Error, Error: Invalid  value for field priority "),
    (dict(GOOD, chainposition=None), "Validation Error, Error: Invalid  value for field chain position "),
    (dict(GOOD, difficultytarget="x"), "Validation Error, Error: Invalid  value for field difficulty target "),
    (dict(GOOD, contentdata="not base64!"),
     " Message Parsing Error, field contentdata is not valid base64: Only base64 data is allowed"),
    (dict(GOOD, publisher="p" * 256), " Message Parsing Error, field publisher is 256 bytes; the binary form allows 255"),
])
def test_new_validation_messages(local: Local, body: dict[str, Any], error: str) -> None:
    status, answer = local.post("/v2/messages/new", body)
    assert status == 400 and answer["status"] == "failed"
    assert answer["error"].startswith(error)


@pytest.mark.parametrize("body, error", [
    ({"timeframestart": 0, "timeframeend": 1, "publishers": []}, "Error: Missing input field id"),
    ({"id": RX, "timeframestart": 0, "publishers": []}, "Error: Missing input field timeframe start or end"),
    ({"id": RX, "timeframestart": 0, "timeframeend": 1}, "Error: Missing input field publishers"),
    ({"id": RX, "timeframestart": "0", "timeframeend": 1, "publishers": []}, "Error: Invalid value of timeframestart"),
    ({"id": RX, "timeframestart": 0, "timeframeend": 1.5, "publishers": []}, "Error: Invalid value of timeframeend"),
    ({"id": " ", "timeframestart": 0, "timeframeend": 1, "publishers": []}, "Error: Missing input field value id"),
    ({"id": RX, "timeframestart": 0, "timeframeend": 1, "publishers": "x"},
     "Error: publishers must be an array of microservice ids"),
])
def test_query_validation_messages(local: Local, body: dict[str, Any], error: str) -> None:
    status, answer = local.post("/v2/messages/query", body)
    assert (status, answer["error"]) == (400, f"Incorrect input content/data {error}")


def test_query_permission_and_empty_window(local: Local) -> None:
    published = local.publish("q")
    ts = published["timestamp"]
    # Upstream dropped the connection for a permitted publisher with nothing in the window.
    status, answer = local.post("/v2/messages/query", {"id": RX, "timeframestart": 0, "timeframeend": 1,
                                                      "publishers": [TX]})
    assert (status, answer["count"], answer["messages"], answer["timeframeend"]) == (200, 0, [], 1)
    # No route from TX to LONELY: TX's messages are not LONELY's to read.
    status, answer = local.post("/v2/messages/query", {"id": LONELY, "timeframestart": 0, "timeframeend": ts,
                                                      "publishers": [TX]})
    assert (status, answer["count"]) == (200, 0)
    status, answer = local.post("/v2/messages/query", {"id": RX, "timeframestart": ts, "timeframeend": ts,
                                                      "publishers": [TX, LONELY]})
    assert (status, answer["count"], answer["timeframeend"]) == (200, 1, ts)


def test_next_validation_and_unknown_ids(local: Local) -> None:
    assert local.post("/v2/messages/next", {})[1]["error"] == "Incorrect content/data Id value not found "
    assert local.post("/v2/messages/next", {"id": "  "})[0] == 400
    assert local.post("/v2/messages/next", {"id": 5})[0] == 400
    assert local.post("/v2/messages/next", {"id": "nobody"})[1] == {"status": "okay", "count": 0, "messages": []}


@pytest.mark.parametrize("path", ["/v2/messages/new", "/v2/messages/next", "/v2/messages/query", "/v2/log"])
def test_malformed_bodies_are_400_never_a_dropped_connection(local: Local, path: str) -> None:
    for raw in (b"", b"{", b"[1]", b"\xff\xfe"):
        status, answer = local.post(path, raw=raw)
        assert status == 400 and answer["status"] == "failed", (raw, answer)
    status, answer = local.post(path, {"id": RX}, content_type="text/plain")
    assert (status, answer["error"]) == (400, "Incorrect content type text/plain")


def test_oversized_rest_message_is_413(local: Local) -> None:
    status, answer = local.post("/v2/messages/new", dict(GOOD, contentdata="A" * (2 << 20)))
    assert status == 413 and answer["status"] == "failed"


def test_remote_receivers_wait_on_disk_while_there_is_no_router(local: Local) -> None:
    # Unprovisioned: no router (local delivery only). What is routed to a receiver on
    # another node waits in its queue file for the router link (issue 14), bounded by the
    # storage limit; the publisher hears "okay" all the same, as upstream.
    local.publish("1")
    local.publish("2")
    queue = local.bus.store.existing_queue("elsewhere-microservice")
    assert queue is not None
    assert [m.decode(e.data).contentdata for e in queue.read(queue.consumed, 10)] == [b"1", b"2"]
    status = local.bus.status()
    assert status.startswith("no router: local delivery only") and "0 message(s) sent" in status
    assert local.bus.processed == 2


# -- /v2/log (docs/local-api.md#log, docs/host.md#microservice-logs) -------------------------------------


def test_microservice_log(local: Local) -> None:
    assert local.post("/v2/log", {"id": RX, "type": "info", "message": "hello"}) == (200, {"status": "okay"})
    assert local.post("/v2/log", {"id": RX, "type": "oops", "message": "héllo"}) == (200, {"status": "okay"})
    path = os.path.join(local.daemon.store.current.log_directory, f"{RX}.0.log")
    lines = [json.loads(line) for line in open(path, encoding="utf-8")]
    assert [(x["level"], x["message"], x["module"]) for x in lines] == [("INFO", "hello", RX), ("WARNING", "héllo", RX)]
    assert set(lines[0]) == {"timestamp", "level", "agent_id", "pid", "hostname", "thread", "module", "message"}
    status, answer = local.post("/v2/log", {"id": "nobody", "type": "info", "message": "x"})
    assert status == 400 and answer["error"] == "Log message parsing error, no microservice with id nobody runs on this node"
    status, answer = local.post("/v2/log", {"id": RX, "type": "info"})
    assert (status, answer["error"]) == (400, "Log message parsing error, missing field message")


# -- the production schedule, on a driven clock ------------------------------------------------------------


class RecordingSession:
    """Stands for a WebSocket session in a clock-driven test: records what the hub sends."""

    def __init__(self) -> None:
        self.path = "/v2/message/socket/id/rx"
        self.sent: list[bytes] = []
        self.closed: list[int] = []

    def send_binary(self, data: bytes) -> None:
        self.sent.append(data)

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed.append(code)


def test_production_schedule_20s_then_every_10s_10_sends_then_1008(tmp_path: Any) -> None:
    from iofogd.bus.sockets import MessageSockets
    from iofogd.bus.waiting import WaitingQueue, encode_entry

    queue = WaitingQueue(str(tmp_path), "rx")
    queue.append(encode_entry(m.encode(m.IoMessage(publisher="tx", contentdata=b"x"))))
    queue.sync()
    queue.publish()
    now = [1000.0]
    hub = MessageSockets(lambda rid: queue, clock=lambda: now[0])
    assert (hub.first_retry_after, hub.retry_every, hub.max_sends) == (20.0, 10.0, 10)   # the daemon's
    session = RecordingSession()
    hub.register("rx", session)   # type: ignore[arg-type]
    sends_at = [0.0]
    for t in range(1, 121):
        now[0] = 1000.0 + t
        before = len(session.sent)
        hub.tick()
        if len(session.sent) > before:
            sends_at.append(float(t))
        if session.closed:
            closed_at = t
            break
    assert sends_at == [0.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0]
    assert session.closed == [1008] and closed_at == 110
    assert queue.consumed == 0 and not hub.is_open("rx")   # still waiting for the next consumer
    # An ACK before the schedule runs out settles it: nothing more is sent.
    session2 = RecordingSession()
    hub.register("rx", session2)   # type: ignore[arg-type]
    hub.on_message(session2, b"\x0b")   # type: ignore[arg-type]
    now[0] += 100
    hub.tick()
    assert len(session2.sent) == 1 and queue.consumed == queue.end
    queue.close()


def test_a_bus_that_cannot_open_its_files_is_503_and_the_daemon_runs(tmp_path: Any) -> None:
    from tests.daemon_process import RunningDaemon

    root = os.path.join(str(tmp_path), "root")
    os.makedirs(os.path.join(root, "var/lib/iofog-agent"))
    with open(os.path.join(root, "var/lib/iofog-agent/messages"), "w") as f:
        f.write("a file where the message directory should be")   # even root cannot mkdir under it
    daemon = RunningDaemon(root).start()
    try:
        status, _, answer = daemon.request("POST", "/v2/messages/new", GOOD, token=None)
        assert status == 503 and answer["error"].startswith("The message bus is not running: cannot open")
        status, _, report = daemon.request("GET", "/v2/status")
        assert status == 200 and report["iofog-daemon"] == "RUNNING"
        with pytest.raises(websocket.WebSocketBadStatusException) as excinfo:
            websocket.create_connection(f"ws://127.0.0.1:{daemon.port}/v2/message/socket/id/{RX}", timeout=10)
        assert excinfo.value.status_code == 503
        assert "message bus not started" in daemon.log()
    finally:
        daemon.stop()


def test_a_container_may_use_the_bus_only_as_itself(local: Local) -> None:
    """The identity check (issue 12) on every bus endpoint without a token: the loopback
    address stands for RX's container; publishing as TX, reading TX's messages, querying
    as TX, logging as TX and a message socket for TX are 403; as RX they pass."""
    local.daemon.app.identity.addresses.replace([(RX, "cid-rx", ["127.0.0.1"])])
    try:
        body = {"publisher": TX, "version": 4, "infotype": "t", "infoformat": "f", "contentdata": ""}
        assert local.post("/v2/messages/new", body)[0] == 403
        assert local.post("/v2/messages/next", {"id": TX})[0] == 403
        query = {"id": TX, "timeframestart": 0, "timeframeend": 1, "publishers": [RX]}
        assert local.post("/v2/messages/query", query)[0] == 403
        assert local.post("/v2/log", {"id": TX, "type": "info", "message": "m"})[0] == 403
        with pytest.raises(websocket.WebSocketBadStatusException) as excinfo:
            local.socket(TX)
        assert excinfo.value.status_code == 403
        assert local.post("/v2/messages/next", {"id": RX})[0] == 200
        assert local.post("/v2/messages/query", dict(query, id=RX, publishers=[TX]))[0] == 200
        local.socket(RX).close()
    finally:
        local.daemon.app.identity.addresses.replace(())
