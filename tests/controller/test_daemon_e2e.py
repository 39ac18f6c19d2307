"""Provisioning and Controller sync end to end (issue 4, docs/cli.md#commands, docs/controller-api.md).

The real iofogd daemon (a subprocess, or in this process where a test must
shorten the Controller read timeout) against the Controller stand-in built
from the 3.0.4 captures, over real loopback sockets: the ``iofog-agent`` CLI,
the Local API, a control socket (websocket-client) and config.xml on disk.
The stand-in validates what the agent sends as strictly as the Controller, so
a status report with a wrong JSON type would be refused there (and show here
as a connection state that never reaches ``ok``).
"""
from __future__ import annotations

import json
import os
import shutil
import threading
import xml.etree.ElementTree as ET
from typing import Any, Iterator

import pytest
import websocket  # websocket-client

from iofogd.daemon import Daemon
from tests.controller.standin import (
    STATUS_SCHEMA, TLS_DIR, ControllerStandIn, Recorded, tls_server, validate, wait_until,
)
from tests.daemon_process import RunningDaemon

SUCCESS = "Success - tokens, identifiers and keys removed"
DEPROVISIONED = f"Deprovisioning from controller ... \n{SUCCESS}\n"
NOT_PROVISIONED = "Deprovisioning from controller ... \nFailure - not provisioned\n"
CONNECTION = "Connection to Controller    : "
SENSOR_CONFIG = '{"threshold":5,"unit":"C"}'


# -- helpers ------------------------------------------------------------------------------------


def identity(d: RunningDaemon) -> tuple[str, str]:
    """(iofog_uuid, access_token) as config.xml holds them on disk."""
    root = ET.parse(os.path.join(d.root, "etc/iofog-agent/config.xml")).getroot()
    return root.findtext(".//iofog_uuid") or "", root.findtext(".//access_token") or ""


def connection(d: RunningDaemon) -> str:
    """The connection state as ``iofog-agent status`` prints it."""
    out = d.cli("status")
    assert out.returncode == 0, out
    line = next(line for line in out.stdout.splitlines() if line.startswith(CONNECTION))
    return line[len(CONNECTION):].strip()


def api_connection(d: RunningDaemon) -> str:
    return str(d.request("GET", "/v2/status")[2]["connection-to-controller"])


def config_get(d: RunningDaemon, mid: str) -> tuple[int, Any]:
    status, _, body = d.request("POST", "/v2/config/get", {"id": mid}, token=None)
    return status, body


def point_at(d: RunningDaemon, st: ControllerStandIn) -> None:
    """The stand-in as Controller, with 1 s loops so the tests are quick (the Local API
    is quicker than a CLI process; test_provision_through_the_cli takes iofogctl's way)."""
    body = {"controller-url": st.url, "status-frequency": "1", "changes-frequency": "1"}
    status, _, answer = d.request("POST", "/v2/config", body)
    assert (status, answer) == (200, {})


def provision(d: RunningDaemon, st: ControllerStandIn, fog: str) -> None:
    """Provision through the Local API and wait for the first changes cycle to be acknowledged:
    until then the node's config, microservices and edge resources are not yet fetched (and a
    user change made meanwhile is overwritten by the agent's config, as upstream, docs/controller-api.md#changes)."""
    mark = len(st.requests)
    status, _, body = d.request("POST", "/v2/provision", {"provisioning-key": st.provisioning_key(fog)})
    assert (status, body) == (200, {"status": "ok", "uuid": fog})
    assert wait_until(lambda: bool(after(st, "PATCH", "agent/config/changes", mark))), d.log()
    assert api_connection(d) == "ok"


def after(st: ControllerStandIn, method: str, route: str, mark: int) -> list[Recorded]:
    """The recorded ``method route`` requests made after ``mark`` requests in all."""
    with st.lock:
        return [r for r in st.requests[mark:] if r.method == method and r.route == route]


