"""The resource sampler: one thread measures, request threads read a snapshot.

psutil's ``cpu_percent(None)`` keeps state between calls (per process object,
or globally), so sampling from request threads would give each caller a
different, meaningless interval. One sampler thread owns every measurement and
publishes a frozen :class:`ResourceSnapshot`.

psutil is used when it is installed (the ``iofogd[psutil]`` extra, Debian's
python3-psutil); otherwise the same figures come from /proc, because 32-bit
Raspberry Pi OS has no psutil wheel and an air-gapped pip cannot build one.

Unlike upstream (docs/host.md#figures, docs/compatibility.md#fixed) the figures are honest: the daemon's
own RSS in MiB, its CPU share of the whole machine since the last sample, the
real size of the message archive, and the machine's current total CPU use.

psutil is imported by the first sample, in the sampler thread, not when this
module is: importing it takes ~15-20 ms on the bench machine, and the daemon
answers its first requests before then (see iofogd.daemon). A request that
asks for figures before the first sample waits for it.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from types import ModuleType

from iofogd.record import Record

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Callable, Final, Optional

log = logging.getLogger(__name__)

FIRST_SAMPLE_WAIT = 10.0   # seconds a request waits for the first sample


def _import_psutil() -> Optional[ModuleType]:
    try:  # optional: see the module docstring
        import psutil
    except ImportError:  # exercised by the tests that hide psutil
        return None
    return psutil


class ResourceSnapshot(Record):
    __slots__ = (
        "taken_at", "memory_rss_bytes", "cpu_percent", "archive_bytes", "disk_available_bytes",
        "disk_total_bytes", "memory_available_bytes", "system_cpu_percent", "source",
    )
    taken_at: Final[float]
    memory_rss_bytes: Final[int]
    cpu_percent: Final[float]  # the daemon's share of the whole machine
    archive_bytes: Final[int]  # size of <disk_directory>/messages/archive
    disk_available_bytes: Final[int]  # of the filesystem holding the state directory
    disk_total_bytes: Final[int]
    memory_available_bytes: Final[int]
    system_cpu_percent: Final[float]  # whole machine, over the last interval
    source: Final[str]  # "psutil" or "proc"

    def __init__(
        self,
        taken_at: float = 0.0,
        memory_rss_bytes: int = 0,
        cpu_percent: float = 0.0,
        archive_bytes: int = 0,
        disk_available_bytes: int = 0,
        disk_total_bytes: int = 0,
        memory_available_bytes: int = 0,
        system_cpu_percent: float = 0.0,
        source: str = "none",
    ) -> None:
        self.taken_at = taken_at
        self.memory_rss_bytes = memory_rss_bytes
        self.cpu_percent = cpu_percent
        self.archive_bytes = archive_bytes
        self.disk_available_bytes = disk_available_bytes
        self.disk_total_bytes = disk_total_bytes
        self.memory_available_bytes = memory_available_bytes
        self.system_cpu_percent = system_cpu_percent
        self.source = source


class Probe:
    """Raw readings from psutil or /proc; stateless, so the sampler owns deltas."""

    def __init__(self, use_psutil: bool | None = None) -> None:
        psutil = _import_psutil() if use_psutil is not False else None
        self.use_psutil = (psutil is not None) if use_psutil is None else use_psutil
        if self.use_psutil and psutil is None:
            raise RuntimeError("psutil is not installed")
        self._psutil = psutil
        self._process = psutil.Process() if psutil is not None else None
        self._page_size = os.sysconf("SC_PAGE_SIZE")

    @property
    def source(self) -> str:
        return "psutil" if self.use_psutil else "proc"

    def rss_bytes(self) -> int:
        if self._process is not None:
            return int(self._process.memory_info().rss)
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * self._page_size

    def process_cpu_seconds(self) -> float:
        if self._process is not None:
            times = self._process.cpu_times()
            return float(times.user + times.system)
        own = os.times()
        return own.user + own.system

    def system_cpu(self) -> tuple[float, float]:
        """(busy, total) time counters of the whole machine since boot."""
        psutil = self._psutil
        if psutil is not None:
            t = psutil.cpu_times()
            idle = t.idle + getattr(t, "iowait", 0.0)
            total = sum(t)
            # guest time is already counted in user (proc(5)); don't count it twice.
            total -= getattr(t, "guest", 0.0) + getattr(t, "guest_nice", 0.0)
            return total - idle, total
        with open("/proc/stat", "rb") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal (guest, guest_nice are in user)
        values = fields[:8]
        idle = values[3] + (values[4] if len(values) > 4 else 0.0)
        total = sum(values)
        ticks = os.sysconf("SC_CLK_TCK")
        return (total - idle) / ticks, total / ticks

    def memory_available_bytes(self) -> int:
        if self._psutil is not None:
            return int(self._psutil.virtual_memory().available)
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
        return 0

    @staticmethod
    def disk(path: str) -> tuple[int, int]:
        """(available, total) bytes of the filesystem holding ``path``."""
        while path and not os.path.exists(path):
            path = os.path.dirname(path.rstrip("/")) or "/"
        st = os.statvfs(path or "/")
        return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize

    @staticmethod
    def tree_bytes(path: str) -> int:
        total = 0
        for dirpath, _dirs, files in os.walk(path):
            for name in files:
                try:
                    total += os.lstat(os.path.join(dirpath, name)).st_size
                except OSError:
                    pass  # a file removed while we walk is not an error
        return total


class ResourceSampler:
    """Samples every ``interval`` seconds and publishes a :class:`ResourceSnapshot`."""

    def __init__(
        self,
        probe: Callable[[], Probe],
        archive_dir: Callable[[], str],
        disk_path: Callable[[], str],
        interval: float = 5.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._make_probe = probe      # called by the first sample (it may import psutil)
        self._probe: Optional[Probe] = None
        self._archive_dir = archive_dir
        self._disk_path = disk_path
        self.interval = interval
        self._clock = clock
        self._monotonic = monotonic
        self._snapshot = ResourceSnapshot()
        self._sampled = threading.Event()
        self._lock = threading.Lock()
        self._last: Optional[tuple[float, float, float, float]] = None  # (mono, proc, busy, total)

    def snapshot(self) -> ResourceSnapshot:
        """The latest figures; before the first sample, waits for it (bounded)."""
        self._sampled.wait(FIRST_SAMPLE_WAIT)
        with self._lock:
            return self._snapshot

    def sample(self) -> ResourceSnapshot:
        p = self._probe
        if p is None:
            p = self._probe = self._make_probe()
            log.info("resource figures from %s", p.source)
        now_mono = self._monotonic()
        proc = p.process_cpu_seconds()
        busy, total = p.system_cpu()
        cpu = system_cpu = 0.0
        if self._last is not None:
            mono0, proc0, busy0, total0 = self._last
            d_total = total - total0
            if d_total > 0:
                system_cpu = 100.0 * (busy - busy0) / d_total
            elapsed = now_mono - mono0
            if elapsed > 0:
                # The process's CPU seconds over the machine's capacity in that time.
                cpu = 100.0 * (proc - proc0) / (elapsed * (os.cpu_count() or 1))
        self._last = (now_mono, proc, busy, total)
        avail, disk_total = p.disk(self._disk_path())
        snap = ResourceSnapshot(
            taken_at=self._clock(),
            memory_rss_bytes=p.rss_bytes(),
            cpu_percent=max(0.0, min(cpu, 100.0)),
            archive_bytes=p.tree_bytes(self._archive_dir()),
            disk_available_bytes=avail,
            disk_total_bytes=disk_total,
            memory_available_bytes=p.memory_available_bytes(),
            system_cpu_percent=max(0.0, min(system_cpu, 100.0)),
            source=p.source,
        )
        with self._lock:
            self._snapshot = snap
        self._sampled.set()
        return snap

    def run(self, stop: threading.Event) -> None:
        """Sample every ``interval`` seconds (at once if nothing was sampled yet)."""
        if self._last is not None:
            stop.wait(self.interval)
        try:
            while not stop.is_set():
                try:
                    self.sample()
                except OSError as exc:  # a vanished directory must not kill the sampler
                    log.warning("resource sampling failed: %s", exc)
                finally:
                    self._sampled.set()   # whoever waits goes on, with figures or not
                stop.wait(self.interval)
        finally:
            self._sampled.set()   # stopped before a first sample: nobody waits for it
