"""Two real iofogd daemons joined through a real router (RabbitMQ's AMQP 1.0 plugin): issue 14.

Node A runs the publisher ``tx``, node B the receiver ``rx``; the Controller
stand-in serves the route tx -> rx (POST /api/v3/routes, as a user would) and
each fog's ``routerHost``/``routerPort`` (the broker), which the daemons read
from ``GET agent/config`` on their first cycle and on ``routerChanged``.
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
from tests.bus.amqp.conftest import Broker, wait_for
from tests.controller.standin import USER_TOKEN, ControllerStandIn
from tests.daemon_process import RunningDaemon

IMAGES = {1: "busybox:latest", 2: "busybox:latest"}


class Nodes:
    def __init__(self, tmp: str, standin: ControllerStandIn, broker: Broker) -> None:
        self.standin = standin
        self.fog_a = standin.create_fog("node-a", router_mode="none")
        self.fog_b = standin.create_fog("node-b", router_mode="none")
        self.fog_c = standin.create_fog("node-c", router_mode="none")   # a Java agent's node (Proton)
        self.tx = standin.add_microservice(self.fog_a, "tx", application="rapp", images=IMAGES)
        self.rx = standin.add_microservice(self.fog_b, "rx", application="rapp", images=IMAGES)
        self.java = standin.add_microservice(self.fog_c, "java", application="rapp", images=IMAGES)
        for fog in (self.fog_a, self.fog_b):
            standin.set_fog_config(fog, routerHost="127.0.0.1", routerPort=broker.port)
        self.a = self._start(os.path.join(tmp, "a"), self.fog_a)
        self.b = self._start(os.path.join(tmp, "b"), self.fog_b)

    def _start(self, root: str, fog: str) -> RunningDaemon:
        daemon = RunningDaemon(root).start()
        status, _, answer = daemon.request("POST", "/v2/config", {
            "controller-url": self.standin.url, "status-frequency": "1", "changes-frequency": "1"})
        assert (status, answer) == (200, {})
        status, _, answer = daemon.request("POST", "/v2/provision", {"provisioning-key": self.standin.provisioning_key(fog)})
        assert status == 200, answer
        return daemon

    def route(self, name: str = "ab", src: str = "tx", dst: str = "rx") -> None:
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", self.standin.port, timeout=10)
        conn.request("POST", "/api/v3/routes", json.dumps({"name": name, "from": src, "to": dst, "application": "rapp"}),
                     {"Content-Type": "application/json", "Authorization": USER_TOKEN})
        resp = conn.getresponse()
        resp.read()
        conn.close()
        assert resp.status == 200

    def status_line(self, daemon: RunningDaemon) -> str:
        status, _, body = daemon.request("GET", "/v2/status")
        assert status == 200
        return str(body.get("router", body))

    def publish(self, text: str) -> None:
        status, _, answer = self.a.request("POST", "/v2/messages/new", {
            "publisher": self.tx, "version": 4, "infotype": "text", "infoformat": "utf-8",
            "contentdata": base64.b64encode(text.encode()).decode()}, token=None)
        assert status == 200, answer

    def next_texts(self) -> list[str]:
        status, _, answer = self.b.request("POST", "/v2/messages/next", {"id": self.rx}, token=None)
        assert status == 200, answer
        return [base64.b64decode(msg["contentdata"]).decode() for msg in answer["messages"]]

    def stop(self) -> None:
        for daemon in (self.a, self.b):
            daemon.stop()


@pytest.fixture
def nodes(tmp_path: Any, broker: Broker) -> Iterator[Nodes]:
    standin = ControllerStandIn().start()
    n = Nodes(str(tmp_path), standin, broker)
    try:
        yield n
    finally:
        n.stop()
        standin.stop()


def connected(daemon: RunningDaemon) -> bool:
    status, _, body = daemon.request("GET", "/v2/status")
    return status == 200 and str(body.get("router", "")).startswith("connected")


def wait_joined(n: Nodes) -> None:
    """Both linked to the router, A with its route to rx, B listening for rx (isConsumer)."""
    assert wait_for(lambda: connected(n.a) and connected(n.b), timeout=40), (n.a.log()[-3000:], n.b.log()[-3000:])
    assert wait_for(lambda: f"'{n.rx}'" in n.a.log() and f"listening for {n.rx}" in n.b.log(), timeout=40), \
        (n.a.log()[-3000:], n.b.log()[-3000:])


def receive_all(n: Nodes, wanted: list[str], timeout: float) -> list[str]:
    """Everything rx gets on B through /v2/messages/next until ``wanted`` all arrived (or timeout)."""
    received: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not set(wanted) <= set(received):
        received.extend(n.next_texts())
        time.sleep(0.2)
    return received


def receive_on_socket(port: int, rx: str, count: int, timeout: float = 60.0) -> list[str]:
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/v2/message/socket/id/{rx}", timeout=timeout)
    got: list[str] = []
    try:
        while len(got) < count:
            frame = ws.recv()
            assert isinstance(frame, bytes) and frame[0] == 0x0D
            (length,) = struct.unpack(">I", frame[1:5])
            got.append(m.decode(frame[5 : 5 + length]).contentdata.decode())
            ws.send_binary(b"\x0b")
    finally:
        ws.close()
    return got


def publish_on_socket(port: int, tx: str, texts: list[str]) -> None:
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/v2/message/socket/id/{tx}", timeout=30)
    try:
        for text in texts:
            body = m.encode(m.IoMessage(publisher=tx, infotype="text", infoformat="utf-8", contentdata=text.encode()))
            ws.send_binary(b"\x0d" + struct.pack(">I", len(body)) + body)
            receipt = ws.recv()
            assert isinstance(receipt, bytes) and receipt[0] == 0x0E, receipt
            ws.send_binary(b"\x0b")
    finally:
        ws.close()


def test_messages_cross_nodes_in_order_rest_and_socket(nodes: Nodes) -> None:
    nodes.route()
    wait_joined(nodes)
    rest = [f"rest-{i}" for i in range(200)]
    for text in rest:
        nodes.publish(text)
    received: list[str] = []
    assert wait_for(lambda: received.extend(nodes.next_texts()) or len(received) >= len(rest), timeout=60), \
        (len(received), nodes.status_line(nodes.a), nodes.status_line(nodes.b))
    assert received == rest   # in order, none twice (no fault here)
    sock = [f"sock-{i}" for i in range(200)]
    publish_on_socket(nodes.a.port, nodes.tx, sock)
    assert receive_on_socket(nodes.b.port, nodes.rx, len(sock)) == sock


def test_broker_stopped_mid_burst_loses_no_acknowledged_message(nodes: Nodes, broker: Broker) -> None:
    nodes.route()
    wait_joined(nodes)
    texts = [f"m-{i}" for i in range(600)]
    for text in texts[:200]:
        nodes.publish(text)
    broker.stop()
    try:
        for text in texts[200:400]:
            nodes.publish(text)   # acknowledged by A (on its disk) while the router is down
        assert wait_for(lambda: "unavailable" in nodes.status_line(nodes.a) or "connecting" in nodes.status_line(nodes.a),
                        timeout=30), nodes.status_line(nodes.a)
    finally:
        broker.start()
    for text in texts[400:]:
        nodes.publish(text)
    received = receive_all(nodes, texts, timeout=120)
    missing = [t for t in texts if t not in set(received)]
    if missing and os.environ.get("IOFOGD_TEST_DUMP"):
        for name, daemon in (("a", nodes.a), ("b", nodes.b)):
            with open(f"/tmp/node-{name}.log", "w") as out:
                out.write(daemon.log())
    assert not missing, (len(missing), missing[:5], len(received), nodes.status_line(nodes.a),
                         nodes.status_line(nodes.b), nodes.a.log()[-3000:], nodes.b.log()[-3000:])
    # Duplicates only for what was in flight when the broker went away.
    assert len(received) - len(set(received)) <= 400


def test_a_java_agent_on_a_third_node_both_ways(nodes: Nodes, broker: Broker) -> None:
    """Qpid Proton stands in for a Java agent's qpid-jms on node C: what iofogd on A sends to C's
    microservice arrives as the Java agent's TextMessage, and the Java agent's TextMessage for
    B's microservice reaches it through /v2/messages/next."""
    import proton
    from proton.reactor import LinkOption
    from proton.utils import BlockingConnection

    class DurableNode(LinkOption):   # RabbitMQ: every peer of a queue agrees on its durability
        def apply(self, link: Any) -> None:
            (link.target if link.is_sender else link.source).durability = proton.Terminus.DELIVERIES

    nodes.route("ac", "tx", "java")
    nodes.route("ab")
    wait_joined(nodes)
    agent = BlockingConnection(f"amqp://127.0.0.1:{broker.port}", user="guest", password="guest",
                               allowed_mechs="PLAIN")
    try:
        consumer = agent.create_receiver(nodes.java, options=DurableNode())
        nodes.publish("to-java")
        got = consumer.receive(timeout=30)
        consumer.accept()
        assert isinstance(got.body, str) and got.address == nodes.java
        assert got.annotations["x-opt-jms-msg-type"] == 5 and got.annotations["x-opt-jms-dest"] == 0
        sent = json.loads(got.body)
        assert sent["publisher"] == nodes.tx and base64.b64decode(sent["contentdata"]) == b"to-java"
        assert len(sent) == 20 and len(sent["id"]) == 32
        producer = agent.create_sender(nodes.rx, options=DurableNode())
        for i in range(3):
            body = dict(sent, id=f"{i:032x}", publisher=nodes.java, timestamp=1764650000000 + i,
                        contentdata=base64.b64encode(f"from-java-{i}".encode()).decode())
            msg = proton.Message(body=json.dumps(body), address=nodes.rx, id=f"ID:java:{i}",
                                 durable=False, creation_time=time.time())
            msg.annotations = {proton.symbol("x-opt-jms-msg-type"): proton.byte(5),
                               proton.symbol("x-opt-jms-dest"): proton.byte(0)}
            producer.send(msg)   # settled once the broker took it
    finally:
        agent.close()
    # (rx also gets "to-java" from tx: route ab, which makes rx a receiver that B listens for.)
    from_java: list[dict[str, Any]] = []

    def take() -> bool:
        status, _, answer = nodes.b.request("POST", "/v2/messages/next", {"id": nodes.rx}, token=None)
        assert status == 200
        from_java.extend(msg for msg in answer["messages"] if msg["publisher"] == nodes.java)
        return len(from_java) >= 3

    assert wait_for(take, timeout=30), from_java
    assert [(msg["id"], msg["timestamp"], base64.b64decode(msg["contentdata"]).decode()) for msg in from_java] \
        == [(f"{i:032x}", 1764650000000 + i, f"from-java-{i}") for i in range(3)]   # the sender's id and time