def microservice_uuids_sent(st: ControllerStandIn) -> list[str]:
    sent = st.recorded("POST", "agent/deprovision")
    assert len(sent) == 1
    return sorted(sent[0].body["microserviceUuids"])


def control_socket(port: int, mid: str) -> websocket.WebSocket:
    return websocket.create_connection(f"ws://127.0.0.1:{port}/v2/control/socket/id/{mid}", timeout=10)


def expect_signal(ws: websocket.WebSocket, opcode: bytes) -> None:
    """The next frame is the ioFog signal ``opcode`` (docs/websocket.md#control); ACK it so it is not resent."""
    assert ws.recv_data() == (websocket.ABNF.OPCODE_BINARY, opcode)
    ws.send_binary(b"\x0b")


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def standin() -> Iterator[ControllerStandIn]:
    st = ControllerStandIn().start()
    try:
        yield st
    finally:
        st.hang(False)
        st.stop()


@pytest.fixture
def agent(daemon: RunningDaemon, standin: ControllerStandIn) -> RunningDaemon:
    """A running daemon pointed at the stand-in, not provisioned."""
    point_at(daemon, standin)
    return daemon


@pytest.fixture
def fog(standin: ControllerStandIn) -> str:
    return standin.create_fog("e2e-agent")


@pytest.fixture
def node(agent: RunningDaemon, standin: ControllerStandIn, fog: str) -> RunningDaemon:
    """The daemon provisioned as ``fog`` and connected."""
    provision(agent, standin, fog)
    return agent


# -- provisioning ---------------------------------------------------------------------------------


def test_provision_through_the_cli(daemon: RunningDaemon, standin: ControllerStandIn, fog: str) -> None:
    agent = daemon
    # What iofogctl runs (docs/cli.md#scripts).
    out = agent.cli("config", "-a", standin.url, "-sf", "1", "-cf", "1")
    assert out.returncode == 0 and "Change accepted for Parameter : - a" in out.stdout, out
    assert connection(agent) == "not provisioned"
    assert identity(agent) == ("", "")
    key = standin.provisioning_key(fog)
    out = agent.cli("provision", key)
    assert (out.returncode, out.stdout) == (
        0, f'Provisioning with key "{key}" ... Result: \nProvision success - Iofog UUID is {fog}\n'), out
    # uuid and token land in config.xml, and the token is the one the Controller issued.
    assert identity(agent) == (fog, standin.token(fog))
    sent = standin.recorded("POST", "agent/provision")
    assert len(sent) == 1 and sent[0].body["type"] in (1, 2) and "authorization" not in sent[0].headers
    assert wait_until(lambda: api_connection(agent) == "ok"), agent.log()
    assert connection(agent) == "ok"
    info = agent.cli("info").stdout
    assert f"Iofog UUID                               : {fog}\n" in info


def test_status_reports_arrive_with_the_controllers_types(node: RunningDaemon, standin: ControllerStandIn,
                                                          fog: str) -> None:
    mark = len(standin.requests)
    assert wait_until(lambda: len(after(standin, "PUT", "agent/status", mark)) >= 2)
    for report in after(standin, "PUT", "agent/status", mark)[:2]:
        assert report.headers["authorization"] == standin.token(fog)
        assert validate(report.body, STATUS_SCHEMA) is None
        assert isinstance(report.body["microserviceStatus"], str)
        assert isinstance(json.loads(report.body["microserviceStatus"]), list)
        assert report.body["daemonStatus"] == "RUNNING"
    # The stand-in took them: the Controller's view of the node is live, and every microservice
    # of the node (its router, fetched in the first cycle) has a status.
    assert standin.fog_view(fog)["daemonStatus"] == "RUNNING"
    mine = {m.uuid for m in standin.microservices.values() if m.fog_uuid == fog}
    assert mine and set(standin.microservice_statuses()) == mine


def test_provision_through_the_rest_api(agent: RunningDaemon, standin: ControllerStandIn, fog: str) -> None:
    provision(agent, standin, fog)  # 200 {"status":"ok","uuid":...} and nothing else
    token = standin.token(fog)
    assert token and identity(agent) == (fog, token)
    # The node token never leaves the daemon through the Local API.
    for path in ("/v2/info", "/v2/status"):
        assert token not in json.dumps(agent.request("GET", path)[2])


