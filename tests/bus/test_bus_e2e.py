"""The message bus through the real daemon, with the published Python SDK and routes from the stand-in.

The SDK (PyPI ``iofog`` 3.0.0b2) is used as published.  Its REST receive calls
(``get_next_messages``, the query) raise TypeError on Python 3 before sending
anything (docs/websocket.md#sdk-python), so receiving over REST is done here with
plain HTTP, exactly as those calls would send it; its string fields decoded
from the binary form come out as ``"bytearray(b'...')"`` (same section), so the
tests compare the SDK's numbers and bytes, and unwrap its strings.

When the daemon stops, the SDK's reconnect thread dies on ``e.message`` (an
AttributeError in its own thread): that is the only way to stop it, so the
warning it raises is expected.
"""
from __future__ import annotations

import ast
import base64
import json
import os
import signal
import struct
import threading
import time
from typing import Any

import pytest
import websocket  # websocket-client

from iofogd.bus import message as m
from tests.bus.conftest import Node
from tests.controller.standin import wait_until
from tests.daemon_process import RunningDaemon

client_module = pytest.importorskip("iofog.microservices.client", reason="the Python SDK is not installed")
listener_module = pytest.importorskip("iofog.microservices.listener")
iomessage_module = pytest.importorskip("iofog.microservices.iomessage")

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")


def sdk_str(value: Any) -> str:
    """A string field as the SDK decodes it: ``"bytearray(b'x')"`` (its Python 3 bug) -> ``"x"``."""
    text = str(value)
    if text.startswith("bytearray(") and text.endswith(")"):
        return bytes(ast.literal_eval(text[len("bytearray("):-1])).decode()
    return text


class Listener(listener_module.IoFogMessageWsListener):  # type: ignore[misc,name-defined]
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[Any] = []
        self.receipts: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def on_message(self, io_msg: Any) -> None:
        with self.lock:
            self.messages.append(io_msg)

    def on_receipt(self, message_id: Any, timestamp: int) -> None:
        with self.lock:
            self.receipts.append((sdk_str(message_id), timestamp))


def sdk_client(node: Node, mid: str) -> Any:
    return client_module.Client(id=mid, host="127.0.0.1", port=node.daemon.port)


def sdk_message(text: str, seq: int = 0) -> Any:
    msg = iomessage_module.IoMessage()
    msg.infotype = "text"
    msg.infoformat = "utf-8"
    msg.contentdata = text
    msg.contextdata = ""
    msg.sequencenumber = seq
    return msg


def socket_of(client: Any, node: Node, receiver: str) -> Listener:
    listener = Listener()
    client.establish_message_ws_connection(listener)
    assert wait_until(lambda: client.message_ws_client.is_open, 10)
    return listener


def stop_sdk(node: Node, *clients: Any) -> None:
    node.daemon.stop()
    for client in clients:
        worker = client.message_ws_client.worker if client.message_ws_client else None
        if worker is not None:
            worker.join(15)


# -- publishing and receiving -----------------------------------------------------------------------


def test_sdk_rest_publish_then_next_and_query(node: Node) -> None:
    tx = sdk_client(node, node.tx)
    answer = tx.post_message(sdk_message("hello over REST", seq=7))
    assert set(answer) == {"id", "timestamp"} and len(answer["id"]) == 32 and answer["id"] == answer["id"].lower()
    messages = node.next(node.rx)
    assert len(messages) == 1
    got = messages[0]
    assert list(got) == list(m.JSON_KEYS)
    assert (got["id"], got["timestamp"], got["publisher"]) == (answer["id"], answer["timestamp"], node.tx)
    assert base64.b64decode(got["contentdata"]) == b"hello over REST" and got["sequencenumber"] == 7
    assert node.next(node.rx) == []   # consumed
    status, body = node.post("/v2/messages/query", {
        "id": node.rx, "timeframestart": answer["timestamp"] - 1, "timeframeend": answer["timestamp"] + 1,
        "publishers": [node.tx]})
    assert status == 200 and body["count"] == 1 and body["messages"][0] == got
    assert body["timeframeend"] == answer["timestamp"]
    status, _, report = node.daemon.request("GET", "/v2/status")
    assert report["messages-processed"] == "about 1"

    def counted() -> bool:   # the Controller hears of it in the status (docs/controller-api.md#status); its schema checks the types
        for call in node.standin.recorded("PUT", "agent/status"):
            body = call.body or {}
            if json.loads(body.get("microserviceMessageCounts", "[]")) == [{"id": node.tx, "messagecount": 1}]:
                return body["processedMessages"] == 1
        return False

    assert wait_until(counted, 20), node.daemon.log()


