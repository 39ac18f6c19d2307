"""The option schema: one keyword row per option, and the Java text rules it validates with.

``OPTIONS`` is the single table: each :class:`Option` names its XML tag, CLI flag,
``/v2/config`` long name, Controller JSON key, code default, shipped value, the
validator that gives upstream's exact messages (docs/config-xml.md#validation), the check a stored
value must pass when the file is read, and its help text. The CLI, ``/v2/config``,
the Controller sync (iofogd/controller/agentconfig.py) and ``config defaults``
all go through this table; nothing else in iofogd knows a tag name.

Pure: no I/O here (the host is asked through :class:`iofogd.system.host.Host`).
"""
from __future__ import annotations

import logging
import math
import re

from iofogd.errors import ConfigValueError
from iofogd.record import Record
from iofogd.system.host import Host, detect_fog_type

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Callable, Dict, Final, Mapping, Optional, Tuple


# -- Java's number and level parsing -------------------------------------------------

# Float.parseFloat: trims ASCII whitespace, allows a type suffix; we refuse NaN/Infinity.
_JAVA_FLOAT = r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[fFdD]?"
# Integer.parseInt / Long.parseLong: no whitespace, optional sign, ASCII digits.
_JAVA_INT = r"[+-]?[0-9]+"
_JAVA_WS = "".join(chr(c) for c in range(0x21))


def java_float(text: str) -> Optional[float]:
    s = text.strip(_JAVA_WS)
    if not re.fullmatch(_JAVA_FLOAT, s):
        return None
    value = float(s.rstrip("fFdD"))
    return None if math.isnan(value) else value


def java_int(text: str, bits: int = 32) -> Optional[int]:
    if not re.fullmatch(_JAVA_INT, text):
        return None
    value = int(text)
    limit = 1 << (bits - 1)
    return value if -limit <= value < limit else None


# java.util.logging level names and values (Level.parse also takes an integer).
JAVA_LEVELS = {
    "OFF": 2**31 - 1, "SEVERE": 1000, "WARNING": 900, "INFO": 800, "CONFIG": 700,
    "FINE": 500, "FINER": 400, "FINEST": 300, "ALL": -(2**31),
}


def java_level(text: str) -> Optional[int]:
    name = text.upper()
    return JAVA_LEVELS[name] if name in JAVA_LEVELS else java_int(name)


def python_log_level(java: int) -> int:
    """Map a java.util.logging level value onto :mod:`logging` (OFF is above CRITICAL)."""
    if java == JAVA_LEVELS["OFF"]:
        return logging.CRITICAL + 10
    for threshold, level in ((1000, logging.ERROR), (900, logging.WARNING), (800, logging.INFO),
                             (700, 15), (500, logging.DEBUG), (400, 5)):
        if java >= threshold:
            return level
    return 1


_COORDINATES = r"[+-]?[0-9]+(?:\.[0-9]+)?,[+-]?[0-9]+(?:\.[0-9]+)?"


def parse_coordinates(text: str) -> Optional[Tuple[float, float]]:
    """``(lat, lon)`` for ``"<lat>,<lon>"`` in range, else None (docs/config-xml.md#validation, GPS details)."""
    if not re.fullmatch(_COORDINATES, text):
        return None
    lat_s, lon_s = text.split(",")
    lat, lon = float(lat_s), float(lon_s)
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return lat, lon


def valid_coordinates(text: str) -> bool:
    return text == "" or parse_coordinates(text) is not None


# Characters that cannot appear in an XML 1.0 document, and line breaks, which no
# setting contains.
UNWRITABLE = "[\x00-\x1f\x7f\ud800-\udfff\ufffe\uffff]"


# -- validators ------------------------------------------------------------------------
# A validator gets the value as typed (after "+" stripping), the current tag->text
# map and the host; it returns the tags to change, or raises ConfigValueError with
# upstream's message (docs/config-xml.md#validation).

