"""A real iofogd provisioned on the Controller stand-in, with two microservices
``tx`` and ``rx`` of the application ``rapp`` on it and a route tx -> rx."""
from __future__ import annotations

import json
import os
from typing import Any, Iterator, Optional

import pytest

from tests.controller.standin import USER_TOKEN, ControllerStandIn, wait_until
from tests.daemon_process import RunningDaemon


class Node:
    def __init__(self, daemon: RunningDaemon, standin: ControllerStandIn, fog: str, tx: str, rx: str) -> None:
        self.daemon = daemon
        self.standin = standin
        self.fog = fog
        self.tx = tx
        self.rx = rx

    def post(self, path: str, body: Any, raw: Optional[bytes] = None,
             headers: Optional[dict[str, str]] = None) -> tuple[int, Any]:
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        data = raw if raw is not None else json.dumps(body).encode()
        status, _, answer = self.daemon.request("POST", path, raw_body=data, token=None, headers=hdrs)
        return status, answer

    def next(self, receiver: str) -> list[dict[str, Any]]:
        status, answer = self.post("/v2/messages/next", {"id": receiver})
        assert status == 200, answer
        assert answer["count"] == len(answer["messages"])
        return list(answer["messages"])

    def routes_applied(self, count: int) -> bool:
        """The daemon logged its routes after the ``count``-th change of them."""
        return self.daemon.log().count("bus: routes now") >= count

    def route(self, name: str = "txrx", src: str = "tx", dst: str = "rx") -> None:
        """POST /api/v3/routes on the stand-in as a user would (routes.log R4)."""
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", self.standin.port, timeout=10)
        conn.request("POST", "/api/v3/routes", json.dumps({"name": name, "from": src, "to": dst, "application": "rapp"}),
                     {"Content-Type": "application/json", "Authorization": USER_TOKEN})
        resp = conn.getresponse()
        body = json.loads(resp.read())
        conn.close()
        assert resp.status == 200 and body["sourceMicroserviceUuid"] and body["isNetworkConnection"] is False, body

    def unroute(self, name: str = "txrx") -> None:
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", self.standin.port, timeout=10)
        conn.request("DELETE", f"/api/v3/routes/rapp/{name}", headers={"Authorization": USER_TOKEN})
        resp = conn.getresponse()
        resp.read()
        conn.close()
        assert resp.status == 204


def start_node(root: str, standin: ControllerStandIn, route: bool = True) -> Node:
    fog = standin.create_fog("bus-agent", router_mode="none")
    tx = standin.add_microservice(fog, "tx", application="rapp", images={1: "busybox:latest", 2: "busybox:latest"})
    rx = standin.add_microservice(fog, "rx", application="rapp", images={1: "busybox:latest", 2: "busybox:latest"})
    daemon = RunningDaemon(root).start()
    node = Node(daemon, standin, fog, tx, rx)
    status, _, answer = daemon.request("POST", "/v2/config", {
        "controller-url": standin.url, "status-frequency": "1", "changes-frequency": "1"})
    assert (status, answer) == (200, {})
    status, _, answer = daemon.request("POST", "/v2/provision", {"provisioning-key": standin.provisioning_key(fog)})
    assert status == 200, answer
    if route:
        node.route()
        assert wait_until(lambda: node.routes_applied(1), 20), daemon.log()
    return node


@pytest.fixture
def standin() -> Iterator[ControllerStandIn]:
    st = ControllerStandIn().start()
    try:
        yield st
    finally:
        st.stop()


@pytest.fixture
def node(tmp_path: Any, standin: ControllerStandIn, monkeypatch: pytest.MonkeyPatch) -> Iterator[Node]:
    monkeypatch.delenv("SSL", raising=False)  # the SDK takes any non-empty SSL as "use TLS"
    n = start_node(os.path.join(str(tmp_path), "root"), standin)
    try:
        yield n
    finally:
        n.daemon.stop()