def test_router_changed_moves_the_link(nodes: Nodes, broker: Broker) -> None:
    """routerHost/routerPort re-read on routerChanged (the stand-in's PATCH /iofog sets it)."""
    nodes.route()
    wait_joined(nodes)
    nodes.standin.set_fog_config(nodes.fog_a, routerPort=1)
    assert wait_for(lambda: "127.0.0.1:1 unavailable" in nodes.status_line(nodes.a), timeout=30), \
        nodes.status_line(nodes.a)
    nodes.publish("while-away")   # acknowledged: waits on A's disk for the router
    nodes.standin.set_fog_config(nodes.fog_a, routerPort=broker.port)
    assert wait_for(lambda: connected(nodes.a), timeout=40), nodes.status_line(nodes.a)
    got: list[str] = []
    assert wait_for(lambda: got.extend(nodes.next_texts()) or "while-away" in got, timeout=30), got


def test_kill_9_of_the_sending_node_mid_burst_loses_no_acknowledged_message(nodes: Nodes, tmp_path: Any) -> None:
    import signal
    import threading

    nodes.route()
    wait_joined(nodes)
    acknowledged: list[str] = []
    stop = threading.Event()

    def publish() -> None:
        i = 0
        while not stop.is_set():
            text = f"k-{i}"
            try:
                status, _, _ = nodes.a.request("POST", "/v2/messages/new", {
                    "publisher": nodes.tx, "version": 4, "infotype": "t", "infoformat": "f",
                    "contentdata": base64.b64encode(text.encode()).decode()}, token=None)
            except OSError:
                return
            if status == 200:
                acknowledged.append(text)
            i += 1

    publisher = threading.Thread(target=publish)
    publisher.start()
    assert wait_for(lambda: len(acknowledged) >= 300, timeout=60)
    nodes.a.stop(sig=signal.SIGKILL)
    stop.set()
    publisher.join(10)
    # The same root and port: the messages not yet accepted by the router are on A's disk.
    nodes.a = RunningDaemon(nodes.a.root, port=nodes.a.port).start()
    received = receive_all(nodes, acknowledged, timeout=90)
    missing = [t for t in acknowledged if t not in set(received)]
    assert not missing, (len(missing), missing[:5], len(acknowledged), nodes.status_line(nodes.a))
    assert len(received) - len(set(received)) <= 300   # duplicates only for what was in flight