if TYPE_CHECKING:
    Validator = Callable[["Option", str, Mapping[str, str], Host], Dict[str, str]]


def invalid_value(opt: Option, value: str) -> ConfigValueError:
    return ConfigValueError(opt.key, f"Option -{opt.flag} has invalid value: {value}")


def _float_in(low: float, high: float, message: str) -> Validator:
    def check(opt: Option, value: str, values: Mapping[str, str], host: Host) -> Dict[str, str]:
        number = java_float(value)
        if number is None:
            raise invalid_value(opt, value)
        if number < low or number > high:
            raise ConfigValueError(opt.key, message)
        return {opt.tag: value}
    return check


def _int_in(low: int, high: Optional[int], message: str, bits: int = 32) -> Validator:
    def check(opt: Option, value: str, values: Mapping[str, str], host: Host) -> Dict[str, str]:
        number = java_int(value, bits)
        if number is None:
            raise invalid_value(opt, value)
        if number < low or (high is not None and number > high):
            raise ConfigValueError(opt.key, message)
        return {opt.tag: value}
    return check


def _any(opt: Option, value: str, values: Mapping[str, str], host: Host) -> Dict[str, str]:
    return {opt.tag: value}


def _interface(opt: Option, value: str, values: Mapping[str, str], host: Host) -> Dict[str, str]:
    name = value.strip()
    if name == "dynamic" or name.lower() in {n.lower() for n in host.interfaces()}:
        return {opt.tag: value}
    raise ConfigValueError(opt.key, "Invalid network interface")


def check_log_level(opt: Option, value: str, values: Mapping[str, str], host: Host) -> Dict[str, str]:
    if java_level(value) is None:
        raise invalid_value(opt, value)
    return {opt.tag: value.upper()}


def _on_off(opt: Option, value: str, values: Mapping[str, str], host: Host) -> Dict[str, str]:
    if value.lower() not in ("on", "off"):
        raise invalid_value(opt, value)
    return {opt.tag: value}


def _gps(opt: Option, value: str, values: Mapping[str, str], host: Host) -> Dict[str, str]:
    stored = values["gps_coordinates"]
    if value == "auto":
        # Upstream asks ip-api.com here and keeps the stored coordinates when that
        # fails; we never call outside services (docs/compatibility.md), so we keep them.
        mode, coordinates = "auto", stored
    elif value == "off":
        mode, coordinates = "off", ""
    elif value == "manual":
        mode, coordinates = "manual", stored
    else:
        mode, coordinates = "manual", value
    if not valid_coordinates(coordinates):
        raise invalid_value(opt, value)
    changes = {"gps": mode}
    if coordinates.strip():          # "off" leaves the stored coordinates alone
        changes["gps_coordinates"] = coordinates.strip()
    return changes


def _fog_type(opt: Option, value: str, values: Mapping[str, str], host: Host) -> Dict[str, str]:
    if value not in ("auto", "intel_amd", "arm"):
        raise invalid_value(opt, value)
    if value == "auto":
        try:
            detect_fog_type(host.machine)
        except ConfigValueError:
            raise invalid_value(opt, value) from None
    return {opt.tag: value}


# -- paths and URLs (issue 12) ---------------------------------------------------------
# One block, moved whole from config.py. Directory options are joined to --root
# (Paths.rooted), so a value is safe when it has no ".." segment: then it cannot
# leave the root, whatever the root is (symbolic links inside the root are the
# admin's own). URLs are checked when set, not only when used, and every value
# has a length bound: a 500 KB URL would be written to config.xml, sent to the
# Controller and logged. Values reach these checks stripped
# (ConfigStore.apply), as config.xml gives them back on reload.

MAX_URL_LENGTH = 2048     # what browsers and most servers accept
MAX_PATH_LENGTH = 4096    # Linux PATH_MAX
_HTTP_URL = r"https?://[^/?#@\s]*@?[^/?#\s]+(?:[/?#]\S*)?"
_DOCKER_URL = r"unix://\S+|tcp://[^/?#\s]+/?"


