"""One schema for every option, config.xml persistence and the admin token (spec 0.5, 4).

Theory of operation
-------------------
``OPTIONS`` is the single table: each :class:`Option` names its XML tag, CLI flag,
``/v2/config`` long name, Controller JSON key, code default, shipped value, the
validator that gives upstream's exact messages (spec 4.4), the check a stored
value must pass when the file is read, and its help text. The CLI, ``/v2/config``,
the Controller sync (``agent/config``, spec 6.7) and ``config defaults`` all go
through this table; nothing else in iofogd knows a tag name.

Values are kept as the XML text the Java agent writes (units and spellings
unchanged: GB, MB, %, seconds, hours, ``on``/``off``), so a config.xml written by
the Java agent loads unchanged and ours loads in the Java agent. :class:`Config`
is an immutable snapshot: raw text through :meth:`Config.get`, typed values as
attributes (``cfg.disk_limit_gb``).

:class:`ConfigStore` owns the files. It is the only writer: every change is
validated as a whole, then written once (temporary file, fsync, rename, fsync of
the directory) to the active file and again to ``config-bck.xml``, so a crash at
any moment leaves a complete active file. A corrupt active file falls back to the
backup with a warning; both corrupt is one clear :class:`ConfigFileError`.

Deliberate differences from the Java agent (see compatibility.md):

- ``-gps auto`` never asks ip-api.com (no calls to outside services); it keeps the
  stored coordinates, as upstream does when that call fails.
- ``-n`` accepts ``dynamic`` or the name of an interface that exists on this host
  (``socket.if_nameindex()`` and ``/sys/class/net``, case-insensitive). Upstream's
  loop accepts any name on Linux (spec 4.4).
- Coordinates must be ``<lat>,<lon>`` with the comma (upstream's regex makes it
  optional and then crashes on the split); ``NaN``/``Infinity`` are not numbers.
- A blank value is an error only, not also "Change accepted" (upstream reports both).
- Values with control characters are refused (upstream would write a file its own
  parser then rejects).
- An unparseable stored value is replaced by the code default with a warning,
  like a missing element, instead of stopping the daemon.
- ``on``/``off`` are read case-insensitively everywhere (upstream: ``OFF`` is on).
- From the Controller's ``agent/config``, missing or ``null`` keys leave the local
  value alone (upstream resets them to code defaults or fails the whole update).

Our additions: the tags ``local_api_address`` (default ``0.0.0.0``) and
``local_api_port`` (default ``54321``) say where the Local API listens. The Java
agent ignores unknown tags, and so do we: unknown elements are kept on rewrite.
"""
from __future__ import annotations

import logging
import math
import os
import re
import socket
import string
import tempfile
import threading
import xml.etree.ElementTree as ET

from iofogd.errors import BadRequest, ConfigFileError, ConfigValueError
from iofogd.record import Record

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Callable, Collection, Dict, Final, List, Mapping, Optional, Sequence, Tuple

logger = logging.getLogger(__name__)

# The declaration the JDK transformer writes (spec 4.1).
XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8" standalone="no"?>'

RESET_DONE = "Configuration has been reset to its defaults."
RESET_FAILED = "Error resetting configuration."
BLANK_VALUE = "Command or value is invalid"


# -- the machine, as validation sees it ---------------------------------------------


class Host(Record):
    """What validation and loading ask of the machine (injectable for tests)."""

    __slots__ = ("machine", "interfaces", "time_zone")
    machine: Final[str]  # platform.machine()
    interfaces: Final[Callable[[], Collection[str]]]  # network interface names
    time_zone: Final[Callable[[], str]]  # the system's zone id

    def __init__(
        self,
        machine: str,
        interfaces: Callable[[], Collection[str]],
        time_zone: Callable[[], str],
    ) -> None:
        self.machine = machine
        self.interfaces = interfaces
        self.time_zone = time_zone


def interface_names() -> frozenset[str]:
    """Names of this host's network interfaces (what ``-n`` accepts besides ``dynamic``)."""
    names: set[str] = set()
    try:
        names.update(name for _, name in socket.if_nameindex())
    except OSError:
        pass
    try:
        names.update(os.listdir("/sys/class/net"))
    except OSError:
        pass
    return frozenset(names)


def system_time_zone() -> str:
    """The zone id the JVM would pick (TZ, /etc/timezone, the /etc/localtime link), else UTC.

    Upstream writes the JVM default zone into an empty ``time_zone`` at start (spec 4.2).
    """
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz and not tz.startswith("/"):
        return tz
    try:
        with open("/etc/timezone", encoding="utf-8") as f:
            line = f.readline().strip()
        if line:
            return line
    except OSError:
        pass
    target = os.path.realpath("/etc/localtime")
    marker = "/zoneinfo/"
    if marker in target:
        return target.split(marker, 1)[1]
    return "UTC"


def real_host() -> Host:
    return Host(os.uname().machine, interface_names, system_time_zone)  # = platform.machine()


# Spec 4.4: the JVM's os.arch patterns, matched against platform.machine() here.
# Patterns are compiled by their first use (re caches them), not at import:
# six compiles are ~3 ms of a start that may need none of them.
_INTEL = r"x86_?64|amd64|ia32e|em64t|x64|x86_?32|x86|i[3-6]86|ia32|x32"
_ARM = r"arm|arm32|arm64|armv[0-9]+.*|aarch64"


def detect_fog_type(machine: str) -> str:
    """``intel_amd`` or ``arm`` for a ``platform.machine()`` value; ConfigValueError otherwise."""
    m = machine.strip().lower()
    if re.fullmatch(_INTEL, m):
        return "intel_amd"
    if re.fullmatch(_ARM, m):
        return "arm"
    raise ConfigValueError("ft", f"Couldn't autodetect fogType from machine '{machine}'")


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
    """``(lat, lon)`` for ``"<lat>,<lon>"`` in range, else None (spec 4.4, GPS details)."""
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
_UNWRITABLE = "[\x00-\x1f\x7f\ud800-\udfff\ufffe\uffff]"


# -- validators ------------------------------------------------------------------------
# A validator gets the value as typed (after "+" stripping), the current tag->text
# map and the host; it returns the tags to change, or raises ConfigValueError with
# upstream's message (spec 4.4).

