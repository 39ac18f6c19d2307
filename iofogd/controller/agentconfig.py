"""The agent's own configuration as the Controller sees it (docs/controller-api.md#config-sync).

Not to be confused with a microservice's configuration (the ``config`` string
of each microservice, which reaches its control socket): this module is about
the agent's config.xml options, which the Controller reads through
``PATCH agent/config`` and changes through ``GET agent/config``.

- :func:`agent_config_body`: our options in the Controller's JSON keys and the
  Java agent's JSON types (the PATCH body).
- :func:`apply_agent_config`: the Controller's values, translated to CLI flags
  and applied through the store's own validation with origin
  :attr:`Origin.CONTROLLER` (so they are not PATCHed back).

From the Controller, missing or ``null`` keys leave the local value alone
(upstream resets them to code defaults or fails the whole update).
"""
from __future__ import annotations

from iofogd.config.schema import (
    OPTIONS,
    Option,
    check_directory,
    check_log_level,
    is_on,
    java_float,
    java_int,
    option_by_controller_key,
    slashes,
)
from iofogd.config.store import ChangeReport, ConfigStore, Origin
from iofogd.config.value import Config

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Dict, List, Mapping, Optional, Tuple


def apply_agent_config(store: ConfigStore, body: Mapping[str, object]) -> ChangeReport:
    """Apply the Controller's ``GET agent/config`` (docs/controller-api.md#config-sync) through the same validation.

    Only values that differ from ours are applied. The network interface only
    when ours is not ``dynamic``; pruning, threshold and upgrade frequency only
    when >= 1; coordinates that differ set manual GPS.
    """
    with store.lock:   # the comparison and the change see the same config
        current = store.current
        changes: Dict[str, str] = {}
        direct: Dict[str, str] = {}
        errors: List[Tuple[str, str]] = []
        for opt in OPTIONS:
            key = opt.controller_key
            if key is None or key == "gpsMode" or body.get(key) is None:
                continue
            raw = body[key]
            text = _from_json(opt, raw)
            if text is None:
                errors.append((opt.key, f"Option -{opt.key} has invalid value: {raw!r}"))
                continue
            if not _differs(opt, text, current.get(opt.tag)):
                continue
            if opt.flag is None:
                direct[opt.tag] = text          # routerHost/routerPort: stored, no flag
            elif opt.flag == "n" and current.network_interface == "dynamic":
                continue
            elif opt.flag in ("pf", "dt", "uf") and int(text) < 1:
                continue
            else:
                changes[opt.flag] = text
        lat, lon = body.get("latitude"), body.get("longitude")
        if _is_number(lat) and _is_number(lon):
            assert isinstance(lat, (int, float)) and isinstance(lon, (int, float))
            if current.gps_lat_lon != (float(lat), float(lon)):
                changes["gps"] = f"{float(lat)!r},{float(lon)!r}"
        mode = body.get("gpsMode")
        if "gps" not in changes and isinstance(mode, str) and mode != current.gps_mode:
            changes["gps"] = mode
        report = store.apply(changes, Origin.CONTROLLER, direct)
        return ChangeReport(errors + report.errors, report.accepted)


def agent_config_body(config: Config, network_interface: Optional[str] = None) -> Dict[str, object]:
    """The ``PATCH agent/config`` body (docs/controller-api.md#config-sync) with the Java agent's JSON types.

    ``network_interface`` is the interface actually in use; without it, the
    configured name, or ``UNKNOWN`` when that is ``dynamic``.
    """
    c = config
    if network_interface is None:
        network_interface = "UNKNOWN" if c.network_interface == "dynamic" else c.network_interface
    lat, lon = c.gps_lat_lon or (0.0, 0.0)
    view: Dict[str, object] = {"networkInterface": network_interface}
    for key in _PATCH_KEYS:
        opt = option_by_controller_key(key)
        assert opt is not None
        view[key] = _to_json(opt, c.get(opt.tag))
    view.update(latitude=lat, longitude=lon, logLevel=c.log_level)
    return view


# The PATCH agent/config keys besides networkInterface and the coordinates, in
# upstream's order (docs/controller-api.md#config-sync).
_PATCH_KEYS = ("dockerUrl", "diskLimit", "diskDirectory", "memoryLimit", "cpuLimit", "logLimit",
               "logDirectory", "logFileCount", "statusFrequency", "changeFrequency",
               "deviceScanFrequency", "watchdogEnabled", "gpsMode", "availableDiskThreshold",
               "dockerPruningFrequency", "readyToUpgradeScanFrequency")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _to_json(opt: Option, text: str) -> object:
    if opt.json_type == "float":
        return java_float(text)
    if opt.json_type == "int":
        return java_int(text, 64)
    if opt.json_type == "bool":
        return is_on(text)
    if opt.check is check_directory:
        return slashes(text)
    return text


def _from_json(opt: Option, value: object) -> Optional[str]:
    """A Controller JSON value as the text a CLI user would type; None for a wrong type."""
    if opt.json_type == "float":
        # Upstream hands the Java float to setConfig, whose toString gives "50.0".
        return repr(float(value)) if _is_number(value) else None  # type: ignore[arg-type]
    if opt.json_type == "int":
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else None
    if opt.json_type == "bool":
        return ("on" if value else "off") if isinstance(value, bool) else None
    return value if isinstance(value, str) else None


def _differs(opt: Option, text: str, current: str) -> bool:
    if opt.json_type == "float":
        return java_float(text) != java_float(current)
    if opt.json_type == "int":
        return java_int(text, 64) != java_int(current, 64)
    if opt.json_type == "bool":
        return is_on(text) != is_on(current)
    if opt.check is check_directory:
        return slashes(text) != slashes(current)
    if opt.check is check_log_level:
        return text.upper() != current.upper()
    return text != current
