"""The sync loops against the stand-in, with a fake AgentPort that records what reaches the daemon."""
from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import pytest

from iofogd.controller.cache import MICROSERVICES, OfflineCache
from iofogd.controller.client import ControllerClient
from iofogd.controller.sync import STATUS_TYPES, ControllerSettings, ControllerSync, build_status
from tests.controller.standin import STATUS_SCHEMA, ControllerStandIn, validate, wait_until

if TYPE_CHECKING:  # the Protocol exists for mypy only (iofogd/record.py)
    from iofogd.controller.sync import AgentPort

MS_ID = "hpf2f8WNWYmLTp6n9T4ZxLpxWBHXZBfC"
LOCAL_CONFIG = {
    "networkInterface": "eth0", "dockerUrl": "unix:///var/run/docker.sock", "diskLimit": 50,
    "diskDirectory": "/var/lib/iofog-agent/", "memoryLimit": 4096, "cpuLimit": 80, "logLimit": 10,
    "logDirectory": "/var/log/iofog-agent/", "logFileCount": 10, "statusFrequency": 10, "changeFrequency": 20,
    "deviceScanFrequency": 60, "watchdogEnabled": False, "gpsMode": "auto", "latitude": 52.5, "longitude": 13.4,
    "logLevel": "INFO", "availableDiskThreshold": 20, "dockerPruningFrequency": 1, "readyToUpgradeScanFrequency": 24,
}


class FakePort:
    """An AgentPort that records every call; ``fail_next`` makes the next apply_* raise."""

    def __init__(self, settings: ControllerSettings) -> None:
        self.settings = settings
        self.lock = threading.Lock()
        self.configs: list[dict[str, Any]] = []
        self.microservices: list[list[dict[str, Any]]] = []
        self.registries: list[list[dict[str, Any]]] = []
        self.edge_resources: list[list[dict[str, Any]]] = []
        self.prunes = 0
        self.router_changes = 0
        self.deprovisioned: list[str] = []
        self.states: list[str] = []
        self.fail_next: set[str] = set()
        self.local_config = dict(LOCAL_CONFIG)

    def controller_settings(self) -> ControllerSettings:
        with self.lock:
            return self.settings

    def status_payload(self) -> dict[str, Any]:
        return {
            "memoryUsage": 12.5, "diskUsage": 0.001, "cpuUsage": 1.25, "systemAvailableDisk": 50_000_000_000,
            "systemAvailableMemory": 8_000_000_000, "systemTotalCpu": 3.1, "ipAddress": "127.0.0.1",
            "processedMessages": 7, "messageSpeed": 0.5, "daemonLastStart": 1795637703147,
            "daemonOperatingDuration": 60000,
            "microserviceStatus": [{
                "id": MS_ID, "containerId": "abc123", "status": "RUNNING", "startTime": 1795637733147,
                "operatingDuration": 30000, "cpuUsage": 0.5, "memoryUsage": 1000000, "percentage": 100,
            }],
            "microserviceMessageCounts": [{"id": MS_ID, "messagecount": 7}],
        }

    def agent_config_body(self) -> dict[str, Any]:
        return dict(self.local_config)

    def _maybe_fail(self, what: str) -> None:
        if what in self.fail_next:
            self.fail_next.discard(what)
            raise RuntimeError(f"{what} failed on purpose")

    def apply_agent_config(self, cfg: dict[str, Any]) -> None:
        self._maybe_fail("config")
        self.configs.append(cfg)

    def router_changed(self, body: dict[str, Any], reconnect: bool) -> None:
        with self.lock:
            self.router_changes += 1

    def apply_microservices(self, microservices: list[dict[str, Any]]) -> None:
        self._maybe_fail("microservices")
        self.microservices.append(microservices)

    def apply_registries(self, registries: list[dict[str, Any]]) -> None:
        self.registries.append(registries)

    def apply_edge_resources(self, resources: list[dict[str, Any]]) -> None:
        self.edge_resources.append(resources)

    def prune(self) -> int:
        self.prunes += 1
        return 1234

    def deprovision_locally(self, reason: str) -> None:
        self.deprovisioned.append(reason)
        with self.lock:
            self.settings = self.settings.replace(uuid="", token="")

    def set_controller_state(self, state: str) -> None:
        self.states.append(state)


def _port_is_an_agent_port(port: FakePort) -> AgentPort:
    return port  # mypy checks that FakePort satisfies the Protocol