if TYPE_CHECKING:
    Validator = Callable[["Option", str, Mapping[str, str], Host], Dict[str, str]]


def _invalid(opt: Option, value: str) -> ConfigValueError:
    return ConfigValueError(opt.key, f"Option -{opt.flag} has invalid value: {value}")


def _float_in(low: float, high: float, message: str) -> Validator:
    def check(opt: Option, value: str, values: Mapping[str, str], host: Host) -> Dict[str, str]:
        number = java_float(value)
        if number is None:
            raise _invalid(opt, value)
        if number < low or number > high:
            raise ConfigValueError(opt.key, message)
        return {opt.tag: value}
    return check


def _int_in(low: int, high: Optional[int], message: str, bits: int = 32) -> Validator:
    def check(opt: Option, value: str, values: Mapping[str, str], host: Host) -> Dict[str, str]:
        number = java_int(value, bits)
        if number is None:
            raise _invalid(opt, value)
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


def _log_level(opt: Option, value: str, values: Mapping[str, str], host: Host) -> Dict[str, str]:
    if java_level(value) is None:
        raise _invalid(opt, value)
    return {opt.tag: value.upper()}


def _on_off(opt: Option, value: str, values: Mapping[str, str], host: Host) -> Dict[str, str]:
    if value.lower() not in ("on", "off"):
        raise _invalid(opt, value)
    return {opt.tag: value}


def _gps(opt: Option, value: str, values: Mapping[str, str], host: Host) -> Dict[str, str]:
    stored = values["gps_coordinates"]
    if value == "auto":
        # Upstream asks ip-api.com here and keeps the stored coordinates when that
        # fails; we never call outside services (compatibility.md), so we keep them.
        mode, coordinates = "auto", stored
    elif value == "off":
        mode, coordinates = "off", ""
    elif value == "manual":
        mode, coordinates = "manual", stored
    else:
        mode, coordinates = "manual", value
    if not valid_coordinates(coordinates):
        raise _invalid(opt, value)
    changes = {"gps": mode}
    if coordinates.strip():          # "off" leaves the stored coordinates alone
        changes["gps_coordinates"] = coordinates.strip()
    return changes


def _fog_type(opt: Option, value: str, values: Mapping[str, str], host: Host) -> Dict[str, str]:
    if value not in ("auto", "intel_amd", "arm"):
        raise _invalid(opt, value)
    if value == "auto":
        try:
            detect_fog_type(host.machine)
        except ConfigValueError:
            raise _invalid(opt, value) from None
    return {opt.tag: value}


# -- paths and URLs (issue 12) ---------------------------------------------------------
# One block, moved whole when config.py becomes a package. Directory options are
# joined to --root (Paths.rooted), so a value is safe when it has no ".." segment:
# then it cannot leave the root, whatever the root is (symbolic links inside the
# root are the admin's own). URLs are checked when set, not only when used, and
# every value has a length bound: a 500 KB URL would be written to config.xml,
# sent to the Controller and logged. Values reach these checks stripped
# (ConfigStore._apply), as config.xml gives them back on reload.

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