def _refuse(opt: Option, value: str, why: str, *, limit: int, what: str) -> ConfigValueError:
    """The error for a value: its length when over ``limit`` (never echo 500 KB), else ``why``."""
    if len(value) > limit:
        return ConfigValueError(opt.key, f"Option -{opt.flag} has invalid value: {what} of {len(value)} "
                                         f"characters (at most {limit})")
    return ConfigValueError(opt.key, f"Option -{opt.flag} has invalid value: {value} ({why})")


def directory_inside_root(text: str) -> bool:
    """Whether a directory option, joined to the root, stays under it (also the load-time check)."""
    return bool(text) and len(text) <= MAX_PATH_LENGTH and ".." not in text.split("/")


def check_directory(opt: Option, value: str, values: Mapping[str, str], host: Host) -> Dict[str, str]:
    # The Controller's view (controller/agentconfig.py) knows directory options by this validator.
    if not directory_inside_root(value):
        raise _refuse(opt, value, "a directory may not leave the agent's root: no '..'",
                      limit=MAX_PATH_LENGTH, what="a directory")
    # Upstream's addSeparator: a trailing separator is appended when missing.
    return {opt.tag: value if value.endswith("/") else value + "/"}


def is_http_url(text: str) -> bool:
    """An http(s) URL with a host, no whitespace, within the length bound."""
    return len(text) <= MAX_URL_LENGTH and re.fullmatch(_HTTP_URL, text, re.IGNORECASE) is not None


def _controller_url(opt: Option, value: str, values: Mapping[str, str], host: Host) -> Dict[str, str]:
    if not is_http_url(value):
        raise _refuse(opt, value, "an http:// or https:// URL with a host is required",
                      limit=MAX_URL_LENGTH, what="a URL")
    return {opt.tag: value}


def _docker_url(opt: Option, value: str, values: Mapping[str, str], host: Host) -> Dict[str, str]:
    if len(value) <= MAX_URL_LENGTH and not (value.startswith("tcp://") or value.startswith("unix://")):
        # The trailing newline is upstream's (docs/config-xml.md#validation).
        raise ConfigValueError(opt.key, "Unsupported protocol scheme. Only 'tcp://' or 'unix://' supported.\n")
    if len(value) > MAX_URL_LENGTH or not re.fullmatch(_DOCKER_URL, value):
        raise _refuse(opt, value, "unix://<socket path> or tcp://<host>:<port> is required",
                      limit=MAX_URL_LENGTH, what="a URL")
    return {opt.tag: value}


# -- end of the paths and URLs block ------------------------------------------------------


# -- load-time checks: a stored value that fails one is replaced by the default ------


def _always(text: str) -> bool:
    return True


def _is_float(text: str) -> bool:
    return java_float(text) is not None


def _is_int(text: str) -> bool:
    return java_int(text) is not None


def _is_long(text: str) -> bool:
    return java_int(text, 64) is not None


def _is_port(text: str) -> bool:
    port = java_int(text)
    return port is not None and 1 <= port <= 65535


# -- the schema --------------------------------------------------------------------------


