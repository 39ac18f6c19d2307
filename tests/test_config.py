"""iofogd.config: the option table, config.xml, the switcher and the store.

Expected texts come from the protocol notes (docs/local-api.md#config, docs/config-xml.md, docs/controller-api.md#config-sync); the Java
fixture was written by the JDK's own XML transformer (tests/fixtures/MakeJavaConfig.java).
"""
from __future__ import annotations

import logging
import os
import random
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from iofogd.config import OPTIONS, ChangeReport, Config, ConfigStore, Origin, parse_config_xml, read_config
from iofogd.config.schema import option_by_flag, option_by_long_name, option_by_tag, python_log_level
from iofogd.errors import ConfigFileError, ConfigValueError
from iofogd.paths import Paths
from iofogd.system.host import Host, detect_fog_type, interface_names

FIXTURES = Path(__file__).parent / "fixtures"
JAVA_CONFIG = (FIXTURES / "java-config.xml").read_bytes()
REPO = Path(__file__).resolve().parent.parent

HOST = Host("x86_64", interface_names, lambda: "Europe/Paris")


def etc(root: Path) -> Path:
    return root / "etc" / "iofog-agent"


def make_store(root: Path, config_xml: Optional[bytes] = JAVA_CONFIG, host: Host = HOST) -> ConfigStore:
    if config_xml is not None:
        etc(root).mkdir(parents=True, exist_ok=True)
        (etc(root) / "config.xml").write_bytes(config_xml)
    store = ConfigStore(Paths.from_root(str(root)), host=host)
    store.load()
    return store


def reload(root: Path) -> Config:
    return ConfigStore(Paths.from_root(str(root)), host=HOST).load()


# -- the table --------------------------------------------------------------------------

# docs/config-xml.md#keys: tag -> (flag, controller key, code default, shipped)
SPEC_TABLE: Dict[str, Tuple[Optional[str], Optional[str], str, str]] = {
    "access_token": (None, None, "", ""),
    "iofog_uuid": (None, None, "", ""),
    # controller_url: our code default is the shipped value, not upstream's retired public Controller.
    "controller_url": ("a", None, "http://localhost:54421/api/v3/", "http://localhost:54421/api/v3/"),
    "controller_cert": ("ac", None, "/etc/iofog-agent/cert.crt", "/etc/iofog-agent/cert.crt"),
    "docker_url": ("c", "dockerUrl", "unix:///var/run/docker.sock", "unix:///var/run/docker.sock"),
    "network_interface": ("n", "networkInterface", "dynamic", "dynamic"),
    "disk_consumption_limit": ("d", "diskLimit", "10", "10"),
    "disk_directory": ("dl", "diskDirectory", "/var/lib/iofog-agent/", "/var/lib/iofog-agent/"),
    "memory_consumption_limit": ("m", "memoryLimit", "4096", "4096"),
    "processor_consumption_limit": ("p", "cpuLimit", "80", "80.0"),
    "log_disk_consumption_limit": ("l", "logLimit", "10", "10.0"),
    "log_disk_directory": ("ld", "logDirectory", "/var/log/iofog-agent/", "/var/log/iofog-agent/"),
    "log_file_count": ("lc", "logFileCount", "10", "10"),
    "log_level": ("ll", "logLevel", "INFO", "INFO"),
    "status_update_freq": ("sf", "statusFrequency", "10", "30"),
    "get_changes_freq": ("cf", "changeFrequency", "20", "60"),
    "scan_devices_freq": ("sd", "deviceScanFrequency", "60", "60"),
    "post_diagnostics_freq": ("df", "postdiagnosticsfreq", "10", "10"),
    "isolated_docker_container": ("idc", "watchdogEnabled", "off", "off"),
    "gps": ("gps", "gpsMode", "auto", "auto"),
    "gps_coordinates": (None, None, "", "0,0"),
    "fog_type": ("ft", None, "auto", "auto"),
    "secure_mode": ("sec", None, "off", "off"),
    "dev_mode": ("dev", None, "off", "off"),
    "router_host": (None, "routerHost", "", ""),
    "router_port": (None, "routerPort", "0", ""),
    "docker_pruning_freq": ("pf", "dockerPruningFrequency", "1", "1"),
    "available_disk_threshold": ("dt", "availableDiskThreshold", "20", "20"),
    "upgrade_scan_frequency": ("uf", "readyToUpgradeScanFrequency", "24", "24"),
    "time_zone": ("tz", "timeZone", "", ""),
    # ours
    "local_api_address": (None, None, "0.0.0.0", "0.0.0.0"),
    "local_api_port": (None, None, "54321", "54321"),
    "strict_microservice_identity": ("smi", None, "off", "off"),
}

# docs/local-api.md#config
LONG_NAMES = {
    "disk-limit": "d", "disk-directory": "dl", "memory-limit": "m", "cpu-limit": "p",
    "controller-url": "a", "cert-directory": "ac", "docker-url": "c", "network-adapter": "n",
    "logs-limit": "l", "logs-directory": "ld", "logs-count": "lc", "logs-level": "ll",
    "status-frequency": "sf", "changes-frequency": "cf", "diagnostics-frequency": "df",
    "device-scan-frequency": "sd", "isolated": "idc", "gps": "gps", "fog-type": "ft",
    "developer-mode": "dev", "time-zone": "tz",
    "strict-microservice-identity": "smi",   # ours (issue 12)
}