def _directory(opt: Option, value: str, values: Mapping[str, str], host: Host) -> Dict[str, str]:
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
        # The trailing newline is upstream's (spec 4.4).
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
    long_name: Final[Optional[str]]  # /v2/config key (spec 1.6.10)
    controller_key: Final[Optional[str]]  # agent/config JSON key (spec 6.7)
    default: Final[str]  # code default, as XML text
    shipped: Final[str]  # value in the packaged config_new.xml
    check: Final[Optional[Validator]]
    load_ok: Final[Callable[[str], bool]]
    json_type: Final[str]  # JSON type towards the Controller: str, float, int, bool
    metavar: Final[str]
    help: Final[str]

    def __init__(
        self,
        tag: str,
        flag: Optional[str],
        long_name: Optional[str],
        controller_key: Optional[str],
        default: str,
        shipped: str,
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
        self.shipped = shipped
        self.check = check
        self.load_ok = load_ok
        self.json_type = json_type
        self.metavar = metavar
        self.help = help

    @property
    def key(self) -> str:
        """The flag, or the tag for options without one (how reports name an option)."""
        return self.flag or self.tag


def _o(tag: str, flag: Optional[str], long_name: Optional[str], controller_key: Optional[str],
       default: str, shipped: Optional[str] = None, *, check: Optional[Validator] = None,
       load_ok: Callable[[str], bool] = _always, json_type: str = "str", metavar: str = "",
       help: str = "") -> Option:
    return Option(tag, flag, long_name, controller_key, default,
                  default if shipped is None else shipped, check, load_ok, json_type, metavar, help)


_GREATER = "{} must be greater than 1"

# In the order of the packaged config_new.xml, so a fresh file looks like upstream's.
OPTIONS: Tuple[Option, ...] = (
    _o("access_token", None, None, None, ""),
    _o("router_host", None, None, "routerHost", ""),
    _o("router_port", None, None, "routerPort", "0", "",
       load_ok=lambda t: t == "" or _is_int(t), json_type="int"),
    # Upstream's code default is a retired public Controller on the v2 API (spec
    # 4.3): `config defaults` would point a gateway at the internet. Ours is the
    # shipped value, a local Controller on v3.
    _o("controller_url", "a", "controller-url", None,
       "http://localhost:54421/api/v3/", "http://localhost:54421/api/v3/",
       check=_controller_url, load_ok=is_http_url, metavar="<uri>",
       help="Set the uri of the fog controller to which this software connects"),
    _o("iofog_uuid", None, None, None, ""),
    _o("secure_mode", "sec", None, None, "off", check=_any, metavar="<on/off>",
       help="Refuse plain http connections to the controller"),
    _o("dev_mode", "dev", "developer-mode", None, "off", check=_any, metavar="<on/off>",
       help="Set the developer's mode"),
    _o("controller_cert", "ac", "cert-directory", None, "/etc/iofog-agent/cert.crt",
       check=_any, metavar="<filepath>",
       help="Set the file path of the SSL/TLS certificate for validating the fog controller identity"),
    _o("fog_type", "ft", "fog-type", None, "auto", check=_fog_type,
       load_ok=lambda t: t in ("auto", "intel_amd", "arm"), metavar="<auto/intel_amd/arm>",
       help="Set fog type. Use auto to detect it, arm or intel_amd to set it manually"),
    _o("network_interface", "n", "network-adapter", "networkInterface", "dynamic",
       check=_interface, metavar="<network adapter>",
       help="Set the name of the network adapter that holds the correct IP address of this machine"),
    _o("docker_url", "c", "docker-url", "dockerUrl", "unix:///var/run/docker.sock",
       check=_docker_url, metavar="<uri>",
       help="Set the UNIX socket or network address that the Docker daemon is using"),
    _o("disk_consumption_limit", "d", "disk-limit", "diskLimit", "10",
       check=_float_in(1, 1048576, "Disk limit range must be 1 to 1048576 GB"),
       load_ok=_is_float, json_type="float", metavar="<#GB Limit>",
       help="Set the limit, in GiB, of disk space that the message archive is allowed to use"),
    _o("disk_directory", "dl", "disk-directory", "diskDirectory", "/var/lib/iofog-agent/",
       check=_directory, load_ok=directory_inside_root, metavar="<dir>",
       help="Set the directory to use for disk storage"),
    _o("memory_consumption_limit", "m", "memory-limit", "memoryLimit", "4096",
       check=_float_in(128, 1048576, "Memory limit range must be 128 to 1048576 MB"),
       load_ok=_is_float, json_type="float", metavar="<#MB Limit>",
       help="Set the limit, in MiB, of RAM memory that the software is allowed to use"),
    _o("processor_consumption_limit", "p", "cpu-limit", "cpuLimit", "80", "80.0",
       check=_float_in(5, 100, "CPU limit range must be 5% to 100%"),
       load_ok=_is_float, json_type="float", metavar="<#cpu % Limit>",
       help="Set the limit, in percentage, of CPU time that the software is allowed to use"),
    _o("log_disk_consumption_limit", "l", "logs-limit", "logLimit", "10", "10.0",
       check=_float_in(0.5, 100, "Log disk limit range must be 0.5 to 100 GB"),
       load_ok=_is_float, json_type="float", metavar="<#GB Limit>",
       help="Set the limit, in GiB, of disk space that the log files can consume"),
    _o("log_disk_directory", "ld", "logs-directory", "logDirectory", "/var/log/iofog-agent/",
       check=_directory, load_ok=directory_inside_root, metavar="<dir>",
       help="Set the directory to use for log file storage"),
    _o("log_file_count", "lc", "logs-count", "logFileCount", "10",
       check=_int_in(1, 100, "Log file count range must be 1 to 100"),
       load_ok=_is_int, json_type="int", metavar="<#log files>",
       help="Set the number of log files to evenly split the log storage limit"),
    _o("log_level", "ll", "logs-level", "logLevel", "INFO", check=_log_level,
       load_ok=lambda t: java_level(t) is not None, metavar="<log level>",
       help="Set the logging level (SEVERE, WARNING, INFO, CONFIG, FINE, FINER, FINEST, ALL, OFF)"),
    _o("status_update_freq", "sf", "status-frequency", "statusFrequency", "10", "30",
       check=_int_in(1, None, _GREATER.format("Status update frequency")),
       load_ok=_is_int, json_type="int", metavar="<#seconds>", help="Set the status update frequency"),
    _o("get_changes_freq", "cf", "changes-frequency", "changeFrequency", "20", "60",
       check=_int_in(1, None, _GREATER.format("Get changes frequency")),
       load_ok=_is_int, json_type="int", metavar="<#seconds>", help="Set the get changes frequency"),
    _o("post_diagnostics_freq", "df", "diagnostics-frequency", "postdiagnosticsfreq", "10",
       check=_int_in(1, None, _GREATER.format("Post diagnostics frequency")),
       load_ok=_is_int, json_type="int", metavar="<#seconds>", help="Set the post diagnostics frequency"),
    _o("scan_devices_freq", "sd", "device-scan-frequency", "deviceScanFrequency", "60",
       check=_int_in(1, None, _GREATER.format("Get scan devices frequency")),
       load_ok=_is_int, json_type="int", metavar="<#seconds>", help="Set the scan devices frequency"),
    _o("gps", "gps", "gps", "gpsMode", "auto", check=_gps,
       load_ok=lambda t: t in ("auto", "off", "manual", "dynamic"),
       metavar="<auto/off/#GPS DD.DDD(lat),DD.DDD(lon)>",
       help="Set gps location of fog: auto keeps the stored coordinates, off forbids gps, "
            "coordinates in DD format set them manually"),
    _o("gps_coordinates", None, None, None, "", "0,0", load_ok=valid_coordinates),
    _o("isolated_docker_container", "idc", "isolated", "watchdogEnabled", "off", check=_on_off,
       json_type="bool", metavar="<on/off>",
       help="Set the mode on which any not registered docker container will be shut down"),
    _o("docker_pruning_freq", "pf", None, "dockerPruningFrequency", "1",
       check=_int_in(1, None, _GREATER.format("Docker pruning frequency"), bits=64),
       load_ok=_is_long, json_type="int", metavar="<#hours>", help="Set the docker pruning frequency"),
    _o("available_disk_threshold", "dt", None, "availableDiskThreshold", "20",
       check=_int_in(1, None, _GREATER.format("Available disk threshold"), bits=64),
       load_ok=_is_long, json_type="int", metavar="<#percent>",
       help="Set the available disk threshold"),
    _o("upgrade_scan_frequency", "uf", None, "readyToUpgradeScanFrequency", "24",
       check=_int_in(1, None, _GREATER.format("isReadyToUpgrade scan frequency")),
       load_ok=_is_int, json_type="int", metavar="<#hours>",
       help="Set the ready to upgrade scan frequency"),
    _o("time_zone", "tz", "time-zone", "timeZone", "", check=_any, metavar="<time zone>",
       help="Set the time zone given to microservices"),
    # Our additions: where the Local API listens.
    _o("local_api_address", None, None, None, "0.0.0.0", load_ok=bool),
    _o("local_api_port", None, None, None, "54321", load_ok=_is_port),
    # Ours (issue 12): callers that are not a container of this agent may not use
    # the microservice endpoints (see iofogd/system/identity.py).
    _o("strict_microservice_identity", "smi", "strict-microservice-identity", None, "off",
       check=_on_off, load_ok=lambda t: t.lower() in ("on", "off"), metavar="<on/off>",
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


def code_defaults() -> Dict[str, str]:
    return {o.tag: o.default for o in OPTIONS}


# The packaged development and production files differ from config_new.xml (spec 4.2).
_SHIPPED_VARIANTS: Dict[str, Dict[str, str]] = {
    "default": {},
    "development": {"controller_url": "http://localhost:51121/api/v3/", "dev_mode": "on"},
    "production": {"secure_mode": "on"},
}


def shipped_values(state: str = "default") -> Dict[str, str]:
    values = {o.tag: o.shipped for o in OPTIONS}
    values.update(_SHIPPED_VARIANTS[state])
    return values


# -- paths -----------------------------------------------------------------------------


class Paths(Record):
    """Every file of the agent, under a root (default ``/``), as upstream's $SNAP_COMMON (spec 0.5)."""

    __slots__ = ("root",)
    root: Final[str]

    def __init__(self, root: str) -> None:
        self.root = root

    @classmethod
    def from_root(cls, root: str = "/") -> Paths:
        return cls(os.path.abspath(root or "/"))

    def rooted(self, path: str) -> str:
        """Prefix a path from the config with the root (upstream: ``SNAP_COMMON + path``)."""
        if not path or self.root == "/":
            return path
        return self.root + (path if path.startswith("/") else "/" + path)

    def _etc(self, name: str) -> str:
        return self.rooted("/etc/iofog-agent/" + name)

    @property
    def etc_dir(self) -> str:
        return self.rooted("/etc/iofog-agent")

    @property
    def config_xml(self) -> str:
        return self._etc("config.xml")

    @property
    def config_development(self) -> str:
        return self._etc("config-development.xml")

    @property
    def config_production(self) -> str:
        return self._etc("config-production.xml")

    @property
    def config_backup(self) -> str:
        return self._etc("config-bck.xml")

    @property
    def config_switcher(self) -> str:
        return self._etc("config-switcher.xml")

    @property
    def token_file(self) -> str:
        return self._etc("local-api")

    @property
    def microservices_cache(self) -> str:
        return self._etc("microservices.json")

    @property
    def registries_cache(self) -> str:
        return self._etc("registries.json")

    @property
    def edge_resources_cache(self) -> str:
        return self._etc("edge_resources.json")

    @property
    def state_dir(self) -> str:
        return self.rooted("/var/lib/iofog-agent")

    @property
    def log_dir(self) -> str:
        return self.rooted("/var/log/iofog-agent")

    @property
    def run_dir(self) -> str:
        return self.rooted("/var/run/iofog-agent")

    def config_for(self, state: str) -> str:
        """The config file of a switcher state (spec 4.6)."""
        return {"development": self.config_development,
                "production": self.config_production}.get(state, self.config_xml)


# -- the snapshot ------------------------------------------------------------------------


def _slashes(directory: str) -> str:
    """Upstream's setDiskDirectory/setLogDiskDirectory: leading and trailing separator."""
    if not directory.startswith("/"):
        directory = "/" + directory
    return directory if directory.endswith("/") else directory + "/"


def _is_on(text: str) -> bool:
    return text.strip().lower() != "off"


class Config:
    """An immutable snapshot of every value: raw XML text and typed attributes."""

    iofog_uuid: str
    access_token: str
    controller_url: str          # with a trailing "/" (in memory only, spec 4.2)
    controller_cert: str         # rooted
    docker_url: str
    network_interface: str
    disk_limit_gb: float
    disk_directory: str          # rooted, leading and trailing "/"
    memory_limit_mb: float
    cpu_limit: float
    log_limit_gb: float
    log_directory: str           # rooted, leading and trailing "/"
    log_file_count: int
    log_level: str               # java.util.logging name (or number), upper case
    log_level_python: int        # the same for the logging module
    status_update_freq: int
    get_changes_freq: int
    scan_devices_freq: int
    post_diagnostics_freq: int
    isolated_docker_container: bool
    gps_mode: str
    gps_coordinates: str
    fog_type_setting: str        # auto / intel_amd / arm, as stored
    fog_type: str                # intel_amd / arm, auto resolved
    secure_mode: bool
    dev_mode: bool
    router_host: str
    router_port: int
    docker_pruning_freq: int
    available_disk_threshold: int
    upgrade_scan_frequency: int
    time_zone: str
    api_address: str
    api_port: int

    def __init__(self, values: Mapping[str, str], *, paths: Paths, machine: str = "",
                 order: Sequence[str] = (), extras: Mapping[str, str] | None = None) -> None:
        v = dict(code_defaults())
        v.update(values)
        self._values = v
        self._order = tuple(order)
        self._extras = dict(extras or {})
        self.paths = paths
        self.machine = machine

        url = v["controller_url"]
        self.iofog_uuid = v["iofog_uuid"]
        self.access_token = v["access_token"]
        self.controller_url = url if not url or url.endswith("/") else url + "/"
        self.controller_cert = paths.rooted(v["controller_cert"])
        self.docker_url = v["docker_url"]
        self.network_interface = v["network_interface"]
        self.disk_limit_gb = self._float("disk_consumption_limit")
        self.disk_directory = paths.rooted(_slashes(v["disk_directory"]))
        self.memory_limit_mb = self._float("memory_consumption_limit")
        self.cpu_limit = self._float("processor_consumption_limit")
        self.log_limit_gb = self._float("log_disk_consumption_limit")
        self.log_directory = paths.rooted(_slashes(v["log_disk_directory"]))
        self.log_file_count = self._int("log_file_count")
        self.log_level = v["log_level"].upper()
        level = java_level(self.log_level)
        self.log_level_python = python_log_level(JAVA_LEVELS["INFO"] if level is None else level)
        self.status_update_freq = self._int("status_update_freq")
        self.get_changes_freq = self._int("get_changes_freq")
        self.scan_devices_freq = self._int("scan_devices_freq")
        self.post_diagnostics_freq = self._int("post_diagnostics_freq")
        self.isolated_docker_container = _is_on(v["isolated_docker_container"])
        self.gps_mode = v["gps"]
        self.gps_coordinates = v["gps_coordinates"]
        self.fog_type_setting = v["fog_type"]
        self.fog_type = self._resolve_fog_type()
        self.secure_mode = _is_on(v["secure_mode"])
        self.dev_mode = _is_on(v["dev_mode"])
        self.router_host = v["router_host"]
        self.router_port = self._int("router_port") if v["router_port"] else 0
        self.docker_pruning_freq = self._int("docker_pruning_freq", 64)
        self.available_disk_threshold = self._int("available_disk_threshold", 64)
        self.upgrade_scan_frequency = self._int("upgrade_scan_frequency")
        self.time_zone = v["time_zone"]
        self.api_address = v["local_api_address"]
        self.api_port = self._int("local_api_port")
        self._frozen = True

    def __setattr__(self, name: str, value: object) -> None:
        if getattr(self, "_frozen", False):
            raise AttributeError("Config is an immutable snapshot; change it through ConfigStore")
        super().__setattr__(name, value)

    def _float(self, tag: str) -> float:
        value = java_float(self._values[tag])
        return value if value is not None else float(java_float(_BY_TAG[tag].default) or 0.0)

    def _int(self, tag: str, bits: int = 32) -> int:
        value = java_int(self._values[tag], bits)
        return value if value is not None else int(java_int(_BY_TAG[tag].default, bits) or 0)

    def _resolve_fog_type(self) -> str:
        setting = self._values["fog_type"]
        if setting in ("intel_amd", "arm"):
            return setting
        try:
            return detect_fog_type(self.machine)
        except ConfigValueError:
            # Upstream stops here; we run as intel_amd and say so at load time.
            return "intel_amd"

    def get(self, tag: str) -> str:
        """The raw XML text of a tag (known or kept unknown); KeyError if neither."""
        if tag in self._values:
            return self._values[tag]
        return self._extras[tag]

    @property
    def values(self) -> Dict[str, str]:
        """Every known tag's XML text (a copy)."""
        return dict(self._values)

    @property
    def gps_lat_lon(self) -> Optional[Tuple[float, float]]:
        return parse_coordinates(self.gps_coordinates)

    def to_xml(self) -> bytes:
        return render_config_xml(self._values, self._order, self._extras)

    def with_values(self, changes: Mapping[str, str]) -> Config:
        values = dict(self._values)
        values.update(changes)
        return Config(values, paths=self.paths, machine=self.machine, order=self._order,
                      extras=self._extras)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and (self._values, self._extras) == (other._values, other._extras)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._values.items())))

    def __repr__(self) -> str:
        return f"Config(uuid={self.iofog_uuid!r}, controller_url={self.controller_url!r})"