def test_provision_through_commandline(agent: RunningDaemon, standin: ControllerStandIn, fog: str) -> None:
    key = standin.provisioning_key(fog)
    status, _, body = agent.request("POST", "/v2/commandline", {"command": f"provision {key}"})
    assert (status, body) == (
        200, {"response": f'Provisioning with key "{key}" ... Result: \\nProvision success - Iofog UUID is {fog}'})
    assert identity(agent)[0] == fog


def test_bad_keys_fail_with_exit_1(agent: RunningDaemon, standin: ControllerStandIn, fog: str) -> None:
    out = agent.cli("provision", "NOSUCHKY")
    assert out.returncode == 1
    assert out.stdout.startswith(
        'Provisioning with key "NOSUCHKY" ... Result: \nProvision failed with error message: '
        '"Invalid Provisioning Key'), out.stdout
    key = standin.provisioning_key(fog)
    standin.expire_key(fog)
    out = agent.cli("provision", key)
    assert out.returncode == 1 and 'error message: "Expired provision key' in out.stdout, out.stdout
    status, _, body = agent.request("POST", "/v2/provision", {"provisioning-key": key})
    assert status == 500 and body["status"] == "failed" and body["error"].startswith("Expired provision key")
    assert identity(agent) == ("", "")
    assert api_connection(agent) == "not provisioned"


def test_a_used_key_fails(node: RunningDaemon, standin: ControllerStandIn, fog: str) -> None:
    used = standin.recorded("POST", "agent/provision")[0].body["key"]
    out = node.cli("provision", used)
    assert out.returncode == 1 and 'error message: "Invalid Provisioning Key' in out.stdout, out.stdout
    # Upstream deprovisions before it provisions again (docs/controller-api.md#provisioning step 1): the old identity is gone.
    assert len(standin.recorded("POST", "agent/deprovision")) == 1
    assert identity(node) == ("", "")


def test_provisioning_again_moves_the_node(node: RunningDaemon, standin: ControllerStandIn, fog: str) -> None:
    second = standin.create_fog("e2e-agent-2")
    provision(node, standin, second)
    assert len(standin.recorded("POST", "agent/deprovision")) == 1  # the first fog was told
    assert identity(node) == (second, standin.token(second))
    mark = len(standin.requests)
    assert wait_until(lambda: bool(after(standin, "PUT", "agent/status", mark)))
    assert after(standin, "PUT", "agent/status", mark)[0].headers["authorization"] == standin.token(second)



def test_deprovision_while_provisioning_is_refused(agent: RunningDaemon, standin: ControllerStandIn,
                                                  fog: str) -> None:
    standin.hang()  # the Controller holds the provisioning call
    answers: list[tuple[int, Any]] = []
    key = standin.provisioning_key(fog)

    def call() -> None:
        status, _, body = agent.request("POST", "/v2/provision", {"provisioning-key": key})
        answers.append((status, body))
    caller = threading.Thread(target=call)
    caller.start()
    try:
        assert wait_until(lambda: bool(standin.recorded("POST", "agent/provision")))
        out = agent.cli("deprovision")
        assert (out.returncode, out.stdout) == (1, "Deprovisioning from controller ... Provisioning in progress\n")
    finally:
        standin.hang(False)  # the held call ends without an answer
        caller.join(30)
    assert answers and answers[0][0] == 500 and answers[0][1]["error"].startswith("Connection error")
    assert identity(agent) == ("", "")

# -- what microservices see ---------------------------------------------------------------------


