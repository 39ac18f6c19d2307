"""Which network interface and address the agent uses (docs/host.md#network-interface, docs/compatibility.md#fixed).

With ``network_interface`` = ``dynamic`` the interface is the one the kernel
routes Controller traffic through: a UDP socket "connected" to the Controller
sends no packet but makes the kernel pick a source address. Resolving the
Controller's name may block on DNS, so this runs on the watcher's own thread
and request handlers read the last result.
"""
from __future__ import annotations

import fcntl
import logging
import socket
import struct
import threading
from urllib.parse import urlsplit

from iofogd.record import Record
from iofogd.system.host import interface_names

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Callable, Final, Optional

log = logging.getLogger(__name__)

SIOCGIFADDR = 0x8915  # linux/sockios.h


class NetworkInfo(Record):
    __slots__ = ("interface", "address", "configured")
    interface: Final[str | None]  # the interface in use, None when none was found
    address: Final[str | None]
    configured: Final[str]  # the config value: "dynamic" or an interface name

    def __init__(self, interface: str | None, address: str | None, configured: str) -> None:
        self.interface = interface
        self.address = address
        self.configured = configured


def interface_address(name: str) -> Optional[str]:
    """The IPv4 address of interface ``name`` (ioctl SIOCGIFADDR), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


def route_source_address(controller_url: str) -> Optional[str]:
    parts = urlsplit(controller_url)
    host = parts.hostname
    if not host:
        return None
    # Upstream failed without an explicit port (docs/compatibility.md#fixed); use the scheme's.
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        # An ASCII name as bytes: a str makes socket encode it with the idna
        # codec, whose import (with stringprep and unicodedata) costs ~0.4 MiB
        # of the daemon's resident memory for a name that needs no encoding.
        name = host.encode("ascii") if host.isascii() else host
        infos = socket.getaddrinfo(name, port, socket.AF_INET, socket.SOCK_DGRAM)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(infos[0][4])
            return str(s.getsockname()[0])
    except (OSError, IndexError):
        return None


def detect(configured: str, controller_url: str) -> NetworkInfo:
    if configured.lower() != "dynamic":
        return NetworkInfo(configured, interface_address(configured), configured)
    source = route_source_address(controller_url)
    if source is not None:
        for name in sorted(interface_names()):
            if interface_address(name) == source:
                return NetworkInfo(name, source, configured)
        return NetworkInfo(None, source, configured)
    # No route to the Controller: the first non-loopback interface with an address.
    for name in sorted(interface_names()):
        if name != "lo":
            address = interface_address(name)
            if address is not None:
                return NetworkInfo(name, address, configured)
    return NetworkInfo(None, None, configured)


class NetworkWatcher:
    """Keeps the last detection; ``refresh()`` on its own thread."""

    def __init__(self, settings: Callable[[], tuple[str, str]], interval: float = 60.0) -> None:
        self._settings = settings      # () -> (network_interface, controller_url)
        self.interval = interval
        self._lock = threading.Lock()
        self._info = NetworkInfo(None, None, settings()[0])
        self._wake = threading.Event()
        self._listeners: list[Callable[[NetworkInfo], object]] = []

    def on_change(self, listener: Callable[[NetworkInfo], object]) -> None:
        """Call ``listener(info)`` (on the watcher's thread) whenever detection changes."""
        self._listeners.append(listener)

    def current(self) -> NetworkInfo:
        with self._lock:
            return self._info

    def refresh(self) -> NetworkInfo:
        info = detect(*self._settings())
        with self._lock:
            changed, self._info = info != self._info, info
        if changed:
            for listener in self._listeners:
                listener(info)
        return info

    def poke(self) -> None:
        """Detect again soon (the interface or Controller URL changed)."""
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.refresh()
            except Exception:  # never let detection kill the thread
                log.exception("network detection failed")
            self._wake.wait(self.interval)
            self._wake.clear()