@pytest.fixture()
def standin() -> Iterator[ControllerStandIn]:
    with ControllerStandIn() as st:
        yield st


def make(st: ControllerStandIn, *, freq: float = 10.0, cache: OfflineCache | None = None,
         read_timeout: float = 5.0) -> tuple[str, FakePort, ControllerSync]:
    fog = st.create_fog(router_uuid=MS_ID)
    bare = ControllerClient(st.url, token=None, cert_path=None, secure_mode=False, connect_timeout=2, read_timeout=2)
    answer = bare.provision(st.provisioning_key(fog), 1)
    settings = ControllerSettings(st.url, None, False, answer["uuid"], answer["token"], freq, freq)
    port = FakePort(settings)
    sync = ControllerSync(port, cache=cache, connect_timeout=2.0, read_timeout=read_timeout, ping_freq=freq)
    return fog, port, sync


def test_status_arrives_with_the_controllers_types(standin: ControllerStandIn) -> None:
    fog, port, sync = make(standin)
    assert sync.status_once() is True
    (put,) = standin.recorded("PUT", "agent/status")
    body = put.body
    assert list(body) == list(STATUS_TYPES)
    assert validate(body, STATUS_SCHEMA) is None
    for key in ("microserviceStatus", "repositoryStatus", "microserviceMessageCounts", "tunnelStatus"):
        assert isinstance(body[key], str)
    for key in ("daemonOperatingDuration", "daemonLastStart", "repositoryCount", "systemTime", "lastStatusTime",
                "processedMessages", "lastCommandTime", "systemAvailableDisk", "systemAvailableMemory"):
        assert type(body[key]) is int, key
    for key in ("memoryUsage", "diskUsage", "cpuUsage", "systemTotalCpu", "messageSpeed"):
        assert type(body[key]) is float, key
    (entry,) = json.loads(body["microserviceStatus"])
    assert entry == {"id": MS_ID, "containerId": "abc123", "status": "RUNNING", "startTime": 1795637733147,
                     "operatingDuration": 30000, "cpuUsage": 0.5, "memoryUsage": 1000000.0, "percentage": 100.0}
    assert json.loads(body["microserviceMessageCounts"]) == [{"id": MS_ID, "messagecount": 7}]
    view = standin.fog_view(fog)
    assert view["daemonStatus"] == "RUNNING" and view["ipAddress"] == "127.0.0.1"
    assert standin.microservice_statuses()[MS_ID]["status"] == "RUNNING"
    assert sync.state == "ok" and port.states == ["ok"]


def test_build_status_fills_and_types_everything() -> None:
    body = build_status({"memoryUsage": "12", "cpuUsage": float("nan"), "repositoryCount": -3, "bogus": 1,
                         "systemTotalCpu": "lots", "microserviceStatus": [{"status": "RUNNING"}, {"id": "a"}]},
                        1795637763147, "3.1.0")
    assert validate(body, STATUS_SCHEMA) is None
    assert body["memoryUsage"] == 12.0 and body["cpuUsage"] == 0.0 and body["repositoryCount"] == 0
    assert body["systemTotalCpu"] == 0.0 and "bogus" not in body
    assert body["microserviceStatus"] == '[{"id":"a"}]'
    assert body["systemTime"] == body["lastStatusTime"] == 1795637763147
    assert body["version"] == "3.1.0" and body["daemonStatus"] == "RUNNING"


def test_first_cycle_pushes_config_fetches_everything_and_echoes_last_updated(standin: ControllerStandIn) -> None:
    fog, port, sync = make(standin)
    before = standin.changes(fog)
    assert sync.changes_once() is True
    calls = [(r.method, r.route) for r in standin.recorded()][1:]  # after provisioning
    assert calls[0] == ("GET", "status")  # not yet connected: ping first
    assert calls[1:] == [
        # GET agent/config: only the router's address (routerHost/routerPort) is taken from it
        ("PATCH", "agent/config"), ("GET", "agent/config/changes"), ("GET", "agent/config"),
        ("GET", "agent/registries"),
        ("GET", "agent/microservices"), ("GET", "agent/edgeResources"), ("PATCH", "agent/config/changes"),
    ]
    assert standin.recorded("PATCH", "agent/config")[0].body == LOCAL_CONFIG
    assert standin.recorded("PATCH", "agent/config/changes")[0].body == {"lastUpdated": before["lastUpdated"]}
    assert not any(v for k, v in standin.changes(fog).items() if k != "lastUpdated")
    assert [m["uuid"] for m in port.microservices[0]] == [MS_ID]
    assert len(port.registries[0]) == 2 and port.edge_resources == [[]]
    assert port.router_changes == 1
    assert port.configs == []  # the first cycle sends ours instead of taking the Controller's
    assert standin.fog_view(fog)["gpsMode"] == "auto"