def test_the_table_is_the_spec_table() -> None:
    assert {o.tag for o in OPTIONS} == set(SPEC_TABLE)
    for opt in OPTIONS:
        flag, key, default, shipped = SPEC_TABLE[opt.tag]
        assert (opt.flag, opt.controller_key, opt.default, opt.shipped) == (flag, key, default, shipped), opt.tag
        assert option_by_tag(opt.tag) is opt
        if opt.flag:
            assert option_by_flag(opt.flag) is opt
            assert option_by_flag("-" + opt.flag) is opt
            assert opt.check is not None and opt.help
    assert {o.long_name: o.flag for o in OPTIONS if o.long_name} == LONG_NAMES
    for name, flag in LONG_NAMES.items():
        by_name = option_by_long_name(name)
        assert by_name is not None and by_name.flag == flag
    assert option_by_flag("zz") is None and option_by_long_name("log-level") is None


def test_paths_hang_off_the_root(tmp_path: Path) -> None:
    p = Paths.from_root("/")
    assert (p.config_xml, p.config_backup, p.config_switcher, p.token_file) == (
        "/etc/iofog-agent/config.xml", "/etc/iofog-agent/config-bck.xml",
        "/etc/iofog-agent/config-switcher.xml", "/etc/iofog-agent/local-api")
    assert (p.config_development, p.config_production) == (
        "/etc/iofog-agent/config-development.xml", "/etc/iofog-agent/config-production.xml")
    assert (p.state_dir, p.log_dir, p.microservices_cache, p.registries_cache, p.edge_resources_cache) == (
        "/var/lib/iofog-agent", "/var/log/iofog-agent", "/etc/iofog-agent/microservices.json",
        "/etc/iofog-agent/registries.json", "/etc/iofog-agent/edge_resources.json")
    assert p.rooted("/etc/iofog-agent/cert.crt") == "/etc/iofog-agent/cert.crt"
    q = Paths.from_root(str(tmp_path) + "/")
    assert q.root == str(tmp_path)
    assert q.config_xml == f"{tmp_path}/etc/iofog-agent/config.xml"
    assert q.rooted("/var/lib/x/") == f"{tmp_path}/var/lib/x/"
    assert q.rooted("") == ""


# -- the Java agent's file ---------------------------------------------------------------

JAVA_VALUES = dict(
    iofog_uuid="4JtjzB8ccWMMyLm7wg8VrbGPKXpnYQyr", access_token="n4GgC3nGTZJt3VvW",
    controller_url="http://192.168.1.20:51121/api/v3/", docker_url="unix:///var/run/docker.sock",
    network_interface="dynamic", disk_limit_gb=10.0, memory_limit_mb=4096.0, cpu_limit=80.0,
    log_limit_gb=10.0, log_file_count=10, log_level="FINE", log_level_python=logging.DEBUG,
    status_update_freq=10, get_changes_freq=10, scan_devices_freq=60, post_diagnostics_freq=10,
    isolated_docker_container=False, gps_mode="manual", gps_coordinates="52.5,13.4",
    fog_type_setting="auto", fog_type="intel_amd", secure_mode=False, dev_mode=False,
    router_host="", router_port=0, docker_pruning_freq=1, available_disk_threshold=20,
    upgrade_scan_frequency=24, time_zone="Europe/Berlin", api_address="0.0.0.0", api_port=54321,
)


def java_tags() -> Dict[str, str]:
    parsed = parse_config_xml(JAVA_CONFIG)
    return {tag: parsed.values.get(tag, parsed.extras.get(tag, "")) for tag in parsed.order}


def test_java_fixture_loads_every_value(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="iofogd.config")
    cfg = make_store(tmp_path).current
    for name, expected in JAVA_VALUES.items():
        assert getattr(cfg, name) == expected, name
    assert cfg.controller_cert == f"{tmp_path}/etc/iofog-agent/cert.crt"
    assert cfg.disk_directory == f"{tmp_path}/var/lib/iofog-agent/"
    assert cfg.log_directory == f"{tmp_path}/var/log/iofog-agent/"
    assert cfg.gps_lat_lon == (52.5, 13.4)
    assert cfg.get("processor_consumption_limit") == "80.0"
    assert not [r for r in caplog.records if "config.xml" in r.getMessage()]   # nothing missing


def test_java_fixture_rewrite_keeps_every_tag_and_value(tmp_path: Path) -> None:
    make_store(tmp_path)
    for name in ("config.xml", "config-bck.xml"):
        data = (etc(tmp_path) / name).read_bytes()
        assert data.startswith(b'<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n<config>\n')
        rewritten = parse_config_xml(data)
        assert not rewritten.warnings
        order = list(java_tags())
        assert list(rewritten.order[:len(order)]) == order      # same tags, same order
        for tag, text in java_tags().items():
            assert rewritten.values[tag] == text, tag
    again = reload(tmp_path)
    assert {k: getattr(again, k) for k in JAVA_VALUES} == JAVA_VALUES