def test_sdk_socket_publish_and_receive(node: Node) -> None:
    tx, rx = sdk_client(node, node.tx), sdk_client(node, node.rx)
    tx_listener = socket_of(tx, node, node.tx)
    rx_listener = socket_of(rx, node, node.rx)
    try:
        tx.post_message_via_socket(sdk_message("over the socket", seq=1))
        assert wait_until(lambda: len(tx_listener.receipts) == 1 and len(rx_listener.messages) == 1, 10)
        (receipt_id, receipt_ts), = tx_listener.receipts
        got = rx_listener.messages[0]
        assert sdk_str(got.id) == receipt_id and got.timestamp == receipt_ts
        assert bytes(got.contentdata) == b"over the socket" and sdk_str(got.publisher) == node.tx
        # While its socket is open, REST polling returns nothing for it (docs/local-api.md#messages-next) ...
        tx.post_message(sdk_message("second"))
        assert wait_until(lambda: len(rx_listener.messages) == 2, 10)
        assert node.next(node.rx) == []
        # ... and a REST-published message was pushed on the socket all the same.
        assert bytes(rx_listener.messages[1].contentdata) == b"second"
    finally:
        stop_sdk(node, tx, rx)


def test_route_added_and_removed_without_restart(node: Node) -> None:
    def publish(text: str) -> None:
        status, answer = node.post("/v2/messages/new", {"publisher": node.tx, "version": 4, "infotype": "t",
                                                        "infoformat": "f", "contentdata": base64.b64encode(text.encode()).decode()})
        assert status == 200 and answer["status"] == "okay", answer

    publish("routed")
    node.unroute()
    assert wait_until(lambda: node.routes_applied(2), 20)
    publish("no route: dropped, as upstream")
    node.route()
    assert wait_until(lambda: node.routes_applied(3), 20)
    publish("routed again")
    texts = [base64.b64decode(x["contentdata"]).decode() for x in node.next(node.rx)]
    assert texts == ["routed", "routed again"]
    # The microservice list shows it as the Controller 3.0.4 does (routes.log R6).
    items = {x["uuid"]: x for x in node.standin._microservices(node.standin.fogs[node.fog])[1]["microservices"]}
    assert items[node.tx]["routes"] == [node.rx] and items[node.rx]["isConsumer"] is True


def test_thousand_messages_through_an_acking_socket_in_order(node: Node) -> None:
    rx = sdk_client(node, node.rx)
    listener = socket_of(rx, node, node.rx)
    try:
        ws = websocket.create_connection(f"ws://127.0.0.1:{node.daemon.port}/v2/message/socket/id/{node.tx}")
        for seq in range(1, 1001):
            body = m.encode(m.IoMessage(publisher=node.tx, sequencenumber=seq, infotype="t", infoformat="f",
                                        contentdata=b"%d" % seq))
            ws.send_binary(b"\x0d" + struct.pack(">I", len(body)) + body)
        receipts = 0
        while receipts < 1000:
            opcode, data = ws.recv_data()
            assert data[0] == 0x0E and data[2] == 8
            ws.send_binary(b"\x0b")
            receipts += 1
        ws.close()
        assert wait_until(lambda: len(listener.messages) >= 1000, 60)
        time.sleep(0.5)   # anything extra (a duplicate) would arrive now
        seqs = [x.sequencenumber for x in listener.messages]
        assert seqs == list(range(1, 1001))
    finally:
        stop_sdk(node, rx)