def test_microservice_config_reaches_config_get_and_the_control_socket(
        node: RunningDaemon, standin: ControllerStandIn, fog: str) -> None:
    mid = standin.add_microservice(fog, "sensor", config=SENSOR_CONFIG)
    assert wait_until(lambda: config_get(node, mid) == (200, {"status": "okay", "config": SENSOR_CONFIG}))
    ws = control_socket(node.port, mid)
    try:
        standin.set_microservice_config(mid, '{"threshold":7}')
        expect_signal(ws, b"\x0c")
        assert config_get(node, mid) == (200, {"status": "okay", "config": '{"threshold":7}'})
        # Edge resources reach GET /v2/edgeResources (a JSON string, as upstream) and 0x0F.
        lamp = {"id": 1, "name": "lamp", "version": "1.0.0", "interfaceProtocol": "https"}
        standin.set_edge_resources(fog, [lamp])
        expect_signal(ws, b"\x0f")
        status, _, body = node.request("GET", "/v2/edgeResources", token=None)
        assert status == 200 and json.loads(body["edgeResources"]) == [lamp]
    finally:
        ws.close()
    status, body = config_get(node, "unknown-id")
    assert status == 400 and "unknown-id" in body["error"]
    standin.remove_microservice(mid)
    assert wait_until(lambda: config_get(node, mid)[0] == 400)


# -- configuration both ways (docs/controller-api.md#config-sync) ---------------------------------


def test_controller_config_reaches_info(node: RunningDaemon, standin: ControllerStandIn, fog: str) -> None:
    standin.set_fog_config(fog, cpuLimit=55, logLevel="WARNING")
    assert wait_until(lambda: node.request("GET", "/v2/info")[2]["log-level"] == "WARNING")
    info = node.cli("info").stdout
    assert "CPU Usage Limit                          : 55.00%\n" in info, info
    assert "Log Level                                : WARNING\n" in info


def test_a_controller_config_change_is_not_patched_back(node: RunningDaemon, standin: ControllerStandIn,
                                                       fog: str) -> None:
    # docs/controller-api.md#config-sync: the agent PATCHes agent/config after a local change. A change that
    # came from the Controller is the Controller's already; echoing it back would
    # also overwrite a newer Controller-side value with ours.
    mark = len(standin.requests)
    standin.set_fog_config(fog, cpuLimit=55)
    assert wait_until(lambda: node.request("GET", "/v2/info")[2]["cpu-usage-limit"] == "55.00%"), node.log()
    applied = len(after(standin, "GET", "agent/config", mark))
    assert applied >= 1
    # Two more changes cycles (1 s each): the one after the change is where a PATCH would go.
    cycles = len(after(standin, "GET", "agent/config/changes", mark))
    assert wait_until(lambda: len(after(standin, "GET", "agent/config/changes", mark)) >= cycles + 2)
    assert after(standin, "PATCH", "agent/config", mark) == []


def test_local_config_change_is_patched_to_the_controller(node: RunningDaemon, standin: ControllerStandIn,
                                                          fog: str) -> None:
    mark = len(standin.requests)
    out = node.cli("config", "-m", "2048")
    assert out.returncode == 0 and "Change accepted for Parameter : - m" in out.stdout, out
    assert wait_until(lambda: standin.fog_view(fog)["memoryLimit"] == 2048)
    assert after(standin, "PATCH", "agent/config", mark)[0].body["memoryLimit"] == 2048
    status, _, body = node.request("POST", "/v2/config", {"cpu-limit": "42"})
    assert (status, body) == (200, {})
    assert wait_until(lambda: standin.fog_view(fog)["cpuLimit"] == 42)


# -- a Controller in trouble ----------------------------------------------------------------------


def local_api_answers(d: RunningDaemon) -> None:
    """The Local API (admin, microservice side and CLI) answers while the Controller is in trouble."""
    assert d.request("GET", "/v2/status")[0] == 200
    assert d.request("GET", "/v2/edgeResources", token=None)[0] == 200
    assert d.cli("info").returncode == 0