def test_a_microservice_change_reaches_apply_microservices(standin: ControllerStandIn) -> None:
    fog, port, sync = make(standin)
    assert sync.changes_once()
    hello = standin.add_microservice(fog, "hello", config='{"greeting":"hi"}')
    standin.clear_requests()
    assert sync.changes_once()
    assert [(m["uuid"], m["config"], m["rebuild"]) for m in port.microservices[-1]] == [
        (MS_ID, standin.microservices[MS_ID].config, False), (hello, '{"greeting":"hi"}', True)]
    routes = [r.route for r in standin.recorded()]
    assert routes == ["agent/config/changes", "agent/microservices", "agent/config/changes"]
    standin.set_microservice_config(hello, '{"greeting":"hello"}')
    assert sync.changes_once()
    assert port.microservices[-1][1]["config"] == '{"greeting":"hello"}'


def test_a_config_change_reaches_apply_agent_config(standin: ControllerStandIn) -> None:
    fog, port, sync = make(standin)
    assert sync.changes_once()
    standin.set_fog_config(fog, statusFrequency=5, changeFrequency=5, logLevel="FINE")
    assert sync.changes_once()
    (cfg,) = port.configs
    assert (cfg["statusFrequency"], cfg["changeFrequency"], cfg["logLevel"]) == (5, 5, "FINE")


def test_registries_edge_resources_and_prune(standin: ControllerStandIn) -> None:
    fog, port, sync = make(standin)
    assert sync.changes_once()
    standin.add_registry("registry.example.com:5000", username="u", password="p")
    standin.set_edge_resources(fog, [{"name": "sensor", "version": "1.0.0"}])
    standin.raise_flags(fog, "prune")
    assert sync.changes_once()
    assert port.registries[-1][-1]["url"] == "registry.example.com:5000"
    assert port.edge_resources[-1] == [{"name": "sensor", "version": "1.0.0"}]
    assert port.prunes == 1


def test_a_failed_step_leaves_the_flags_and_is_retried(standin: ControllerStandIn) -> None:
    fog, port, sync = make(standin)
    assert sync.changes_once()
    standin.add_microservice(fog, "hello")
    port.fail_next.add("microservices")
    assert sync.changes_once() is False
    assert len(standin.recorded("PATCH", "agent/config/changes")) == 1  # only the first cycle's
    assert standin.changes(fog)["microserviceList"] is True
    assert sync.changes_once() is True
    assert len(port.microservices[-1]) == 2
    assert standin.changes(fog)["microserviceList"] is False


def test_a_failed_poll_and_a_failed_ack_are_retried(standin: ControllerStandIn) -> None:
    fog, port, sync = make(standin)
    standin.fail(500, route="agent/config/changes", method="GET", times=1)
    assert sync.changes_once() is False
    assert sync.state == "not connected" and port.microservices == []
    standin.fail(500, route="agent/config/changes", method="PATCH", times=1)
    assert sync.changes_once() is False
    assert len(port.microservices) == 1 and standin.changes(fog)["microserviceList"] is True
    assert sync.changes_once() is True
    assert sync.state == "ok" and standin.changes(fog)["microserviceList"] is False
    # the failed first cycle is done again in full: config pushed, everything fetched
    assert len(standin.recorded("PATCH", "agent/config")) == 3 and len(port.microservices) == 2