def test_kill_9_of_the_receiving_node_mid_burst_loses_no_acknowledged_message(nodes: Nodes) -> None:
    """B dies (kill -9) while A sends: what B had stored durably survives on B's disk, what it
    had not accepted stays in the broker's queue for its restart; only in-flight ones repeat."""
    import signal
    import threading

    nodes.route()
    wait_joined(nodes)
    texts = [f"r-{i}" for i in range(600)]
    acknowledged: list[str] = []

    def publish() -> None:
        for text in texts:
            nodes.publish(text)   # A stays up: every publish is acknowledged
            acknowledged.append(text)

    publisher = threading.Thread(target=publish)
    publisher.start()
    received: list[str] = []
    try:
        assert wait_for(lambda: received.extend(nodes.next_texts()) or len(received) >= 100, timeout=60), \
            (len(received), nodes.status_line(nodes.a), nodes.status_line(nodes.b))
        nodes.b.stop(sig=signal.SIGKILL)
        # The same root and port: what B stored before dying waits there for rx.
        nodes.b = RunningDaemon(nodes.b.root, port=nodes.b.port).start()
    finally:
        publisher.join(120)
    assert not publisher.is_alive() and acknowledged == texts
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not set(acknowledged) <= set(received):
        received.extend(nodes.next_texts())
        time.sleep(0.2)
    missing = [t for t in acknowledged if t not in set(received)]
    assert not missing, (len(missing), missing[:5], len(received), nodes.status_line(nodes.a),
                         nodes.status_line(nodes.b), nodes.b.log()[-3000:])
    # Duplicates only for what was in flight to B (its credit window) when it died.
    assert len(received) - len(set(received)) <= 300


