"""What the benches read of a process from Linux /proc: its CPU time and its memory.

One place for both, so that every bench measures them the same way.
"""
from __future__ import annotations

import os


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far, threads that ended included
    (/proc/<pid>/stat, in clock ticks): a server's connection threads end when the
    load generator closes its connections."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_kib(pid: int, field: str) -> int:
    """A KiB figure of /proc/<pid>/status (``VmRSS``, ``VmHWM``: the peak); 0 if absent."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0