# -- a crash in a burst ---------------------------------------------------------------------------------


def _burst(daemon: RunningDaemon, publisher: str, count: int, kill_after: int) -> list[str]:
    """Publish ``count`` messages on a socket; kill -9 the daemon after ``kill_after`` receipts."""
    ws = websocket.create_connection(f"ws://127.0.0.1:{daemon.port}/v2/message/socket/id/{publisher}", timeout=30)
    acked: list[str] = []
    stop = threading.Event()

    def send() -> None:
        for seq in range(1, count + 1):
            if stop.is_set():
                return
            body = m.encode(m.IoMessage(publisher=publisher, sequencenumber=seq, infotype="t", infoformat="f",
                                        contentdata=os.urandom(64)))
            try:
                ws.send_binary(b"\x0d" + struct.pack(">I", len(body)) + body)
            except Exception:
                return

    sender = threading.Thread(target=send)
    sender.start()
    try:
        while True:
            _, data = ws.recv_data()
            acked.append(data[3 : 3 + data[1]].decode())
            if len(acked) == kill_after:
                assert daemon.proc is not None
                daemon.proc.send_signal(signal.SIGKILL)
                break
    finally:
        stop.set()
        sender.join(30)
        ws.close()
    daemon.proc.wait()
    return acked


@pytest.mark.parametrize("round_", range(2))
def test_kill_9_mid_burst_no_acknowledged_message_lost(node: Node, round_: int) -> None:
    acked = _burst(node.daemon, node.tx, 10_000, 2500 + 2000 * round_)
    node.daemon.stop()
    node.daemon.start()   # same root: the archive and the queues are reloaded
    assert wait_until(lambda: node.routes_applied(2), 20)   # routes again, from the cache or the Controller
    delivered: list[str] = []
    while True:
        batch = node.next(node.rx)
        if not batch:
            break
        delivered += [x["id"] for x in batch]
    assert len(delivered) == len(set(delivered))
    assert set(acked) <= set(delivered)
    status, body = node.post("/v2/messages/query", {"id": node.rx, "timeframestart": 0,
                                                    "timeframeend": 2**53, "publishers": [node.tx]})
    assert status == 200 and set(acked) <= {x["id"] for x in body["messages"]}


def test_sdk_rest_receive_calls_with_their_python3_bugs_patched_in_memory(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK's own next and query calls, as docs/websocket.md#sdk-python says they must be patched
    (their request bodies are str where urllib needs bytes; their JSON decoder calls
    ``str.encode`` on bytes): what they send and read is the SDK's own."""
    import iofog.microservices.httpclient as httpclient
    from iofog.microservices import util

    real_post = util.make_post_request
    monkeypatch.setattr(httpclient, "make_post_request",
                        lambda url, kind, body: real_post(url, kind, body.encode() if isinstance(body, str) else body))

    class Str(str):
        """``str`` inside the SDK's iomessage module, except that ``str.encode(b)`` of bytes keeps them."""

        @staticmethod
        def encode(value: Any, *args: Any) -> bytes:  # type: ignore[override]
            return bytes(value) if isinstance(value, (bytes, bytearray)) else str.encode(value, *args)

    tx, rx = sdk_client(node, node.tx), sdk_client(node, node.rx)
    sent = tx.post_message(sdk_message("through the SDK's own receive", seq=3))
    monkeypatch.setattr(iomessage_module, "str", Str, raising=False)   # its decoder only: after sending
    (got,) = rx.get_next_messages()
    assert (got.id, got.timestamp, got.publisher, got.sequencenumber) == (sent["id"], sent["timestamp"], node.tx, 3)
    assert got.contentdata == b"through the SDK's own receive"
    assert rx.get_next_messages() == []
    answer = rx.get_next_messages_from_publishers_within_timeframe(
        {"timeframestart": sent["timestamp"], "timeframeend": sent["timestamp"], "publishers": [node.tx]})
    assert answer["timeframeend"] == sent["timestamp"] and [m.id for m in answer["messages"]] == [sent["id"]]