def test_unknown_tags_are_kept(tmp_path: Path) -> None:
    xml = JAVA_CONFIG.replace(b"<time_zone>", b"<private_key>k&amp;1</private_key><time_zone>")
    store = make_store(tmp_path, xml)
    assert store.current.get("private_key") == "k&1"
    store.apply({"lc": "7"}, Origin.LOCAL)
    data = (etc(tmp_path) / "config.xml").read_bytes()
    assert b"<private_key>k&amp;1</private_key>" in data
    assert parse_config_xml(data).order.index("private_key") < parse_config_xml(data).order.index("time_zone")


def test_missing_duplicated_and_unreadable_elements_get_code_defaults(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    xml = (JAVA_CONFIG.replace(b"<log_file_count>10</log_file_count>", b"")
           .replace(b"<status_update_freq>10</status_update_freq>",
                    b"<status_update_freq>5</status_update_freq><status_update_freq>6</status_update_freq>")
           .replace(b"<memory_consumption_limit>4096</memory_consumption_limit>",
                    b"<memory_consumption_limit>lots</memory_consumption_limit>"))
    caplog.set_level(logging.WARNING, logger="iofogd.config")
    cfg = make_store(tmp_path, xml).current
    assert (cfg.log_file_count, cfg.status_update_freq, cfg.memory_limit_mb) == (10, 10, 4096.0)
    text = caplog.text
    assert ("<log_file_count>  item not found or defined more than once. Default value - 10 will be used"
            in text)
    assert "<status_update_freq>  item not found or defined more than once." in text
    assert "<memory_consumption_limit> has an invalid value 'lots'" in text
    rewritten = parse_config_xml((etc(tmp_path) / "config.xml").read_bytes())
    assert not rewritten.warnings                      # repaired on rewrite, once each
    assert rewritten.values["status_update_freq"] == "10"


def test_fresh_install_writes_shipped_values(tmp_path: Path) -> None:
    store = make_store(tmp_path, None)
    cfg = store.current
    assert (cfg.controller_url, cfg.status_update_freq, cfg.get_changes_freq, cfg.gps_coordinates) == (
        "http://localhost:54421/api/v3/", 30, 60, "0,0")
    assert cfg.time_zone == "Europe/Paris"             # the host's zone, written back (docs/config-xml.md#keys)
    assert cfg.api_port == 54321 and cfg.api_address == "0.0.0.0"
    for name in ("config.xml", "config-bck.xml", "config-switcher.xml"):
        assert (etc(tmp_path) / name).exists()
    assert stat.S_IMODE((etc(tmp_path) / "config.xml").stat().st_mode) == 0o640
    assert reload(tmp_path).time_zone == "Europe/Paris"
    assert b"<current_config>default</current_config>" in (etc(tmp_path) / "config-switcher.xml").read_bytes()


def test_corrupt_active_file_falls_back_to_the_backup(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = make_store(tmp_path)
    store.apply({"lc": "42"}, Origin.LOCAL)
    (etc(tmp_path) / "config.xml").write_bytes(b'<?xml version="1.0"?>\n<config>\n    <access_tok')
    caplog.set_level(logging.WARNING, logger="iofogd.config")
    cfg = reload(tmp_path)
    assert cfg.log_file_count == 42 and cfg.iofog_uuid == JAVA_VALUES["iofog_uuid"]
    assert "is unreadable" in caplog.text and "using the backup" in caplog.text
    assert parse_config_xml((etc(tmp_path) / "config.xml").read_bytes()).values["log_file_count"] == "42"


def test_a_load_rewrites_only_a_file_that_differs(tmp_path: Path) -> None:
    make_store(tmp_path)   # the Java file is rewritten in our layout, with its backup
    active, backup = etc(tmp_path) / "config.xml", etc(tmp_path) / "config-bck.xml"
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (active, backup)}
    reload(tmp_path)       # a restart on the same files: nothing to write
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (active, backup)} == before
    backup.write_bytes(backup.read_bytes().replace(b"</config>", b"<stale/></config>"))
    reload(tmp_path)       # a stale backup is brought back in line; the active file is left
    assert backup.read_bytes() == active.read_bytes()
    assert (active.stat().st_ino, active.stat().st_mtime_ns) == before[active]