def test_controller_failing_and_vanishing(node: RunningDaemon, standin: ControllerStandIn) -> None:
    standin.fail(500)
    assert wait_until(lambda: api_connection(node) == "not connected"), node.log()
    local_api_answers(node)
    standin.fail(None)
    assert wait_until(lambda: api_connection(node) == "ok")
    standin.vanish()
    assert wait_until(lambda: api_connection(node) == "not connected")
    assert connection(node) == "not connected"
    local_api_answers(node)
    standin.reappear()
    assert wait_until(lambda: api_connection(node) == "ok")


def test_hung_controller_does_not_hold_the_local_api(node: RunningDaemon, standin: ControllerStandIn) -> None:
    standin.hang()
    mark = len(standin.requests)
    # A sync call is now held by the Controller (its read timeout is 30 s) ...
    assert wait_until(lambda: len(standin.requests) > mark)
    # ... and everything local answers meanwhile.
    local_api_answers(node)
    assert api_connection(node) == "ok"  # nothing has failed yet: the call is only slow
    standin.hang(False)
    mark = len(standin.requests)
    assert wait_until(lambda: bool(after(standin, "PUT", "agent/status", mark)))
    assert wait_until(lambda: api_connection(node) == "ok")


def test_hung_controller_times_out_to_not_connected(inproc_daemon: Daemon, standin: ControllerStandIn,
                                                    fog: str) -> None:
    """In this process, so the read timeout can be short (the daemon's is 30 s)."""
    inproc_daemon.sync.read_timeout = 1.0  # taken by the next client, made after provisioning
    d = RunningDaemon(inproc_daemon.paths.root, port=int(inproc_daemon.server.server_address[1]))
    point_at(d, standin)
    provision(d, standin, fog)
    standin.hang()
    assert wait_until(lambda: api_connection(d) == "not connected", timeout=15)
    local_api_answers(d)
    standin.hang(False)
    assert wait_until(lambda: api_connection(d) == "ok", timeout=15)


def test_restart_while_the_controller_is_gone_uses_the_offline_cache(
        node: RunningDaemon, standin: ControllerStandIn, fog: str) -> None:
    mid = standin.add_microservice(fog, "sensor", config=SENSOR_CONFIG)
    lamp = {"id": 1, "name": "lamp", "version": "1.0.0"}
    standin.set_edge_resources(fog, [lamp])
    assert wait_until(lambda: config_get(node, mid)[0] == 200)
    assert wait_until(lambda: json.loads(node.request("GET", "/v2/edgeResources", token=None)[2]["edgeResources"]))
    assert node.stop() == 0
    standin.vanish()
    node.start()
    assert wait_until(lambda: config_get(node, mid) == (200, {"status": "okay", "config": SENSOR_CONFIG}))
    # The edge resources come from their own cache file, applied just after the microservices.
    assert wait_until(lambda: json.loads(
        node.request("GET", "/v2/edgeResources", token=None)[2]["edgeResources"]) == [lamp])
    assert api_connection(node) == "not connected"
    assert identity(node) == (fog, standin.token(fog))
    standin.reappear()
    assert wait_until(lambda: api_connection(node) == "ok")


# -- leaving the Controller -------------------------------------------------------------------------


def test_deprovision_through_the_cli(node: RunningDaemon, standin: ControllerStandIn, fog: str) -> None:
    mid = standin.add_microservice(fog, "sensor", config=SENSOR_CONFIG)
    assert wait_until(lambda: config_get(node, mid)[0] == 200)
    out = node.cli("deprovision")
    assert (out.returncode, out.stdout) == (0, DEPROVISIONED), out
    assert identity(node) == ("", "")
    # The Controller was told, with every microservice of the node (the router's too).
    assert microservice_uuids_sent(standin) == sorted(m.uuid for m in standin.microservices.values())
    assert mid in microservice_uuids_sent(standin)
    assert connection(node) == "not provisioned"
    assert config_get(node, mid)[0] == 400  # the node's microservice configs are gone
    out = node.cli("deprovision")
    assert (out.returncode, out.stdout) == (1, NOT_PROVISIONED), out


