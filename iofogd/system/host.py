"""The host as config validation sees it: machine, network interface names, time zone.

Validation (``-n``, ``-ft auto``) and loading (an empty ``time_zone``) ask the
machine through a :class:`Host`, so tests can hand in another machine.
"""
from __future__ import annotations

import os
import re
import socket

from iofogd.errors import ConfigValueError
from iofogd.record import Record

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Callable, Collection, Final


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

    Upstream writes the JVM default zone into an empty ``time_zone`` at start (docs/config-xml.md#keys).
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


# docs/config-xml.md#validation: the JVM's os.arch patterns, matched against platform.machine() here.
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