class Option(Record):
    """One configuration key; see the module docstring."""

    __slots__ = (
        "tag", "flag", "long_name", "controller_key", "default", "shipped", "check", "load_ok",
        "json_type", "metavar", "help",
    )
    tag: Final[str]  # XML tag
    flag: Final[Optional[str]]  # CLI flag without the dash; None: not settable by CLI
    long_name: Final[Optional[str]]  # /v2/config key (docs/local-api.md#config)
    controller_key: Final[Optional[str]]  # agent/config JSON key (docs/controller-api.md#config-sync)
    default: Final[str]  # code default, as XML text
    shipped: Final[str]  # value in the packaged config_new.xml
    check: Final[Optional[Validator]]
    load_ok: Final[Callable[[str], bool]]
    json_type: Final[str]  # JSON type towards the Controller: str, float, int, bool
    metavar: Final[str]
    help: Final[str]

    def __init__(
        self,
        *,
        tag: str,
        flag: Optional[str] = None,
        long_name: Optional[str] = None,
        controller_key: Optional[str] = None,
        default: str = "",
        shipped: Optional[str] = None,
        check: Optional[Validator] = None,
        load_ok: Callable[[str], bool] = _always,
        json_type: str = "str",
        metavar: str = "",
        help: str = "",
    ) -> None:
        self.tag = tag
        self.flag = flag
        self.long_name = long_name
        self.controller_key = controller_key
        self.default = default
        self.shipped = default if shipped is None else shipped
        self.check = check
        self.load_ok = load_ok
        self.json_type = json_type
        self.metavar = metavar
        self.help = help

    @property
    def key(self) -> str:
        """The flag, or the tag for options without one (how reports name an option)."""
        return self.flag or self.tag


_GREATER = "{} must be greater than 1"