# -- XML (pure) ---------------------------------------------------------------------------


class ParsedConfig(Record):
    __slots__ = ("values", "order", "extras", "warnings")
    values: Final[Dict[str, str]]  # every known tag (defaults where missing or bad)
    order: Final[Tuple[str, ...]]  # tags in file order, unknown ones included
    extras: Final[Dict[str, str]]  # unknown tags, kept on rewrite
    warnings: Final[Tuple[str, ...]]

    def __init__(
        self,
        values: Dict[str, str],
        order: Tuple[str, ...],
        extras: Dict[str, str],
        warnings: Tuple[str, ...],
    ) -> None:
        self.values = values
        self.order = order
        self.extras = extras
        self.warnings = warnings


def parse_config_xml(data: bytes) -> ParsedConfig:
    """Parse a config.xml; ValueError when it is not a ``<config>`` document.

    A missing or duplicated element, or a value its option cannot read, gives the
    code default and a warning (spec 4.1).
    """
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise ValueError(f"not well-formed XML ({exc})") from None
    if root.tag != "config":
        raise ValueError(f"root element is <{root.tag}>, not <config>")
    found: Dict[str, List[str]] = {}
    order: List[str] = []
    for child in root:
        if not isinstance(child.tag, str):
            continue
        if child.tag not in found:
            order.append(child.tag)
        found.setdefault(child.tag, []).append("".join(child.itertext()).strip())
    values: Dict[str, str] = {}
    warnings: List[str] = []
    for opt in OPTIONS:
        texts = found.get(opt.tag, [])
        if not texts and opt.tag in OUR_TAGS:
            values[opt.tag] = opt.default       # a Java agent's file never has them
        elif len(texts) != 1:
            # Upstream's words (spec 4.1), so existing log greps keep working.
            warnings.append(f"[Configuration] <{opt.tag}>  item not found or defined more than once. "
                            f"Default value - {opt.default} will be used")
            values[opt.tag] = opt.default
        elif not opt.load_ok(texts[0]):
            warnings.append(f"[Configuration] <{opt.tag}> has an invalid value {texts[0]!r}. "
                            f"Default value - {opt.default} will be used")
            values[opt.tag] = opt.default
        else:
            values[opt.tag] = texts[0]
    extras = {tag: texts[0] for tag, texts in found.items() if tag not in _BY_TAG}
    return ParsedConfig(values, tuple(order), extras, tuple(warnings))


