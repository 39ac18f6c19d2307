"""Keep the daemon's threads on one CPU, the least contended one (docs/host.md#cpu).

CPython runs the Python of one thread at a time (the GIL), and every Local API
request hands that lock from one thread to another at least twice (around its
recv and its send). When the threads are spread over several cores each hand-off
is a wake-up on another core, and under load the threads spend their time
waking each other across cores instead of running: measured on a 2-core machine,
wrk -t2 -c32 on GET /v2/version, 20,000 req/s with p99 10 ms with the threads
free to move, 36,000 req/s with p99 3.4 ms with the same process on one CPU
(`taskset`), wrk free on both. One core is all the Python a CPython process
can use anyway; the kernel's work for our sockets and files still runs where
the kernel puts it.

A fixed CPU would be wrong on a gateway whose microservices load that very core,
so the home is reviewed every few seconds: when other work on the home CPU
exceeds the idlest allowed CPU's by REVIEW_MARGIN of a CPU, every thread moves
there. The daemon's own use is not counted against its home (it moves with
it), or a busy daemon would chase itself round the cores. The allowed set is
the one the daemon started with (a container's cpuset, systemd's
CPUAffinity=, taskset); with one CPU there is nothing to do. ``--cpus all``
turns this off.

Pure parts (:func:`parse_proc_stat`, :func:`choose_home`) apart from the
I/O (/proc, sched_setaffinity) in :class:`CpuHome`.
"""
from __future__ import annotations

import logging
import os

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Callable, Dict, Iterable, Optional, Set, Tuple

    # (busy ticks, total ticks) per CPU since boot
    CpuTicks = Dict[int, Tuple[int, int]]

log = logging.getLogger(__name__)

REVIEW_SECONDS = 2.0      # between reviews, plus up to half of it for this process (below)
REVIEW_MARGIN = 0.3       # of one CPU: other work on the home beyond the idlest CPU's


def parse_proc_stat(text: str) -> CpuTicks:
    """Per-CPU (busy, total) ticks from /proc/stat's ``cpuN`` lines (idle and
    iowait are not busy; guest time is already inside user and nice)."""
    ticks: CpuTicks = {}
    for line in text.splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        name, *fields = line.split()
        values = [int(v) for v in fields[:8]]   # user nice system idle iowait irq softirq steal
        total = sum(values)
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        ticks[int(name[3:])] = (total - idle, total)
    return ticks


def busy_fractions(before: CpuTicks, after: CpuTicks) -> Dict[int, float]:
    """Each CPU's busy share (0..1) between two samples; CPUs that went away are left out."""
    shares: Dict[int, float] = {}
    for cpu, (busy, total) in after.items():
        if cpu in before:
            elapsed = total - before[cpu][1]
            shares[cpu] = (busy - before[cpu][0]) / elapsed if elapsed > 0 else 0.0
    return shares


def choose_home(home: int, busy: Dict[int, float], own: float, allowed: Iterable[int],
                margin: float = REVIEW_MARGIN) -> int:
    """Where the daemon should live: ``home`` unless other work there (its busy
    share less ``own``, the daemon's own share of one CPU) exceeds the idlest
    allowed CPU's by more than ``margin``."""
    others = {cpu: busy[cpu] for cpu in allowed if cpu in busy}
    if home not in others or len(others) < 2:
        return home
    others[home] = max(0.0, others[home] - own)
    idlest = min(others, key=lambda cpu: (others[cpu], cpu != home))
    return idlest if others[home] - others[idlest] > margin else home


class CpuHome:
    """The daemon's CPU: chosen at start (before any thread exists, so every
    thread inherits it) and reviewed from the main loop."""

    def __init__(
        self,
        read_proc_stat: Optional[Callable[[], str]] = None,
        read_own_ticks: Optional[Callable[[], int]] = None,
        set_affinity: Callable[[int, Set[int]], None] = os.sched_setaffinity,
        thread_ids: Optional[Callable[[], Iterable[int]]] = None,
        allowed: Optional[Set[int]] = None,
        clock_ticks: Optional[int] = None,
    ) -> None:
        self._read_proc_stat = read_proc_stat or _read_proc_stat
        self._read_own_ticks = read_own_ticks or _read_own_ticks
        self._set_affinity = set_affinity
        self._thread_ids = thread_ids or _thread_ids
        self.allowed = set(allowed if allowed is not None else os.sched_getaffinity(0))
        self._clock_ticks = clock_ticks or os.sysconf("SC_CLK_TCK")
        self.home: Optional[int] = None
        self._last: Optional[Tuple[CpuTicks, int]] = None
        self._next_review = 0.0
        # Each process its own interval, so that two daemons on one machine do not
        # decide in step (and swap CPUs together): no random module for it.
        self._interval = REVIEW_SECONDS * (1 + (os.getpid() % 97) / 194)

    def settle(self, current: Optional[int] = None) -> Optional[int]:
        """Pin the calling thread (at start: the only one) to one allowed CPU,
        the one it runs on now (the kernel's own choice); None when there is
        only one CPU to use or the kernel refuses."""
        if len(self.allowed) < 2:
            return None
        cpu = current if current is not None else _current_cpu()
        if cpu not in self.allowed:
            cpu = min(self.allowed)
        try:
            self._set_affinity(0, {cpu})
        except OSError as exc:
            log.info("not keeping the daemon on one CPU: %s", exc)
            return None
        self.home = cpu
        try:
            self._sample()
        except (OSError, ValueError):
            self._last = None   # no /proc/stat now: the first review samples again
        return cpu

    def review(self, now: float) -> Optional[int]:
        """Move every thread when the home is contended (see the module docstring);
        the new home, or None when nothing moved. Cheap between reviews."""
        if self.home is None or now < self._next_review:
            return None
        self._next_review = now + self._interval
        previous = self._last
        try:
            ticks, own = self._sample()
        except (OSError, ValueError):
            return None
        if previous is None:
            return None
        before, own_before = previous
        shares = busy_fractions(before, ticks)
        elapsed = _elapsed_seconds(before, ticks, self.home, self._clock_ticks)
        own_share = (own - own_before) / self._clock_ticks / elapsed if elapsed > 0 else 0.0
        best = choose_home(self.home, shares, own_share, self.allowed)
        if best == self.home:
            return None
        for tid in self._thread_ids():
            try:
                self._set_affinity(tid, {best})
            except OSError:
                pass   # a thread that ended meanwhile
        log.info("the daemon moves from CPU %d to CPU %d (CPU %d is busy with other work)",
                 self.home, best, self.home)
        self.home = best
        return best

    def _sample(self) -> Tuple[CpuTicks, int]:
        sample = (parse_proc_stat(self._read_proc_stat()), self._read_own_ticks())
        self._last = sample
        return sample


def _elapsed_seconds(before: CpuTicks, after: CpuTicks, cpu: int, clock_ticks: int) -> float:
    """Wall time between two samples, from one CPU's total ticks (each CPU's total
    advances with wall time)."""
    if cpu not in before or cpu not in after:
        return 0.0
    return (after[cpu][1] - before[cpu][1]) / clock_ticks


def _read_proc_stat() -> str:
    with open("/proc/stat") as f:
        return f.read()


def _read_own_ticks() -> int:
    """utime + stime of this process, every thread included (/proc/self/stat)."""
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _current_cpu() -> int:
    """The CPU this thread last ran on (/proc/thread-self/stat field 39)."""
    try:
        with open("/proc/thread-self/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[36])
    except (OSError, ValueError, IndexError):
        return -1


def _thread_ids() -> Iterable[int]:
    return [int(tid) for tid in os.listdir("/proc/self/task")]