# In the order of the packaged config_new.xml, so a fresh file looks like upstream's.
OPTIONS: Tuple[Option, ...] = (
    Option(tag="access_token"),
    Option(tag="router_host", controller_key="routerHost"),
    Option(tag="router_port", controller_key="routerPort", default="0", shipped="",
        load_ok=lambda t: t == "" or _is_int(t), json_type="int"),
    # Upstream's code default is a retired public Controller on the v2 API
    # (docs/config-xml.md#cli): `config defaults` would point a gateway at the internet. Ours is the
    # shipped value, a local Controller on v3.
    Option(tag="controller_url", flag="a", long_name="controller-url",
        default="http://localhost:54421/api/v3/", shipped="http://localhost:54421/api/v3/",
        check=_controller_url, load_ok=is_http_url,
        metavar="<uri>", help="Set the uri of the fog controller to which this software connects"),
    Option(tag="iofog_uuid"),
    Option(tag="secure_mode", flag="sec", default="off", check=_any, metavar="<on/off>",
        help="Refuse plain http connections to the controller"),
    Option(tag="dev_mode", flag="dev", long_name="developer-mode", default="off", check=_any,
        metavar="<on/off>", help="Set the developer's mode"),
    Option(tag="controller_cert", flag="ac", long_name="cert-directory",
        default="/etc/iofog-agent/cert.crt", check=_any, metavar="<filepath>",
        help="Set the file path of the SSL/TLS certificate for validating the fog controller identity"),
    Option(tag="fog_type", flag="ft", long_name="fog-type", default="auto", check=_fog_type,
        load_ok=lambda t: t in ("auto", "intel_amd", "arm"), metavar="<auto/intel_amd/arm>",
        help="Set fog type. Use auto to detect it, arm or intel_amd to set it manually"),
    Option(tag="network_interface", flag="n", long_name="network-adapter",
        controller_key="networkInterface", default="dynamic", check=_interface,
        metavar="<network adapter>",
        help="Set the name of the network adapter that holds the correct IP address of this machine"),
    Option(tag="docker_url", flag="c", long_name="docker-url", controller_key="dockerUrl",
        default="unix:///var/run/docker.sock", check=_docker_url, metavar="<uri>",
        help="Set the UNIX socket or network address that the Docker daemon is using"),
    Option(tag="disk_consumption_limit", flag="d", long_name="disk-limit", controller_key="diskLimit",
        default="10", check=_float_in(1, 1048576, "Disk limit range must be 1 to 1048576 GB"),
        load_ok=_is_float, json_type="float", metavar="<#GB Limit>",
        help="Set the limit, in GiB, of disk space that the message archive is allowed to use"),
    Option(tag="disk_directory", flag="dl", long_name="disk-directory", controller_key="diskDirectory",
        default="/var/lib/iofog-agent/", check=check_directory, load_ok=directory_inside_root,
        metavar="<dir>",
        help="Set the directory to use for disk storage"),
    Option(tag="memory_consumption_limit", flag="m", long_name="memory-limit",
        controller_key="memoryLimit", default="4096",
        check=_float_in(128, 1048576, "Memory limit range must be 128 to 1048576 MB"),
        load_ok=_is_float, json_type="float", metavar="<#MB Limit>",
        help="Set the limit, in MiB, of RAM memory that the software is allowed to use"),
    Option(tag="processor_consumption_limit", flag="p", long_name="cpu-limit",
        controller_key="cpuLimit", default="80", shipped="80.0",
        check=_float_in(5, 100, "CPU limit range must be 5% to 100%"), load_ok=_is_float,
        json_type="float", metavar="<#cpu % Limit>",
        help="Set the limit, in percentage, of CPU time that the software is allowed to use"),
    Option(tag="log_disk_consumption_limit", flag="l", long_name="logs-limit",
        controller_key="logLimit", default="10", shipped="10.0",
        check=_float_in(0.5, 100, "Log disk limit range must be 0.5 to 100 GB"), load_ok=_is_float,
        json_type="float", metavar="<#GB Limit>",
        help="Set the limit, in GiB, of disk space that the log files can consume"),
    Option(tag="log_disk_directory", flag="ld", long_name="logs-directory",
        controller_key="logDirectory", default="/var/log/iofog-agent/", check=check_directory,
        load_ok=directory_inside_root, metavar="<dir>", help="Set the directory to use for log file storage"),
    Option(tag="log_file_count", flag="lc", long_name="logs-count", controller_key="logFileCount",
        default="10", check=_int_in(1, 100, "Log file count range must be 1 to 100"), load_ok=_is_int,
        json_type="int", metavar="<#log files>",
        help="Set the number of log files to evenly split the log storage limit"),
    Option(tag="log_level", flag="ll", long_name="logs-level", controller_key="logLevel",
        default="INFO", check=check_log_level, load_ok=lambda t: java_level(t) is not None,
        metavar="<log level>",
        help="Set the logging level (SEVERE, WARNING, INFO, CONFIG, FINE, FINER, FINEST, ALL, OFF)"),
    Option(tag="status_update_freq", flag="sf", long_name="status-frequency",
        controller_key="statusFrequency", default="10", shipped="30",
        check=_int_in(1, None, _GREATER.format("Status update frequency")), load_ok=_is_int,
        json_type="int", metavar="<#seconds>", help="Set the status update frequency"),
    Option(tag="get_changes_freq", flag="cf", long_name="changes-frequency",
        controller_key="changeFrequency", default="20", shipped="60",
        check=_int_in(1, None, _GREATER.format("Get changes frequency")), load_ok=_is_int,
        json_type="int", metavar="<#seconds>", help="Set the get changes frequency"),
    Option(tag="post_diagnostics_freq", flag="df", long_name="diagnostics-frequency",
        controller_key="postdiagnosticsfreq", default="10",
        check=_int_in(1, None, _GREATER.format("Post diagnostics frequency")), load_ok=_is_int,
        json_type="int", metavar="<#seconds>", help="Set the post diagnostics frequency"),
    Option(tag="scan_devices_freq", flag="sd", long_name="device-scan-frequency",
        controller_key="deviceScanFrequency", default="60",
        check=_int_in(1, None, _GREATER.format("Get scan devices frequency")), load_ok=_is_int,
        json_type="int", metavar="<#seconds>", help="Set the scan devices frequency"),
    Option(tag="gps", flag="gps", long_name="gps", controller_key="gpsMode", default="auto", check=_gps,
        load_ok=lambda t: t in ("auto", "off", "manual", "dynamic"),
        metavar="<auto/off/#GPS DD.DDD(lat),DD.DDD(lon)>",
        help="Set gps location of fog: auto keeps the stored coordinates, off forbids gps, "
            "coordinates in DD format set them manually"),
    Option(tag="gps_coordinates", shipped="0,0", load_ok=valid_coordinates),
    Option(tag="isolated_docker_container", flag="idc", long_name="isolated",
        controller_key="watchdogEnabled", default="off", check=_on_off, json_type="bool",
        metavar="<on/off>",
        help="Set the mode on which any not registered docker container will be shut down"),
    Option(tag="docker_pruning_freq", flag="pf", controller_key="dockerPruningFrequency", default="1",
        check=_int_in(1, None, _GREATER.format("Docker pruning frequency"), bits=64), load_ok=_is_long,
        json_type="int", metavar="<#hours>", help="Set the docker pruning frequency"),
    Option(tag="available_disk_threshold", flag="dt", controller_key="availableDiskThreshold",
        default="20", check=_int_in(1, None, _GREATER.format("Available disk threshold"), bits=64),
        load_ok=_is_long, json_type="int", metavar="<#percent>", help="Set the available disk threshold"),
    Option(tag="upgrade_scan_frequency", flag="uf", controller_key="readyToUpgradeScanFrequency",
        default="24", check=_int_in(1, None, _GREATER.format("isReadyToUpgrade scan frequency")),
        load_ok=_is_int, json_type="int", metavar="<#hours>",
        help="Set the ready to upgrade scan frequency"),
    Option(tag="time_zone", flag="tz", long_name="time-zone", controller_key="timeZone", check=_any,
        metavar="<time zone>", help="Set the time zone given to microservices"),
    # Our additions: where the Local API listens.
    Option(tag="local_api_address", default="0.0.0.0", load_ok=bool),
    Option(tag="local_api_port", default="54321", load_ok=_is_port),
    # Ours (issue 12): callers that are not a container of this agent may not use
    # the microservice endpoints (see iofogd/system/identity.py). No Controller key.
    Option(tag="strict_microservice_identity", flag="smi", long_name="strict-microservice-identity",
        default="off", check=_on_off, load_ok=lambda t: t.lower() in ("on", "off"), metavar="<on/off>",
        help="Refuse the microservice endpoints to callers that are not a container of this agent"),
)