def test_both_corrupt_is_one_clear_error(tmp_path: Path) -> None:
    make_store(tmp_path)
    (etc(tmp_path) / "config.xml").write_bytes(b"")
    (etc(tmp_path) / "config-bck.xml").write_bytes(b"<switcher/>")
    with pytest.raises(ConfigFileError) as info:
        reload(tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert "config.xml" in message and "config-bck.xml" in message


def test_read_config_writes_nothing(tmp_path: Path) -> None:
    make_store(tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in etc(tmp_path).iterdir()}
    cfg = read_config(Paths.from_root(str(tmp_path)), HOST)
    assert cfg.iofog_uuid == JAVA_VALUES["iofog_uuid"]
    assert {p.name: p.stat().st_mtime_ns for p in etc(tmp_path).iterdir()} == before
    assert read_config(Paths.from_root(str(tmp_path / "nothing")), HOST).api_port == 54321


# -- every flag: a good value and a bad one ------------------------------------------------

INVALID = "Option -{} has invalid value: {}"

# flag, good value, tag, stored text, bad value, exact message
FLAG_CASES: List[Tuple[str, str, str, str, str, str]] = [
    ("a", "http://10.0.0.1:51121/api/v3", "controller_url", "http://10.0.0.1:51121/api/v3", " ", "Command or value is invalid"),
    ("ac", "/etc/iofog-agent/other.crt", "controller_cert", "/etc/iofog-agent/other.crt", "bad\x01", INVALID.format("ac", "bad\x01")),
    ("c", "tcp://127.0.0.1:2375", "docker_url", "tcp://127.0.0.1:2375", "http://127.0.0.1:2375",
     "Unsupported protocol scheme. Only 'tcp://' or 'unix://' supported.\n"),
    ("n", "lo", "network_interface", "lo", "nosuchif0", "Invalid network interface"),
    ("d", "20.5", "disk_consumption_limit", "20.5", "abc", INVALID.format("d", "abc")),
    ("d", "1048576", "disk_consumption_limit", "1048576", "0.5", "Disk limit range must be 1 to 1048576 GB"),
    ("dl", "/data/iofog", "disk_directory", "/data/iofog/", "", "Command or value is invalid"),
    ("m", "128", "memory_consumption_limit", "128", "127.9", "Memory limit range must be 128 to 1048576 MB"),
    ("m", "2048", "memory_consumption_limit", "2048", "2GB", INVALID.format("m", "2GB")),
    ("p", "5", "processor_consumption_limit", "5", "100.5", "CPU limit range must be 5% to 100%"),
    ("p", "50", "processor_consumption_limit", "50", "NaN", INVALID.format("p", "NaN")),
    ("l", "0.5", "log_disk_consumption_limit", "0.5", "0.4", "Log disk limit range must be 0.5 to 100 GB"),
    ("l", "100", "log_disk_consumption_limit", "100", "x", INVALID.format("l", "x")),
    ("ld", "/data/logs/", "log_disk_directory", "/data/logs/", "  ", "Command or value is invalid"),
    ("lc", "100", "log_file_count", "100", "101", "Log file count range must be 1 to 100"),
    ("lc", "1", "log_file_count", "1", "1.5", INVALID.format("lc", "1.5")),
    ("ll", "fine", "log_level", "FINE", "verbose", INVALID.format("ll", "verbose")),
    ("ll", "500", "log_level", "500", "", "Command or value is invalid"),
    ("sf", "1", "status_update_freq", "1", "0", "Status update frequency must be greater than 1"),
    ("sf", "5", "status_update_freq", "5", "five", INVALID.format("sf", "five")),
    ("cf", "5", "get_changes_freq", "5", "-1", "Get changes frequency must be greater than 1"),
    ("sd", "30", "scan_devices_freq", "30", "0", "Get scan devices frequency must be greater than 1"),
    ("df", "30", "post_diagnostics_freq", "30", "0", "Post diagnostics frequency must be greater than 1"),
    ("df", "30", "post_diagnostics_freq", "30", "99999999999", INVALID.format("df", "99999999999")),
    ("idc", "ON", "isolated_docker_container", "ON", "yes", INVALID.format("idc", "yes")),
    ("gps", "1.5,-2.25", "gps_coordinates", "1.5,-2.25", "91,0", INVALID.format("gps", "91,0")),
    ("gps", "off", "gps", "off", "12345", INVALID.format("gps", "12345")),
    ("ft", "arm", "fog_type", "arm", "intel", INVALID.format("ft", "intel")),
    ("ft", "intel_amd", "fog_type", "intel_amd", "AUTO", INVALID.format("ft", "AUTO")),
    ("sec", "on", "secure_mode", "on", "", "Command or value is invalid"),
    ("dev", "on", "dev_mode", "on", "\t", "Command or value is invalid"),
    ("pf", "99999999999", "docker_pruning_freq", "99999999999", "0", "Docker pruning frequency must be greater than 1"),
    ("dt", "10", "available_disk_threshold", "10", "ten", INVALID.format("dt", "ten")),
    ("dt", "10", "available_disk_threshold", "10", "0", "Available disk threshold must be greater than 1"),
    ("uf", "12", "upgrade_scan_frequency", "12", "0", "isReadyToUpgrade scan frequency must be greater than 1"),
    ("tz", "America/New_York", "time_zone", "America/New_York", "", "Command or value is invalid"),
    ("smi", "on", "strict_microservice_identity", "on", "strict", INVALID.format("smi", "strict")),
]


def test_every_flag_has_cases() -> None:
    assert {case[0] for case in FLAG_CASES} == {o.flag for o in OPTIONS if o.flag}


@pytest.mark.parametrize("flag,good,tag,stored,bad,message", FLAG_CASES,
                         ids=[f"{c[0]}:{c[1]}|{c[4]!r}" for c in FLAG_CASES])
def test_flag_good_and_bad(tmp_path: Path, flag: str, good: str, tag: str, stored: str,
                           bad: str, message: str) -> None:
    store = make_store(tmp_path)
    old = store.current.get(option_by_flag(flag).tag)  # type: ignore[union-attr]
    report = store.apply({flag: good}, Origin.LOCAL)
    assert report.errors == []
    assert report.accepted == [(flag, old, good)]
    assert store.current.get(tag) == stored
    assert reload(tmp_path).get(tag) == stored                       # on disk
    before = (etc(tmp_path) / "config.xml").read_bytes()
    report = store.apply({flag: bad}, Origin.LOCAL)
    assert report.errors == [(flag, message)] and report.accepted == []
    assert store.current.get(tag) == stored
    assert (etc(tmp_path) / "config.xml").read_bytes() == before     # a refused change writes nothing


def test_typed_values_follow_changes(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.apply({"d": "+20", "dl": "data/iofog", "idc": "ON", "sec": "anything", "dev": "off",
                 "ll": "severe", "a": "http://c:51121/api/v3", "ac": "/x.crt", "pf": "48"}, Origin.LOCAL)
    cfg = store.current
    assert cfg.disk_limit_gb == 20.0 and cfg.get("disk_consumption_limit") == "20"
    assert cfg.get("disk_directory") == "data/iofog/"
    assert cfg.disk_directory == f"{tmp_path}/data/iofog/"                # leading "/" added, rooted
    assert cfg.isolated_docker_container and cfg.secure_mode and not cfg.dev_mode
    assert (cfg.log_level, cfg.log_level_python) == ("SEVERE", logging.ERROR)
    assert cfg.controller_url == "http://c:51121/api/v3/"
    assert cfg.get("controller_url") == "http://c:51121/api/v3"           # "/" in memory only
    assert cfg.controller_cert == f"{tmp_path}/x.crt"
    assert cfg.docker_pruning_freq == 48


def test_plus_is_stripped_and_blank_is_refused(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    report = store.apply({"lc": "+5", "sf": "", "ac": ""}, Origin.LOCAL)
    assert report.errors == [("sf", "Command or value is invalid")]
    assert report.accepted == [("lc", "10", "5"), ("ac", "/etc/iofog-agent/cert.crt", "")]
    assert store.current.controller_cert == "" and store.current.log_file_count == 5


def test_cli_text_is_upstreams(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    report = store.apply({"d": "x", "c": "http://h", "lc": "5"}, Origin.LOCAL)
    assert report.cli_text() == (
        "\\n\tError : Option -d has invalid value: x"
        "\\n\tError : Unsupported protocol scheme. Only 'tcp://' or 'unix://' supported.\n"
        "\\n\tChange accepted for Parameter : - lc, Old value was :10, New Value is : 5")
    assert ChangeReport([], []).cli_text() == ""


def test_unknown_flag_changes_nothing(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    with pytest.raises(ConfigValueError) as info:
        store.apply({"lc": "5", "zz": "1"}, Origin.LOCAL)
    assert info.value.flag == "zz" and info.value.message == "Invalid parameter -zz"
    assert store.current.log_file_count == 10


def test_gps_modes(tmp_path: Path) -> None:
    store = make_store(tmp_path)                        # manual, 52.5,13.4
    store.apply({"gps": "auto"}, Origin.LOCAL)                        # no ip-api.com: coordinates kept
    assert (store.current.gps_mode, store.current.gps_coordinates) == ("auto", "52.5,13.4")
    store.apply({"gps": "off"}, Origin.LOCAL)                         # mode off, coordinates left alone
    assert (store.current.gps_mode, store.current.gps_coordinates) == ("off", "52.5,13.4")
    store.apply({"gps": "manual"}, Origin.LOCAL)
    assert (store.current.gps_mode, store.current.gps_coordinates) == ("manual", "52.5,13.4")
    store.apply({"gps": "+-33.9,18.4"}, Origin.LOCAL)
    assert (store.current.gps_mode, store.current.gps_lat_lon) == ("manual", (-33.9, 18.4))
    for bad in ("AUTO", "dynamic", "1x5,2", "0,181", "52.5;13.4", "52.5,"):
        assert store.apply({"gps": bad}, Origin.LOCAL).errors == [("gps", f"Option -gps has invalid value: {bad}")]


def test_fog_type_auto_needs_a_known_machine(tmp_path: Path) -> None:
    store = make_store(tmp_path, host=Host("riscv64", interface_names, lambda: "UTC"))
    assert store.apply({"ft": "auto"}, Origin.LOCAL).errors == [("ft", "Option -ft has invalid value: auto")]
    assert store.apply({"ft": "arm"}, Origin.LOCAL).errors == []
    assert store.current.fog_type == "arm"
    arm = make_store(tmp_path / "arm", host=Host("aarch64", interface_names, lambda: "UTC"))
    assert arm.current.fog_type == "arm" and arm.current.fog_type_setting == "auto"


@pytest.mark.parametrize("machine,expected", [
    ("x86_64", "intel_amd"), ("amd64", "intel_amd"), ("i686", "intel_amd"), ("x86", "intel_amd"),
    ("aarch64", "arm"), ("armv7l", "arm"), ("armv6l", "arm"), ("arm64", "arm"), ("arm", "arm")])
def test_detect_fog_type(machine: str, expected: str) -> None:
    assert detect_fog_type(machine) == expected


def test_detect_fog_type_unknown() -> None:
    with pytest.raises(ConfigValueError):
        detect_fog_type("riscv64")


def test_network_interface_names_are_case_insensitive(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    assert store.apply({"n": "LO"}, Origin.LOCAL).errors == []
    assert store.apply({"n": "dynamic"}, Origin.LOCAL).errors == []
    assert store.apply({"n": "Dynamic"}, Origin.LOCAL).errors == [("n", "Invalid network interface")]


def test_values_are_escaped_and_control_characters_refused(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    assert store.apply({"tz": "A&B<C>]]>"}, Origin.LOCAL).errors == []
    assert reload(tmp_path).time_zone == "A&B<C>]]>"
    assert store.apply({"tz": "a\nb"}, Origin.LOCAL).errors == [("tz", "Option -tz has invalid value: a\nb")]


def test_log_levels_map_onto_logging() -> None:
    assert python_log_level(1000) == logging.ERROR
    assert python_log_level(800) == logging.INFO
    assert python_log_level(500) == logging.DEBUG
    assert python_log_level(2**31 - 1) > logging.CRITICAL
    assert python_log_level(-(2**31)) == 1


# -- /v2/config (docs/local-api.md#config) ----------------------------------------------------


def test_long_names(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    assert store.apply_long_names({"logs-count": "5", "time-zone": "UTC", "ignored": 1}) == {}
    assert (store.current.log_file_count, store.current.time_zone) == (5, "UTC")
    assert store.apply_long_names({"disk-limit": "x", "logs-count": "y", "cpu-limit": "1",
                                   "network-adapter": "nosuch0", "gps": "x"}) == {
        "disk-limit": "Option has invalid value: x",
        "logs-count": "Option -lc has invalid value: y",       # two-letter flags stay
        "cpu-limit": "CPU limit range must be 5% to 100%",
        "network-adapter": "Invalid network interface",
        "gps": "Option -gps has invalid value: x",
    }


def test_long_names_bad_requests(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    with pytest.raises(ConfigValueError) as info:
        store.apply_long_names({"log-level": "FINE", "docker-pruning-frequency": "2"})
    assert info.value.message == "Request not valid"   # the Local API answers it with 400
    with pytest.raises(ConfigValueError):
        store.apply_long_names({"disk-limit": 20})
    assert store.current.disk_limit_gb == 10.0


# -- defaults, identity, GPS, switch ------------------------------------------------------------


def test_config_defaults(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.apply({"n": "lo", "lc": "3", "tz": "UTC", "ac": ""}, Origin.LOCAL)
    assert store.reset_defaults() == "Configuration has been reset to its defaults."
    cfg = reload(tmp_path)
    for opt in OPTIONS:
        if opt.flag and opt.default:
            assert cfg.get(opt.tag) == opt.default, opt.tag
    assert cfg.controller_url == "http://localhost:54421/api/v3/"  # not upstream's retired public one
    assert (cfg.iofog_uuid, cfg.access_token) == (JAVA_VALUES["iofog_uuid"], JAVA_VALUES["access_token"])
    assert (cfg.gps_mode, cfg.gps_coordinates, cfg.time_zone) == ("auto", "52.5,13.4", "UTC")


def test_identity_and_gps(tmp_path: Path) -> None:
    store = make_store(tmp_path, None)
    store.set_identity("uuid-1", "token-1")
    assert (reload(tmp_path).iofog_uuid, reload(tmp_path).access_token) == ("uuid-1", "token-1")
    store.set_identity("", "")
    assert reload(tmp_path).iofog_uuid == ""
    store.set_gps("48.85", "2.35")
    assert (reload(tmp_path).gps_mode, reload(tmp_path).gps_coordinates) == ("dynamic", "48.85,2.35")
    with pytest.raises(ConfigValueError):
        store.set_gps("91", "0")
    with pytest.raises(ConfigValueError):
        store.set_gps("", "")
    assert reload(tmp_path).gps_mode == "dynamic"      # a dynamic file loads


def test_switch(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    assert store.switch("dev") == "Successfully switched to new configuration."
    assert store.switcher_state == "development"
    assert store.current.dev_mode and store.current.controller_url == "http://localhost:51121/api/v3/"
    assert (etc(tmp_path) / "config-development.xml").exists()
    assert store.switch("development") == "Already using this configuration."
    store.apply({"lc": "7"}, Origin.LOCAL)                           # goes to the development file
    assert parse_config_xml((etc(tmp_path) / "config-development.xml").read_bytes()).values["log_file_count"] == "7"
    assert reload(tmp_path).log_file_count == 7        # the switcher state survives a restart
    assert store.switch("prod") == "Successfully switched to new configuration."
    assert store.current.secure_mode
    assert store.switch("def") == "Successfully switched to new configuration."
    assert store.current.iofog_uuid == JAVA_VALUES["iofog_uuid"]
    assert store.switch("staging") == "Invalid switcher state"


def test_switch_to_an_unreadable_file_falls_back(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    (etc(tmp_path) / "config-production.xml").write_bytes(b"garbage")
    (etc(tmp_path) / "config-bck.xml").write_bytes(b"garbage")
    assert store.switch("production") == (
        "Error while loading new config file, falling back to current configuration")
    assert store.switcher_state == "default" and store.current.iofog_uuid == JAVA_VALUES["iofog_uuid"]
    assert b"<current_config>default</current_config>" in (etc(tmp_path) / "config-switcher.xml").read_bytes()


# -- listeners and concurrency ------------------------------------------------------------------


def test_listeners_see_old_and_new(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    seen: List[Tuple[int, int]] = []
    store.add_listener(lambda old, new, origin: seen.append((old.log_file_count, new.log_file_count)))
    def failing(old: Config, new: Config, origin: str) -> None:
        raise RuntimeError("listener bug")

    store.add_listener(failing)                        # a failing listener is logged, not fatal
    store.apply({"lc": "5"}, Origin.LOCAL)
    store.apply({"lc": "x"}, Origin.LOCAL)                           # refused: no call
    store.apply({"lc": "6"}, Origin.LOCAL)
    assert seen == [(10, 5), (5, 6)]
    with pytest.raises(AttributeError):
        store.current.log_file_count = 1


def test_concurrent_changes_all_land(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    flags = ["sf", "cf", "sd", "df", "uf", "lc"]

    def worker(flag: str) -> None:
        for i in range(1, 21):
            store.apply({flag: str(i)}, Origin.LOCAL)

    threads = [threading.Thread(target=worker, args=(f,)) for f in flags]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cfg = reload(tmp_path)
    assert [cfg.get(option_by_flag(f).tag) for f in flags] == ["20"] * len(flags)  # type: ignore[union-attr]


# -- kill -9 during a burst of writes -------------------------------------------------------------

WRITER = """
import sys
from iofogd.config import ConfigStore, Origin
from iofogd.paths import Paths
from iofogd.system.host import Host, interface_names
store = ConfigStore(Paths.from_root(sys.argv[1]), host=Host("x86_64", interface_names, lambda: "UTC"))
store.load()
print("ready", flush=True)
i = 0
while True:
    i += 1
    store.apply({"sf": str(i), "lc": str(1 + i % 100)}, Origin.LOCAL)
    print(i, flush=True)
"""


def test_kill_9_during_a_burst_of_writes_leaves_a_loadable_config(tmp_path: Path) -> None:
    make_store(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    previous = 10
    rng = random.Random()
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, env=env)
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0.0, 0.25))
        proc.send_signal(signal.SIGKILL)
        out = proc.stdout.read()
        proc.wait()
        done = [int(line) for line in out.split(b"\n")[:-1]]    # complete lines only
        last = done[-1] if done else 0
        for name in ("config.xml", "config-bck.xml"):           # both files are whole
            assert not parse_config_xml((etc(tmp_path) / name).read_bytes()).warnings
        cfg = reload(tmp_path)
        # the last completed write, or the one in flight when the signal came
        assert cfg.status_update_freq in ((previous if last == 0 else last), last + 1)
        assert cfg.log_file_count == 1 + cfg.status_update_freq % 100 or last == 0
        assert not [p for p in etc(tmp_path).iterdir() if p.name.endswith(".tmp")]
        previous = cfg.status_update_freq


# -- paths, URLs and stored values (issue 12) ------------------------------------------------

OUTSIDE = "(a directory may not leave the agent's root: no '..')"
NOT_HTTP = "(an http:// or https:// URL with a host is required)"


@pytest.mark.parametrize("flag", ["ld", "dl"])
@pytest.mark.parametrize("value", ["../../etc", "/var/log/../../../etc", "a/..", "..", "/x/../y"])
def test_directories_may_not_leave_the_root(tmp_path: Path, flag: str, value: str) -> None:
    store = make_store(tmp_path)
    before = (etc(tmp_path) / "config.xml").read_bytes()
    report = store.apply({flag: value}, Origin.LOCAL)
    assert report.errors == [(flag, f"Option -{flag} has invalid value: {value} {OUTSIDE}")]
    assert report.accepted == [] and (etc(tmp_path) / "config.xml").read_bytes() == before


def test_the_cli_creates_no_log_file_outside_the_root(tmp_path: Path) -> None:
    """The finding itself: ``iofog-agent config -ld ../../etc`` through a real daemon."""
    from tests.daemon_process import RunningDaemon
    root = tmp_path / "deep" / "root"
    d = RunningDaemon(str(root)).start()
    try:
        out = d.cli("config", "-ld", "../../etc")
        assert out.returncode == 0 and f"Option -ld has invalid value: ../../etc {OUTSIDE}" in out.stdout, out
        # a name that lies inside the root is taken, with its leading and trailing "/"
        out = d.cli("config", "-ld", "var/log/other")
        assert "Change accepted" in out.stdout, out
        assert d.request("GET", "/v2/info")[2]["log-file-directory"] == f"{root}/var/log/other/"
    finally:
        d.stop()
    assert not (tmp_path / "etc").exists() and not (tmp_path / "deep" / "etc").exists()
    assert (root / "var" / "log" / "other").is_dir()


def test_a_stored_directory_outside_the_root_is_replaced(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """A hand edit (or an older agent) that left ``..`` in config.xml: the default, with a warning."""
    data = JAVA_CONFIG.replace(b"<log_disk_directory>/var/log/iofog-agent/</log_disk_directory>",
                               b"<log_disk_directory>../../etc/</log_disk_directory>")
    assert data != JAVA_CONFIG
    caplog.set_level(logging.WARNING, logger="iofogd.config")
    cfg = make_store(tmp_path, data).current
    assert cfg.log_directory == f"{tmp_path}/var/log/iofog-agent/"
    assert any("<log_disk_directory> has an invalid value '../../etc/'" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("value", ["file:///etc/passwd", "javascript:alert(1)", "ftp://c/api/v3/",
                                   "http://", "https:///api", "http://exa mple/", "c:51121/api/v3",
                                   "//c/api/v3"])
def test_the_controller_url_must_be_http(tmp_path: Path, value: str) -> None:
    store = make_store(tmp_path)
    report = store.apply({"a": value}, Origin.LOCAL)
    assert report.errors == [("a", f"Option -a has invalid value: {value} {NOT_HTTP}")]
    assert store.current.get("controller_url") == "http://192.168.1.20:51121/api/v3/"


@pytest.mark.parametrize("value", ["http://c:51121/api/v3", "https://user:pw@c.example/api/v3/?x=1",
                                   "HTTPS://[fe80::1]:51121/api/v3/", "http://10.0.0.1"])
def test_the_controller_url_takes_http_and_https(tmp_path: Path, value: str) -> None:
    store = make_store(tmp_path)
    assert store.apply({"a": value}, Origin.LOCAL).errors == []
    assert reload(tmp_path).get("controller_url") == value


def test_urls_and_directories_have_length_bounds(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    before = (etc(tmp_path) / "config.xml").read_bytes()
    huge = "http://c/" + "a" * 500_000
    report = store.apply({"a": huge, "c": "unix:///" + "s" * 3000, "dl": "/d" * 2100}, Origin.LOCAL)
    assert sorted(report.errors) == [
        ("a", "Option -a has invalid value: a URL of 500009 characters (at most 2048)"),
        ("c", "Option -c has invalid value: a URL of 3008 characters (at most 2048)"),
        ("dl", "Option -dl has invalid value: a directory of 4200 characters (at most 4096)"),
    ]
    assert (etc(tmp_path) / "config.xml").read_bytes() == before
    # the longest accepted values round-trip
    longest = "http://c/" + "a" * (2048 - 9)
    assert store.apply({"a": longest}, Origin.LOCAL).errors == [] and reload(tmp_path).get("controller_url") == longest


@pytest.mark.parametrize("value,message", [
    ("unix://", "Option -c has invalid value: unix:// (unix://<socket path> or tcp://<host>:<port> is required)"),
    ("tcp://", "Option -c has invalid value: tcp:// (unix://<socket path> or tcp://<host>:<port> is required)"),
    ("tcp://h:2375/x", "Option -c has invalid value: tcp://h:2375/x "
                       "(unix://<socket path> or tcp://<host>:<port> is required)"),
    ("https://h:2376", "Unsupported protocol scheme. Only 'tcp://' or 'unix://' supported.\n"),
])
def test_the_docker_url_is_unix_or_tcp(tmp_path: Path, value: str, message: str) -> None:
    store = make_store(tmp_path)
    assert store.apply({"c": value}, Origin.LOCAL).errors == [("c", message)]
    for good in ("unix:///run/docker.sock", "tcp://127.0.0.1:2375", "tcp://docker:2375/"):
        assert store.apply({"c": good}, Origin.LOCAL).errors == []
        assert reload(tmp_path).get("docker_url") == good


@pytest.mark.parametrize("flag,typed,stored", [
    ("tz", " Europe/Paris ", "Europe/Paris"),
    ("a", "\thttp://c:51121/api/v3 ", "http://c:51121/api/v3"),
    ("n", " lo", "lo"),
    ("d", " +20 ", "20"),
    ("dl", " /data/x ", "/data/x/"),
    ("sec", "on\u2003", "on"),
])
def test_values_are_stored_as_they_are_used(tmp_path: Path, flag: str, typed: str, stored: str) -> None:
    """config.xml gives values back stripped: what is kept in memory is that already."""
    store = make_store(tmp_path)
    report = store.apply({flag: typed}, Origin.LOCAL)
    assert report.errors == [] and report.accepted[0][2] == typed.strip().lstrip("+")   # as typed, stripped
    tag = option_by_flag(flag).tag  # type: ignore[union-attr]
    assert store.current.get(tag) == stored == reload(tmp_path).get(tag)
    assert store.current == reload(tmp_path)

