"""The daemon's CPU home (iofogd/system/cpuhome.py, docs/host.md#cpu)."""
from __future__ import annotations

import os

import pytest

from iofogd.system.cpuhome import CpuHome, busy_fractions, choose_home, parse_proc_stat
from tests.daemon_process import RunningDaemon

PROC_STAT = """cpu  300 0 100 1600 0 0 0 0 0 0
cpu0 100 0 50 800 0 0 0 0 0 0
cpu1 200 0 50 800 10 0 0 0 0 0
intr 12345 0 0
ctxt 999
"""


def test_proc_stat_gives_busy_and_total_per_cpu() -> None:
    # idle and iowait are not busy; the "cpu " total line and other lines are skipped
    assert parse_proc_stat(PROC_STAT) == {0: (150, 950), 1: (250, 1060)}


def test_busy_fractions_between_two_samples() -> None:
    before = {0: (100, 1000), 1: (100, 1000), 2: (5, 10)}
    after = {0: (150, 1100), 1: (200, 1100), 3: (1, 1)}
    assert busy_fractions(before, after) == {0: 0.5, 1: 1.0}   # CPU 2 went away, CPU 3 is new


def test_home_moves_only_for_other_work_beyond_the_margin() -> None:
    allowed = {0, 1, 2}
    # The daemon's own load does not count against its home: a busy daemon stays.
    assert choose_home(0, {0: 0.9, 1: 0.0, 2: 0.1}, own=0.85, allowed=allowed) == 0
    # Other work on the home beyond the margin: to the idlest CPU.
    assert choose_home(0, {0: 0.9, 1: 0.3, 2: 0.1}, own=0.2, allowed=allowed) == 2
    # Within the margin: no move (no flapping between near-equal CPUs).
    assert choose_home(0, {0: 0.5, 1: 0.3, 2: 0.3}, own=0.0, allowed=allowed) == 0
    # Only the allowed CPUs are candidates; a home whose figures are missing stays.
    assert choose_home(0, {0: 1.0, 1: 0.0, 2: 0.0}, own=0.0, allowed={0, 2}) == 2
    assert choose_home(5, {0: 1.0, 1: 0.0}, own=0.0, allowed={0, 1, 5}) == 5


class FakeHost:
    """/proc and sched_setaffinity as CpuHome sees them."""

    def __init__(self) -> None:
        self.ticks = {0: [0, 0], 1: [0, 0]}   # busy, total
        self.own = 0
        self.pinned: dict[int, set[int]] = {}
        self.threads = [0, 101, 102]

    def advance(self, busy0: int, busy1: int, own: int, elapsed: int = 100) -> None:
        for cpu, busy in ((0, busy0), (1, busy1)):
            self.ticks[cpu][0] += busy
            self.ticks[cpu][1] += elapsed
        self.own += own

    def proc_stat(self) -> str:
        return "".join(f"cpu{cpu} {busy} 0 0 {total - busy} 0 0 0 0\n" for cpu, (busy, total) in self.ticks.items())

    def home(self) -> CpuHome:
        return CpuHome(read_proc_stat=self.proc_stat, read_own_ticks=lambda: self.own,
                       set_affinity=lambda tid, cpus: self.pinned.__setitem__(tid, set(cpus)),
                       thread_ids=lambda: self.threads, allowed={0, 1}, clock_ticks=100)


def test_review_moves_every_thread_off_a_contended_home() -> None:
    host = FakeHost()
    home = host.home()
    assert home.settle(current=1) == 1 and host.pinned == {0: {1}}   # the calling thread, at start
    host.advance(busy0=5, busy1=100, own=95)        # CPU 1 busy, but with the daemon itself
    assert home.review(now=10.0) is None and home.home == 1
    assert home.review(now=10.5) is None            # between reviews nothing is read
    host.advance(busy0=5, busy1=100, own=30)        # 70 % of CPU 1 is someone else's
    assert home.review(now=20.0) == 0
    assert host.pinned == {0: {0}, 101: {0}, 102: {0}} and home.home == 0


def test_one_allowed_cpu_or_a_refusal_means_no_home() -> None:
    assert CpuHome(allowed={3}).settle() is None

    def refuse(tid: int, cpus: set[int]) -> None:
        raise PermissionError(1, "Operation not permitted")

    assert CpuHome(set_affinity=refuse, allowed={0, 1}).settle(current=0) is None


def _cpus_of(pid: int) -> set[str]:
    seen = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                seen.update(line.split()[1] for line in f if line.startswith("Cpus_allowed_list:"))
        except OSError:
            pass   # a thread that ended meanwhile
    return seen


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to choose from")
def test_daemon_threads_share_one_cpu_unless_told_otherwise(tmp_path) -> None:  # type: ignore[no-untyped-def]
    one = RunningDaemon(str(tmp_path / "one")).start()
    try:
        assert one.request("GET", "/v2/status")[0] == 200   # phase 2 up: every thread started
        cpus = _cpus_of(one.proc.pid)   # type: ignore[union-attr]
        assert len(cpus) == 1 and "," not in next(iter(cpus)) and "-" not in next(iter(cpus)), cpus
    finally:
        one.stop()
    every = RunningDaemon(str(tmp_path / "all"), extra_args=("--cpus", "all")).start()
    try:
        assert every.request("GET", "/v2/status")[0] == 200
        with open("/proc/self/status") as f:
            ours = {line.split()[1] for line in f if line.startswith("Cpus_allowed_list:")}
        assert _cpus_of(every.proc.pid) == ours   # type: ignore[union-attr]
    finally:
        every.stop()


def test_no_proc_stat_at_start_is_not_fatal() -> None:
    host = FakeHost()
    readable = [False]

    def proc_stat() -> str:
        if not readable[0]:
            raise FileNotFoundError(2, "No such file or directory", "/proc/stat")
        return host.proc_stat()

    home = CpuHome(read_proc_stat=proc_stat, read_own_ticks=lambda: host.own,
                   set_affinity=lambda tid, cpus: host.pinned.__setitem__(tid, set(cpus)),
                   thread_ids=lambda: host.threads, allowed={0, 1}, clock_ticks=100)
    assert home.settle(current=0) == 0
    assert home.review(now=10.0) is None          # still unreadable: nothing moves, nothing raised
    readable[0] = True
    assert home.review(now=20.0) is None          # first sample
    host.advance(busy0=100, busy1=0, own=10)      # 90 % of CPU 0 is someone else's
    assert home.review(now=30.0) == 1 and host.pinned[101] == {1}