# The tags iofogd adds to upstream's set.
OUR_TAGS = frozenset({"local_api_address", "local_api_port", "strict_microservice_identity"})

_BY_TAG = {o.tag: o for o in OPTIONS}
_BY_FLAG = {o.flag: o for o in OPTIONS if o.flag}
_BY_LONG = {o.long_name: o for o in OPTIONS if o.long_name}
_BY_CONTROLLER = {o.controller_key: o for o in OPTIONS if o.controller_key}


def option_by_tag(tag: str) -> Optional[Option]:
    return _BY_TAG.get(tag)


def option_by_flag(flag: str) -> Optional[Option]:
    return _BY_FLAG.get(flag.lstrip("-"))


def option_by_long_name(name: str) -> Optional[Option]:
    return _BY_LONG.get(name)


def option_by_controller_key(key: str) -> Optional[Option]:
    return _BY_CONTROLLER.get(key)


def default_of(tag: str) -> str:
    """The code default of a known tag."""
    return _BY_TAG[tag].default


def code_defaults() -> Dict[str, str]:
    return {o.tag: o.default for o in OPTIONS}


# The packaged development and production files differ from config_new.xml (docs/config-xml.md#keys).
_SHIPPED_VARIANTS: Dict[str, Dict[str, str]] = {
    "default": {},
    "development": {"controller_url": "http://localhost:51121/api/v3/", "dev_mode": "on"},
    "production": {"secure_mode": "on"},
}


def shipped_values(state: str = "default") -> Dict[str, str]:
    values = {o.tag: o.shipped for o in OPTIONS}
    values.update(_SHIPPED_VARIANTS[state])
    return values


def slashes(directory: str) -> str:
    """Upstream's setDiskDirectory/setLogDiskDirectory: leading and trailing separator."""
    if not directory.startswith("/"):
        directory = "/" + directory
    return directory if directory.endswith("/") else directory + "/"


def is_on(text: str) -> bool:
    return text.strip().lower() != "off"