def _escape(text: str) -> str:
    """XML character data escaping (what xml.sax.saxutils.escape does, without
    importing urllib.request and its dependencies into a small daemon)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_config_xml(values: Mapping[str, str], order: Sequence[str] = (),
                      extras: Mapping[str, str] | None = None) -> bytes:
    """The file: the JDK's declaration, tags in their previous order, new ones appended."""
    extras = extras or {}
    tags = [t for t in order if t in values or t in extras]
    tags += [o.tag for o in OPTIONS if o.tag not in tags]
    lines = [XML_DECLARATION, "<config>"]
    for tag in tags:
        text = values[tag] if tag in values else extras[tag]
        lines.append(f"    <{tag}>{_escape(text)}</{tag}>" if text else f"    <{tag}/>")
    lines.append("</config>")
    return ("\n".join(lines) + "\n").encode("utf-8")


SWITCHER_STATES = ("default", "development", "production")
_SWITCH_NAMES = {"def": "default", "default": "default", "dev": "development",
                 "development": "development", "prod": "production", "production": "production"}


def parse_switcher_xml(data: bytes) -> str:
    """The state in config-switcher.xml; ValueError when unreadable or unknown."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise ValueError(f"not well-formed XML ({exc})") from None
    node = root.find("current_config")
    state = "".join(node.itertext()).strip() if node is not None else ""
    if root.tag != "switcher" or state not in SWITCHER_STATES:
        raise ValueError(f"invalid switcher state {state!r}")
    return state


def render_switcher_xml(state: str) -> bytes:
    return (f"{XML_DECLARATION}\n<switcher>\n    <current_config>{state}</current_config>\n"
            "</switcher>\n").encode("utf-8")


# -- change reports ------------------------------------------------------------------------


class ChangeReport(Record):
    __slots__ = ("errors", "accepted")
    errors: Final[List[Tuple[str, str]]]  # (flag, exact message) per rejected key
    accepted: Final[List[Tuple[str, str, str]]]  # (flag, old XML text, new value as typed)

    def __init__(self, errors: List[Tuple[str, str]], accepted: List[Tuple[str, str, str]]) -> None:
        self.errors = errors
        self.accepted = accepted

    def cli_text(self) -> str:
        """Spec 4.3: literal backslash-n, real tab."""
        out = [f"\\n\tError : {message}" for _, message in self.errors]
        out += [f"\\n\tChange accepted for Parameter : - {flag}, Old value was :{old}, New Value is : {new}"
                for flag, old, new in self.accepted]
        return "".join(out)


# -- files (I/O) ----------------------------------------------------------------------------


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_prefix(path: str) -> str:
    return "." + os.path.basename(path) + "."


def _holds(path: str, data: bytes) -> bool:
    """Whether the file at ``path`` has exactly ``data`` (then there is nothing to write)."""
    try:
        return _read(path) == data
    except OSError:
        return False


def atomic_write(path: str, data: bytes, mode: int = 0o640) -> None:
    """Write a file so that a crash leaves either the old or the new content.

    Temporary file in the same directory, fsync, rename over, fsync the directory.
    An existing file keeps its permission bits; a new one gets ``mode``
    (config.xml holds the Controller's node token, so not world-readable).
    """
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        pass
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)


def read_config(paths: Paths, host: Optional[Host] = None) -> Config:
    """Read the active config without writing anything (for the CLI and other readers).

    Falls back to the backup, then to shipped defaults, silently; only the daemon's
    :class:`ConfigStore` repairs files.
    """
    host = host or real_host()
    state = "default"
    try:
        state = parse_switcher_xml(_read(paths.config_switcher))
    except (OSError, ValueError):
        pass
    for path in (paths.config_for(state), paths.config_backup):
        try:
            parsed = parse_config_xml(_read(path))
        except (OSError, ValueError):
            continue
        return Config(parsed.values, paths=paths, machine=host.machine, order=parsed.order,
                      extras=parsed.extras)
    return Config(shipped_values(state), paths=paths, machine=host.machine)


def check_config(paths: Paths) -> list[str]:
    """What the daemon would make of its config, without writing anything
    (``iofogd --check-config``, run by service managers before a start, often
    as root: a repairing load would leave root-owned files the service user
    cannot read). Returns remarks; raises ConfigFileError when the daemon would
    refuse to start."""
    remarks: list[str] = []
    state = "default"
    try:
        state = parse_switcher_xml(_read(paths.config_switcher))
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        remarks.append(f"{paths.config_switcher}: {exc}; the default configuration would be used")
    path, backup = paths.config_for(state), paths.config_backup
    if not os.path.exists(path):
        return remarks + [f"{path} missing; the shipped defaults would be written"]
    try:
        parsed = parse_config_xml(_read(path))
    except (OSError, ValueError) as exc:
        try:
            parsed = parse_config_xml(_read(backup))
        except (OSError, ValueError) as exc2:
            raise ConfigFileError(
                path, f"unreadable ({exc}), and so is the backup {backup} ({exc2})") from None
        remarks.append(f"{path} is unreadable ({exc}); the backup {backup} would be used")
    return remarks + [f"{path}: {w}" for w in parsed.warnings]


if TYPE_CHECKING:
    Listener = Callable[[Config, Config], None]


class ConfigStore:
    """The owner of config.xml, its backup and the switcher file; thread-safe.

    One re-entrant lock serialises loads and changes; listeners run under it, in
    order, after each successful change, with ``(old, new)``.
    """

    def __init__(self, paths: Paths, *, log: Optional[logging.Logger] = None,
                 host: Optional[Host] = None) -> None:
        self.paths = paths
        self._log = log or logger
        self._host = host or real_host()
        self._lock = threading.RLock()
        self._current: Optional[Config] = None
        self._state = "default"
        self._listeners: List[Listener] = []

    # -- loading --------------------------------------------------------------------

    @property
    def current(self) -> Config:
        """The current snapshot (loads the files on first use)."""
        with self._lock:
            return self._current if self._current is not None else self.load()

    @property
    def switcher_state(self) -> str:
        return self._state

    def load(self) -> Config:
        """(Re)read the active file per the switcher (start-up, SIGHUP); ConfigFileError if hopeless."""
        with self._lock:
            state = self._read_switcher()
            config = self._load_file(state)
            old, self._current, self._state = self._current, config, state
            if old is not None and old != config:
                self._notify(old, config)
            return config

    def _read_switcher(self) -> str:
        path = self.paths.config_switcher
        try:
            return parse_switcher_xml(_read(path))
        except FileNotFoundError:
            self._log.info("%s missing; using the default configuration", path)
        except (OSError, ValueError) as exc:
            self._log.warning("%s: %s; using the default configuration", path, exc)
        try:
            atomic_write(path, render_switcher_xml("default"))
        except OSError as exc:
            self._log.error("cannot write %s: %s", path, exc)
        return "default"

    def _load_file(self, state: str) -> Config:
        path, backup = self.paths.config_for(state), self.paths.config_backup
        self._sweep_temporaries()
        if not os.path.exists(path):
            self._log.warning("%s missing; writing the shipped defaults", path)
            parsed = ParsedConfig(shipped_values(state), (), {}, ())
        else:
            try:
                parsed = parse_config_xml(_read(path))
            except (OSError, ValueError) as exc:
                self._log.warning("%s is unreadable (%s); using the backup %s", path, exc, backup)
                try:
                    parsed = parse_config_xml(_read(backup))
                except (OSError, ValueError) as exc2:
                    raise ConfigFileError(
                        path, f"unreadable ({exc}), and so is the backup {backup} ({exc2})") from None
        for warning in parsed.warnings:
            self._log.warning("%s: %s", path, warning)
        values = dict(parsed.values)
        if not values["time_zone"]:
            # Upstream writes the JVM's default zone back into the file (spec 4.2).
            values["time_zone"] = self._host.time_zone()
        config = Config(values, paths=self.paths, machine=self._host.machine,
                        order=parsed.order, extras=parsed.extras)
        if config.fog_type_setting == "auto":
            try:
                detect_fog_type(self._host.machine)
            except ConfigValueError:
                self._log.warning("cannot tell the fog type of machine %r; running as intel_amd "
                                  "(set it with: iofog-agent config -ft arm|intel_amd)", self._host.machine)
        # Upstream rewrites the active file and the backup on every successful
        # load; we write only what differs (no SD card wear at every boot).
        try:
            self._write(path, config)
        except OSError as exc:
            self._log.error("cannot rewrite %s: %s", path, exc)
        return config

    def _sweep_temporaries(self) -> None:
        """Remove temporary files a killed writer left behind (we are their only writer)."""
        directory = self.paths.etc_dir
        prefixes = tuple(_temp_prefix(self.paths.config_for(s)) for s in SWITCHER_STATES) + (
            _temp_prefix(self.paths.config_backup), _temp_prefix(self.paths.config_switcher))
        try:
            names = os.listdir(directory)
        except OSError:
            return
        for name in names:
            if name.startswith(prefixes) and name.endswith(".tmp"):
                try:
                    os.unlink(os.path.join(directory, name))
                except OSError:
                    pass

    def _write(self, path: str, config: Config) -> None:
        data = config.to_xml()
        if not _holds(path, data):
            atomic_write(path, data)
        try:
            if not _holds(self.paths.config_backup, data):
                atomic_write(self.paths.config_backup, data)
        except OSError as exc:
            # The active file is written and is what the next start reads, so
            # the change stands (refusing it now would leave the file and the
            # running daemon disagreeing). The stale backup is only a worse
            # fallback; the next write with room on the disk refreshes it.
            self._log.error("cannot write the backup %s: %s", self.paths.config_backup,
                            exc.strerror or exc)

    def _commit(self, new: Config) -> Config:
        """Write ``new`` (active, then backup), make it current, tell the listeners."""
        old = self.current
        try:
            self._write(self.paths.config_for(self._state), new)
        except OSError as exc:
            raise ConfigFileError(self.paths.config_for(self._state), f"cannot write: {exc}") from exc
        self._current = new
        if old != new:
            self._notify(old, new)
        return new

    def add_listener(self, fn: Listener) -> None:
        with self._lock:
            self._listeners.append(fn)

    def _notify(self, old: Config, new: Config) -> None:
        for fn in list(self._listeners):
            try:
                fn(old, new)
            except Exception:
                self._log.exception("config listener %r failed", fn)

    # -- changes --------------------------------------------------------------------

    def apply(self, changes: Mapping[str, str]) -> ChangeReport:
        """Apply CLI flags (``{"d": "20", "lc": "5"}``) with upstream's validation (spec 4.3, 4.4).

        Accepted values are saved in one write; an unknown flag raises
        ConfigValueError before anything changes; a failed write raises ConfigFileError.
        """
        return self._apply(changes, {})

    def _apply(self, changes: Mapping[str, str], direct: Mapping[str, str]) -> ChangeReport:
        options: List[Tuple[Option, str]] = []
        for flag, raw in changes.items():
            opt = option_by_flag(flag)
            if opt is None or opt.check is None:
                raise ConfigValueError(flag, f"Invalid parameter -{flag}")
            options.append((opt, raw))
        with self._lock:
            old = self.current
            values = old.values
            errors: List[Tuple[str, str]] = []
            accepted: List[Tuple[str, str, str]] = []
            for opt, raw in options:
                # Stripped: config.xml gives values back stripped, so what is stored is what is used.
                value = raw.strip()
                value = value[1:].strip() if value.startswith("+") else value
                if not value.strip() and opt.flag != "ac":
                    errors.append((opt.key, BLANK_VALUE))
                    continue
                if re.search(_UNWRITABLE, value):
                    errors.append((opt.key, _invalid(opt, value).message))
                    continue
                assert opt.check is not None
                try:
                    updates = opt.check(opt, value, values, self._host)
                except ConfigValueError as exc:
                    errors.append((opt.key, exc.message))
                    continue
                accepted.append((opt.key, old.get(opt.tag), value))
                values.update(updates)
            for tag, value in direct.items():
                value = value.strip()
                if not re.search(_UNWRITABLE, value) and values.get(tag) != value:
                    accepted.append((tag, old.get(tag), value))
                    values[tag] = value
            if accepted:
                self._commit(old.with_values(values))
            for key, message in errors:
                self._log.info("config change refused: -%s: %s", key, message.strip())
            return ChangeReport(errors, accepted)

    def apply_long_names(self, body: Mapping[str, object]) -> Dict[str, str]:
        """POST /v2/config (spec 1.6.10): ``{long name: message}`` for refused keys, ``{}`` if none."""
        present = [(opt, body[opt.long_name]) for opt in OPTIONS
                   if opt.long_name is not None and opt.long_name in body]
        if not present:
            raise BadRequest("Request not valid")
        for opt, value in present:
            if not isinstance(value, str):
                raise BadRequest(f"Value of '{opt.long_name}' must be a string")
        report = self.apply({opt.key: str(value) for opt, value in present})
        names = {opt.key: str(opt.long_name) for opt, _ in present}
        # Upstream strips one-letter flags from the messages: "Option -d has ..." -> "Option has ...".
        return {names[key]: re.sub(r" -[a-z] ", " ", message) for key, message in report.errors}

    def apply_controller(self, cfg: Mapping[str, object]) -> ChangeReport:
        """Apply the Controller's ``GET agent/config`` (spec 6.7) through the same validation.

        Only values that differ from ours are applied. The network interface only
        when ours is not ``dynamic``; pruning, threshold and upgrade frequency only
        when >= 1; coordinates that differ set manual GPS.
        """
        with self._lock:
            current = self.current
            changes: Dict[str, str] = {}
            direct: Dict[str, str] = {}
            errors: List[Tuple[str, str]] = []
            for opt in OPTIONS:
                key = opt.controller_key
                if key is None or key == "gpsMode" or cfg.get(key) is None:
                    continue
                raw = cfg[key]
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
            lat, lon = cfg.get("latitude"), cfg.get("longitude")
            if _is_number(lat) and _is_number(lon):
                assert isinstance(lat, (int, float)) and isinstance(lon, (int, float))
                if current.gps_lat_lon != (float(lat), float(lon)):
                    changes["gps"] = f"{float(lat)!r},{float(lon)!r}"
            mode = cfg.get("gpsMode")
            if "gps" not in changes and isinstance(mode, str) and mode != current.gps_mode:
                changes["gps"] = mode
            report = self._apply(changes, direct)
            return ChangeReport(errors + report.errors, report.accepted)

    def controller_view(self, network_interface: Optional[str] = None) -> Dict[str, object]:
        """The ``PATCH agent/config`` body (spec 6.7) with the Java agent's JSON types.

        ``network_interface`` is the interface actually in use; without it, the
        configured name, or ``UNKNOWN`` when that is ``dynamic``.
        """
        c = self.current
        if network_interface is None:
            network_interface = "UNKNOWN" if c.network_interface == "dynamic" else c.network_interface
        lat, lon = c.gps_lat_lon or (0.0, 0.0)
        view: Dict[str, object] = {"networkInterface": network_interface}
        for key in _PATCH_KEYS:
            opt = _BY_CONTROLLER[key]
            view[key] = _to_json(opt, c.get(opt.tag))
        view.update(latitude=lat, longitude=lon, logLevel=c.log_level)
        return view

    def reset_defaults(self) -> str:
        """``config defaults`` (spec 4.3): every CLI option back to its code default.

        As upstream: the network interface is not validated, identity and
        coordinates stay, and an empty default (``-tz``) is not applied. A
        failed write raises ConfigFileError and changes nothing (the CLI then
        prints ``RESET_FAILED`` and exits 1).
        """
        with self._lock:
            values = {o.tag: o.default for o in OPTIONS if o.flag and o.default}
            self._commit(self.current.with_values(values))
            return RESET_DONE

    def set_identity(self, uuid: str, token: str) -> None:
        """Store the node uuid and Controller token after provisioning; ``("", "")`` clears them."""
        for name, value in (("iofog_uuid", uuid), ("access_token", token)):
            if re.search(_UNWRITABLE, value):
                raise ConfigValueError(name, f"Invalid value for {name}")
        with self._lock:
            self._commit(self.current.with_values({"iofog_uuid": uuid, "access_token": token}))

    def set_gps(self, lat: str, lon: str, *, keep_modes: Collection[str] = ()) -> bool:
        """POST /v2/gps (spec 1.6.6): mode ``dynamic``, coordinates validated like ``-gps``.

        Returns whether anything changed. The same position (as numbers) in mode
        ``dynamic`` writes nothing and tells no listener (so nothing is PATCHed to
        the Controller); a current mode in ``keep_modes`` (the admin's ``off`` or
        ``manual``, issue 12) is kept, checked under the lock that serialises changes.
        """
        coordinates = f"{lat.strip()},{lon.strip()}"
        position = parse_coordinates(coordinates)
        if position is None:
            raise ConfigValueError("gps", f"Option -gps has invalid value: {coordinates}")
        with self._lock:
            current = self.current
            if current.gps_mode in keep_modes:
                return False
            if current.gps_mode == "dynamic" and current.gps_lat_lon == position:
                return False
            self._commit(current.with_values({"gps": "dynamic", "gps_coordinates": coordinates}))
            return True

    def switch(self, name: str) -> str:
        """``switch <dev|prod|def>`` (spec 4.6)."""
        target = _SWITCH_NAMES.get(name.strip().lower())
        if target is None:
            return "Invalid switcher state"
        with self._lock:
            if target == self._state:
                return "Already using this configuration."
            previous, old = self._state, self.current
            try:
                atomic_write(self.paths.config_switcher, render_switcher_xml(target))
                config = self._load_file(target)
            except (ConfigFileError, OSError) as exc:
                self._log.warning("switch to %s failed: %s", target, exc)
                try:
                    atomic_write(self.paths.config_switcher, render_switcher_xml(previous))
                except OSError as exc2:
                    self._log.error("cannot restore %s: %s", self.paths.config_switcher, exc2)
                return "Error while loading new config file, falling back to current configuration"
            self._state, self._current = target, config
            if old != config:
                self._notify(old, config)
            return "Successfully switched to new configuration."


# The PATCH agent/config keys besides networkInterface and the coordinates, in
# upstream's order (spec 6.7).
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
        return _is_on(text)
    if opt.check is _directory:
        return _slashes(text)
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
        return _is_on(text) != _is_on(current)
    if opt.check is _directory:
        return _slashes(text) != _slashes(current)
    if opt.check is _log_level:
        return text.upper() != current.upper()
    return text != current


# -- the admin token ----------------------------------------------------------------------

_TOKEN_ALPHABET = string.ascii_letters + string.digits
TOKEN_LENGTH = 32


def ensure_token(path: str) -> str:
    """Create the Local API admin token if missing (32 × [A-Za-z0-9], mode 0640, no newline).

    Never regenerated when present (upstream regenerates it on every package
    upgrade, breaking clients that cached it: spec 0.5, 12). Created atomically:
    written aside, then hard-linked into place, so a crash never leaves a
    half-written token and a concurrent creator's token wins.
    """
    try:
        return read_token(path)
    except ConfigFileError:
        if os.path.exists(path):
            raise
    try:
        token = _create_token(path)
    except OSError as exc:
        # A full disk or a read-only /etc: say which file and why, in one line.
        raise ConfigFileError(path, f"cannot create the Local API token: {exc.strerror or exc}") from exc
    if token is None:
        return read_token(path)
    logger.info("created the Local API token in %s", path)
    return token


def _create_token(path: str) -> Optional[str]:
    """The new token, or None when a concurrent creator's token won."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    import secrets  # here, not at the top: only a first start needs it (~3 ms, 0.7 MiB)

    token = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(TOKEN_LENGTH))
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o640)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(token)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return None
    finally:
        os.unlink(tmp)
    _fsync_dir(directory)
    return token


def read_token(path: str) -> str:
    """The token: the file's first line, stripped; ConfigFileError if missing, unreadable or empty."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            token = f.readline().strip()
    except OSError as exc:
        raise ConfigFileError(path, f"cannot read the Local API token: {exc.strerror or exc}") from None
    if not token:
        raise ConfigFileError(path, "the Local API token file is empty")
    return token
