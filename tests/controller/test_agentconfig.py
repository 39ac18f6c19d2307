"""iofogd.controller.agentconfig: the agent's own config as the Controller reads and sets it (docs/controller-api.md#config-sync)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

from iofogd.config import Config, Origin
from iofogd.controller.agentconfig import agent_config_body, apply_agent_config
from tests.test_config import make_store

# -- -------------------------------------------------------------------

# agent1.log, A1: GET agent/config right after provisioning
A1 = {"networkInterface": "eth0", "dockerUrl": "unix:///var/run/docker.sock", "diskLimit": 50,
      "diskDirectory": "/var/lib/iofog/", "memoryLimit": 4096, "cpuLimit": 80, "logLimit": 10,
      "logDirectory": "/var/log/iofog/", "logFileCount": 10, "statusFrequency": 10,
      "changeFrequency": 20, "deviceScanFrequency": 20, "watchdogEnabled": True, "latitude": None,
      "longitude": None, "logLevel": "INFO", "availableDiskThreshold": 20,
      "dockerPruningFrequency": 1, "routerHost": "localhost", "routerPort": 5672, "timeZone": None}


def test_controller_config_applies_differences(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    calls: List[Tuple[Config, Config, str]] = []
    store.add_listener(lambda old, new, origin: calls.append((old, new, origin)))
    report = apply_agent_config(store, A1)
    assert report.errors == []
    assert sorted(flag for flag, _, _ in report.accepted) == sorted(
        ["d", "dl", "ld", "cf", "sd", "idc", "ll", "router_host", "router_port"])
    cfg = store.current
    assert cfg.get("disk_consumption_limit") == "50.0"          # Java's Float.toString
    assert cfg.network_interface == "dynamic"                   # ours is dynamic: kept
    assert (cfg.get_changes_freq, cfg.scan_devices_freq, cfg.isolated_docker_container) == (20, 20, True)
    assert (cfg.router_host, cfg.router_port, cfg.log_level) == ("localhost", 5672, "INFO")
    assert cfg.time_zone == "Europe/Berlin" and cfg.gps_coordinates == "52.5,13.4"   # nulls ignored
    assert len(calls) == 1 and calls[0][1] is cfg and calls[0][2] == Origin.CONTROLLER
    assert apply_agent_config(store, A1).accepted == []            # nothing differs any more
    assert len(calls) == 1


def test_controller_config_gps_interface_and_bad_types(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.apply({"n": "lo"}, Origin.LOCAL)
    report = apply_agent_config(store, {"networkInterface": "nosuch0", "latitude": 10, "longitude": -20.5,
                                     "dockerPruningFrequency": 0, "diskLimit": "50", "logFileCount": 5.0})
    assert sorted(report.errors) == [("d", "Option -d has invalid value: '50'"), ("n", "Invalid network interface")]
    cfg = store.current
    assert (cfg.gps_mode, cfg.gps_coordinates, cfg.docker_pruning_freq, cfg.log_file_count) == (
        "manual", "10.0,-20.5", 1, 5)


def test_controller_view_has_javas_types(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    assert agent_config_body(store.current) == {
        "networkInterface": "UNKNOWN", "dockerUrl": "unix:///var/run/docker.sock", "diskLimit": 10.0,
        "diskDirectory": "/var/lib/iofog-agent/", "memoryLimit": 4096.0, "cpuLimit": 80.0,
        "logLimit": 10.0, "logDirectory": "/var/log/iofog-agent/", "logFileCount": 10,
        "statusFrequency": 10, "changeFrequency": 10, "deviceScanFrequency": 60,
        "watchdogEnabled": False, "gpsMode": "manual", "latitude": 52.5, "longitude": 13.4,
        "logLevel": "FINE", "availableDiskThreshold": 20, "dockerPruningFrequency": 1,
        "readyToUpgradeScanFrequency": 24,
    }
    assert agent_config_body(store.current, "eth0")["networkInterface"] == "eth0"
    view = agent_config_body(store.current)
    assert isinstance(view["diskLimit"], float) and type(view["logFileCount"]) is int


def test_controller_values_are_checked_and_stripped_too(tmp_path: Path) -> None:
    """Issue 12: the Controller's values pass the same directory and URL checks, and are stored stripped."""
    store = make_store(tmp_path)
    report = apply_agent_config(store, {"logDirectory": "../../../etc", "dockerUrl": "http://x",
                                        "routerHost": " router "})
    assert sorted(key for key, _ in report.errors) == ["c", "ld"]
    assert store.current.get("router_host") == "router"
    assert store.current.log_directory == f"{tmp_path}/var/log/iofog-agent/"