def test_deprovision_through_the_rest_api(node: RunningDaemon, standin: ControllerStandIn) -> None:
    status, _, body = node.request("DELETE", "/v2/deprovision")
    assert (status, body) == (200, {"message": SUCCESS, "status": "success"})
    assert identity(node) == ("", "")
    assert microservice_uuids_sent(standin)
    assert api_connection(node) == "not provisioned"
    status, _, body = node.request("DELETE", "/v2/deprovision")
    assert status == 500 and body["status"] == "failed" and body["error"] == "Failure - not provisioned"


def test_deleting_the_node_in_the_controller_deprovisions_locally(node: RunningDaemon, standin: ControllerStandIn,
                                                                   fog: str) -> None:
    standin.raise_flags(fog, "deleteNode")
    assert wait_until(lambda: identity(node) == ("", ""))
    assert len(standin.recorded("DELETE", "agent/delete-node")) == 1
    assert fog not in standin.fogs
    assert api_connection(node) == "not provisioned"
    assert node.cli("info").stdout.startswith("Iofog UUID                               : not provisioned\n")
    # Nothing more goes to the Controller for this node.
    mark = len(standin.requests)
    threading.Event().wait(1.5)  # more than one period of every loop but ping (60 s)
    assert [r.route for r in standin.requests[mark:]] == []



def test_a_403_to_the_status_deprovisions_locally(node: RunningDaemon, standin: ControllerStandIn) -> None:
    """Upstream's one automatic deprovision (docs/controller-api.md#client): the Controller forbids the status report."""
    standin.fail(403, route="agent/status", method="PUT")
    assert wait_until(lambda: identity(node) == ("", ""))
    assert api_connection(node) == "not provisioned"
    assert standin.recorded("POST", "agent/deprovision") == []  # no Controller call on this path


def test_restart_with_the_controller_up_fetches_at_once(node: RunningDaemon, standin: ControllerStandIn,
                                                        fog: str) -> None:
    """Containers outlive the daemon, so their configs must be back at once after a restart,
    not one changes period later (upstream fetches everything at start, docs/controller-api.md#provisioning, #offline-cache)."""
    mid = standin.add_microservice(fog, "sensor", config=SENSOR_CONFIG)
    assert wait_until(lambda: config_get(node, mid)[0] == 200)
    assert node.request("POST", "/v2/config", {"changes-frequency": "3600"})[0] == 200
    assert node.stop() == 0
    node.start()
    assert wait_until(lambda: config_get(node, mid) == (200, {"status": "okay", "config": SENSOR_CONFIG}),
                      timeout=5), node.log()


# -- TLS on demand (docs/host.md#memory) ------------------------------------------------------


def openssl_loaded(d: RunningDaemon) -> bool:
    """Whether the daemon process has CPython's _ssl module (and so OpenSSL) mapped."""
    assert d.proc is not None
    with open(f"/proc/{d.proc.pid}/maps") as f:
        return any("/_ssl." in line for line in f)


def test_openssl_is_loaded_only_for_an_https_controller(daemon: RunningDaemon,
                                                        fog_tls: tuple[ControllerStandIn, str]) -> None:
    # A node with a plain-HTTP Controller (or none) never loads OpenSSL: 3.4 MiB of
    # resident memory on x86-64. The daemon's http.client has no HTTPSConnection, so
    # provisioning over https here also proves the Controller client's own TLS connection.
    standin, fog = fog_tls
    daemon.request("GET", "/v2/status")
    assert wait_until(lambda: api_connection(daemon) == "not provisioned")   # phase 2 built
    assert not openssl_loaded(daemon)
    shutil.copy(TLS_DIR / "cert.pem", os.path.join(daemon.root, "etc/iofog-agent/cert.crt"))
    point_at(daemon, standin)
    provision(daemon, standin, fog)
    assert openssl_loaded(daemon)


@pytest.fixture
def fog_tls() -> Iterator[tuple[ControllerStandIn, str]]:
    st = ControllerStandIn(tls=tls_server()).start()
    try:
        yield st, st.create_fog("e2e-agent-tls")
    finally:
        st.stop()
