"""iofogd.reports: the status and info texts byte for byte (scripts parse them, docs/cli.md#scripts, docs/local-api.md#status-report, #info-report)."""
from __future__ import annotations

from datetime import datetime

from iofogd.config import Config, shipped_values
from iofogd.paths import Paths
from iofogd.reports import (
    GIB,
    MIB,
    EngineInfo,
    info_report,
    info_text,
    report_json,
    status_report,
    status_text,
)
from iofogd.state import StateSnapshot
from iofogd.system.network import NetworkInfo
from iofogd.system.status import ResourceSnapshot

STATE = StateSnapshot(daemon_status="RUNNING", controller_status="ok", messages_processed=1234567)
RESOURCES = ResourceSnapshot(memory_rss_bytes=25 * MIB + MIB // 2, cpu_percent=1.5, archive_bytes=3 * GIB,
                             disk_available_bytes=40 * GIB, disk_total_bytes=160 * GIB,
                             memory_available_bytes=512 * MIB, system_cpu_percent=12.25)
AFTERNOON = datetime(2026, 3, 4, 15, 7)


def test_status_text_is_byte_exact() -> None:
    text = status_text(status_report(STATE, RESOURCES, EngineInfo(2, None), AFTERNOON))
    assert text.split("\\n") == [
        "ioFog daemon                : RUNNING",
        "Memory Usage                : about 25.50 MiB",
        "Disk Usage                  : about 3.00 GiB",
        "CPU Usage                   : about 1.50 %",
        "Running Microservices       : 2",
        "Connection to Controller    : ok",
        "Messages Processed          : about 1,234,567",
        "System Time                 : 04/03/2026 03:07 PM",
        "System Available Disk       : 40960.00 MB (25.00 %)",
        "System Available Memory     : 512.00 MB",
        "System Total CPU            : 12.25 %",
        "Docker Engine               : ok",
    ]
    # What the scripts cut (docs/cli.md#scripts): iofogctl the first line on ":", upgrade.sh awk field 4.
    assert text.split("\\n")[0].split(":")[1].strip() == "RUNNING"


def test_status_small_archive_in_mib_and_engine_error() -> None:
    report = status_report(STATE, RESOURCES.replace(archive_bytes=MIB, disk_total_bytes=0),
                           EngineInfo(0, "no socket"), AFTERNOON)
    lines = status_text(report).split("\\n")
    assert lines[2] == "Disk Usage                  : about 1.00 MiB"
    assert lines[8] == "System Available Disk       : 40960.00 MB (0.00 %)"
    assert lines[-1] == "Docker Engine               : not usable: no socket"


def test_info_text_is_byte_exact() -> None:
    cfg = Config(dict(shipped_values(), iofog_uuid="node-1", time_zone="Europe/Paris"),
                 paths=Paths.from_root("/"), machine="aarch64")
    net = NetworkInfo("eth0", "192.0.2.7", "dynamic")
    text = info_text(info_report(cfg, net, cfg.fog_type))
    assert text == "".join(f"{line}\\n" for line in [
        "Iofog UUID                               : node-1",
        "IP Address                               : 192.0.2.7",
        "Network Interface                        : eth0(dynamic)",
        "Secure Mode                              : off",
        "ioFog Controller                         : http://localhost:54421/api/v3/",
        "ioFog Certificate                        : /etc/iofog-agent/cert.crt",
        "Docker URL                               : unix:///var/run/docker.sock",
        "Message Storage Limit                    : 10.00 GiB",
        "Message Storage Directory                : /var/lib/iofog-agent/",
        "Memory RAM Limit                         : 4096.00 MiB",
        "CPU Usage Limit                          : 80.00%",
        "Log Disk Limit                           : 10.00 GiB",
        "Log File Directory                       : /var/log/iofog-agent/",
        "Log Rolling File Count                   : 10",
        "Log Level                                : INFO",
        "Status Update Frequency                  : 30",
        "Get Changes Frequency                    : 60",
        "Scan Devices Frequency                   : 60",
        "Post Diagnostics Frequency               : 10",
        "Isolated Docker Containers Mode          : off",
        "GPS mode                                 : auto",
        "GPS coordinates(lat,lon)                 : 0,0",
        "Fog type                                 : arm",
        "Docker Pruning Frequency                 : 1",
        "Available Disk Threshold                 : 20",
        "Ready To Upgrade Scan Frequency          : 24",
        "Developer's Mode                         : off",
        "Time Zone                                : Europe/Paris",
        # ours (issue 12), after upstream's 28 lines
        "Strict Microservice Identity             : off",
    ])
    # Upstream CI takes awk field 5 of this line (docs/cli.md#scripts).
    threshold = next(line for line in text.split("\\n") if line.startswith("Available Disk Threshold"))
    assert threshold.split()[4] == "20"


def test_info_without_network_and_json_keys() -> None:
    cfg = Config(dict(shipped_values(), network_interface="wlan0"), paths=Paths.from_root("/"),
                 machine="x86_64")
    report = info_report(cfg, NetworkInfo(None, None, "wlan0"), cfg.fog_type)
    as_json = report_json(report)
    assert as_json["iofog-uuid"] == "not provisioned"
    assert as_json["ip-address"] == "unable to retrieve ip address"
    assert as_json["network-interface"] == "wlan0"
    assert as_json["gps-coordinates"] == "0,0" and as_json["developer-mode"] == "off"
    assert as_json["fog-type"] == "intel_amd"
    assert as_json["strict-microservice-identity"] == "off"
    strict = cfg.with_values({"strict_microservice_identity": "on"})
    assert report_json(info_report(strict, NetworkInfo(None, None, "wlan0"), cfg.fog_type))[
        "strict-microservice-identity"] == "on"
    dynamic = info_report(cfg, NetworkInfo(None, None, "Dynamic"), cfg.fog_type)
    assert report_json(dynamic)["network-interface"] == "not found(dynamic)"