def test_unsupported_flags_are_logged_and_acknowledged(
    standin: ControllerStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    fog, port, sync = make(standin)
    assert sync.changes_once()
    standin.raise_flags(fog, "reboot", "tunnel", "diagnostics", "isImageSnapshot")
    standin.request_upgrade(fog)
    with caplog.at_level(logging.INFO, logger="iofogd.controller.sync"):
        assert sync.changes_once()
    for flag in ("reboot", "version", "tunnel", "diagnostics", "isImageSnapshot"):
        assert f"requested {flag}: not supported" in caplog.text
    assert not any(v for k, v in standin.changes(fog).items() if k != "lastUpdated")


def test_server_errors_mean_not_connected_until_the_controller_recovers(standin: ControllerStandIn) -> None:
    fog, port, sync = make(standin)
    assert sync.status_once()
    standin.fail(500)
    assert sync.status_once() is False and sync.state == "not connected"
    assert sync.changes_once() is False
    standin.fail(None)
    assert sync.status_once() is True and sync.state == "ok"
    assert port.states == ["ok", "not connected", "ok"]


def test_deleted_node_flag_deprovisions_locally(standin: ControllerStandIn) -> None:
    fog, port, sync = make(standin)
    standin.raise_flags(fog, "deleteNode")
    assert sync.changes_once() is False
    assert standin.recorded("DELETE", "agent/delete-node")
    assert fog not in standin.fogs
    assert len(port.deprovisioned) == 1 and sync.state == "not provisioned"
    assert sync.status_once() is False
    assert not standin.recorded("PUT", "agent/status")


def test_403_on_status_deprovisions_locally(standin: ControllerStandIn) -> None:
    fog, port, sync = make(standin)
    standin.fail(403, route="agent/status")
    assert sync.status_once() is False
    assert port.deprovisioned and "403" in port.deprovisioned[0]
    assert sync.state == "not provisioned"


def test_a_refused_token_does_not_deprovision(standin: ControllerStandIn) -> None:
    fog, port, sync = make(standin)
    standin.delete_fog(fog)  # the captured answer to a deleted node's token is 401, not 403
    assert sync.status_once() is False
    assert port.deprovisioned == []


def test_not_provisioned_makes_no_calls(standin: ControllerStandIn) -> None:
    port = FakePort(ControllerSettings(standin.url, None, False, "", "", 10, 10))
    sync = ControllerSync(port, connect_timeout=2, read_timeout=2)
    assert not sync.status_once() and not sync.changes_once() and not sync.ping_once()
    assert standin.recorded() == [] and port.states == ["not provisioned"]


def test_hung_controller_costs_one_read_timeout(standin: ControllerStandIn) -> None:
    fog, port, sync = make(standin, read_timeout=0.3)
    assert sync.status_once()
    standin.hang()
    assert sync.status_once() is False and sync.state == "not connected"
    standin.hang(False)
    assert sync.status_once() is True


def test_threads_follow_a_vanishing_controller_and_stop_cleanly(standin: ControllerStandIn) -> None:
    fog, port, sync = make(standin, freq=0.05, read_timeout=0.5)
    sync.start()
    try:
        assert wait_until(lambda: len(standin.recorded("PUT", "agent/status")) >= 2)
        assert wait_until(lambda: standin.recorded("PATCH", "agent/config/changes") != [])
        standin.vanish()
        assert wait_until(lambda: sync.state == "not connected")
        standin.reappear()
        seen = len(standin.recorded("PUT", "agent/status"))
        assert wait_until(lambda: sync.state == "ok" and len(standin.recorded("PUT", "agent/status")) > seen)
        standin.hang()
        assert wait_until(lambda: sync.state == "not connected")
    finally:
        sync.stop(timeout=5)
    assert not [t for t in threading.enumerate() if t.name.startswith("controller-")]
    standin.hang(False)


def test_config_changed_pushes_the_local_config(standin: ControllerStandIn) -> None:
    fog, port, sync = make(standin, freq=30)
    sync.start()
    try:
        assert wait_until(lambda: sync.state == "ok")
        port.local_config["latitude"] = 10.0
        sync.config_changed()
        assert wait_until(lambda: any(r.body.get("latitude") == 10.0 for r in standin.recorded("PATCH", "agent/config")))
    finally:
        sync.stop()
    assert standin.fog_view(fog)["latitude"] == 10.0


def test_offline_cache_is_written_and_used_when_the_first_ping_fails(standin: ControllerStandIn, tmp_path: Path) -> None:
    cache = OfflineCache(tmp_path)
    fog, port, sync = make(standin, cache=cache)
    standin.set_edge_resources(fog, [{"name": "sensor"}])
    assert sync.changes_once()
    assert [m["uuid"] for m in cache.load(MICROSERVICES) or []] == [MS_ID]
    standin.vanish()
    restarted = FakePort(port.settings)
    offline = ControllerSync(restarted, cache=cache, connect_timeout=1, read_timeout=1, ping_freq=30)
    offline.start()
    try:
        assert wait_until(lambda: restarted.microservices != [])
    finally:
        offline.stop()
    assert [m["uuid"] for m in restarted.microservices[0]] == [MS_ID]
    assert restarted.edge_resources == [[{"name": "sensor"}]] and len(restarted.registries[0]) == 2
    assert offline.state == "not connected"
