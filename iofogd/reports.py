"""The `status` and `info` reports (docs/local-api.md#status-report, #info-report, #status-info), pure.

Each report is a list of (label, value) pairs. The CLI text and the JSON of
``/v2/status`` and ``/v2/info`` are both rendered from that one list, so they
cannot drift apart (upstream builds the JSON by re-parsing its own text, and
answers 400 when a value is empty; we answer the empty string).

Scripts parse the text (docs/cli.md#scripts): iofogctl cuts the first line of `status` on
":" and expects ``RUNNING``; upgrade.sh takes awk field 4 of the "ioFog" line;
upstream CI takes awk field 5 of "Available Disk Threshold" in `info`. Labels,
padding and value formats therefore stay byte-compatible.
"""
from __future__ import annotations

from datetime import datetime


from iofogd.config.value import Config
from iofogd.record import Record
from iofogd.state import StateSnapshot
from iofogd.system.network import NetworkInfo
from iofogd.system.status import ResourceSnapshot

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Final

# Upstream separates report lines with a literal backslash-n (two characters);
# the CLI turns them into newlines when it prints (docs/cli.md#client).
LINE_SEP = "\\n"

Report = list[tuple[str, str]]

MIB = 1024 * 1024
GIB = 1024 * MIB


def _on_off(flag: bool) -> str:
    return "on" if flag else "off"


class EngineInfo(Record):
    __slots__ = ("running", "error")
    running: Final[int]  # running microservice containers
    error: Final[str | None]  # why the Docker engine is not usable, None when it is

    def __init__(self, running: int, error: str | None) -> None:
        self.running = running
        self.error = error


def status_report(state: StateSnapshot, res: ResourceSnapshot, engine: EngineInfo, now: datetime,
                  router: str | None = None) -> Report:
    archive = res.archive_bytes
    disk_usage = (
        f"about {archive / MIB:.2f} MiB" if archive < GIB else f"about {archive / GIB:.2f} GiB"
    )
    avail_pct = 100.0 * res.disk_available_bytes / res.disk_total_bytes if res.disk_total_bytes else 0.0
    return [
        ("ioFog daemon", state.daemon_status),
        ("Memory Usage", f"about {res.memory_rss_bytes / MIB:.2f} MiB"),
        ("Disk Usage", disk_usage),
        ("CPU Usage", f"about {res.cpu_percent:.2f} %"),
        ("Running Microservices", str(engine.running)),
        ("Connection to Controller", state.controller_status),
        ("Messages Processed", f"about {state.messages_processed:,}"),
        # Java's "dd/MM/yyyy hh:mm a": 12-hour clock with AM/PM.
        ("System Time", now.strftime("%d/%m/%Y %I:%M %p")),
        ("System Available Disk", f"{res.disk_available_bytes / MIB:.2f} MB ({avail_pct:.2f} %)"),
        ("System Available Memory", f"{res.memory_available_bytes / MIB:.2f} MB"),
        ("System Total CPU", f"{res.system_cpu_percent:.2f} %"),
        # Ours, last so that scripts reading upstream's lines by position still work.
        ("Docker Engine", "ok" if engine.error is None else f"not usable: {engine.error}"),
    ] + ([] if router is None else [("Router", router)])   # ours too (issue 14): the router link's state


def info_report(cfg: Config, net: NetworkInfo, fog_type: str) -> Report:
    if net.configured.lower() == "dynamic":
        interface = f"{net.interface or 'not found'}(dynamic)"
    else:
        interface = net.configured
    return [
        ("Iofog UUID", cfg.iofog_uuid or "not provisioned"),
        ("IP Address", net.address or "unable to retrieve ip address"),
        ("Network Interface", interface),
        ("Secure Mode", _on_off(cfg.secure_mode)),
        ("ioFog Controller", cfg.controller_url),
        ("ioFog Certificate", cfg.controller_cert),
        ("Docker URL", cfg.docker_url),
        ("Message Storage Limit", f"{cfg.disk_limit_gb:.2f} GiB"),
        ("Message Storage Directory", cfg.disk_directory),
        ("Memory RAM Limit", f"{cfg.memory_limit_mb:.2f} MiB"),
        ("CPU Usage Limit", f"{cfg.cpu_limit:.2f}%"),
        ("Log Disk Limit", f"{cfg.log_limit_gb:.2f} GiB"),
        ("Log File Directory", cfg.log_directory),
        ("Log Rolling File Count", str(cfg.log_file_count)),
        ("Log Level", cfg.log_level),
        ("Status Update Frequency", str(cfg.status_update_freq)),
        ("Get Changes Frequency", str(cfg.get_changes_freq)),
        ("Scan Devices Frequency", str(cfg.scan_devices_freq)),
        ("Post Diagnostics Frequency", str(cfg.post_diagnostics_freq)),
        ("Isolated Docker Containers Mode", _on_off(cfg.isolated_docker_container)),
        ("GPS mode", cfg.gps_mode),
        ("GPS coordinates(lat,lon)", cfg.gps_coordinates),
        ("Fog type", fog_type),
        ("Docker Pruning Frequency", str(cfg.docker_pruning_freq)),
        ("Available Disk Threshold", str(cfg.available_disk_threshold)),
        ("Ready To Upgrade Scan Frequency", str(cfg.upgrade_scan_frequency)),
        ("Developer's Mode", _on_off(cfg.dev_mode)),
        ("Time Zone", cfg.time_zone),
        # Ours (issue 12), after upstream's lines so scripts that read them by position still work.
        ("Strict Microservice Identity", _on_off(cfg.strict_microservice_identity)),
    ]


def status_text(report: Report) -> str:
    """docs/local-api.md#status-report: label left-justified in 28 columns, then ``: ``."""
    return LINE_SEP.join(f"{label:<28}: {value}" for label, value in report)


def info_text(report: Report) -> str:
    """docs/local-api.md#info-report: label padded to 40, `` : ``, value, and a separator after every line."""
    return "".join(f"{label:<40} : {value}{LINE_SEP}" for label, value in report)


# /v2/info renames two keys that upstream's text-to-JSON step would mangle (docs/local-api.md#status-info).
_JSON_KEY_RENAMES = {
    "gps-coordinates(lat,lon)": "gps-coordinates",
    "developer's-mode": "developer-mode",
}


def report_json(report: Report) -> dict[str, str]:
    """docs/local-api.md#status-info: key = label lower-cased with spaces as ``-``; values are strings."""
    out: dict[str, str] = {}
    for label, value in report:
        key = label.strip().lower().replace(" ", "-")
        out[_JSON_KEY_RENAMES.get(key, key)] = value.strip()
    return out