def rss_kib(daemon: RunningDaemon) -> int:
    assert daemon.proc is not None
    with open(f"/proc/{daemon.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_memory_stays_bounded_while_the_broker_is_down(nodes: Nodes, broker: Broker) -> None:
    """10,000 messages for a remote receiver while the router is down wait on A's disk, not in
    its memory; when the router is back they all arrive."""
    nodes.route()
    wait_joined(nodes)
    warm = [f"w-{i}" for i in range(200)]   # the code paths and buffers in use before measuring
    publish_on_socket(nodes.a.port, nodes.tx, warm)
    got: list[str] = []
    assert wait_for(lambda: got.extend(nodes.next_texts()) or len(got) >= len(warm), timeout=60), len(got)
    broker.stop()
    texts = [f"d-{i:05d}" for i in range(10_000)]
    try:
        publish_on_socket(nodes.a.port, nodes.tx, texts[:200])
        assert wait_for(lambda: "connected" not in nodes.status_line(nodes.a), timeout=30), nodes.status_line(nodes.a)
        before = rss_kib(nodes.a)
        publish_on_socket(nodes.a.port, nodes.tx, texts[200:])   # every one acknowledged by A
        growth = rss_kib(nodes.a) - before
    finally:
        broker.start()
    assert growth < 4 * 1024, f"RSS grew {growth} KiB for {len(texts) - 200} waiting messages"
    received = receive_all(nodes, texts, timeout=180)
    missing = [t for t in texts if t not in set(received)]
    assert not missing, (len(missing), missing[:5], len(received), nodes.status_line(nodes.a), nodes.status_line(nodes.b))
    print(f"RSS growth of A for {len(texts) - 200} messages waiting for the router: {growth} KiB")
