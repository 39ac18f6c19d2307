"""Microservice log files (docs/host.md#microservice-logs): round(logSize) files sharing logSize MB, newest .0.log."""
from __future__ import annotations

import json
import os

from iofogd.bus.logs import MicroserviceLogs


def test_rotation_keeps_the_size_and_count(tmp_path: str) -> None:
    logs = MicroserviceLogs(lambda: str(tmp_path), lambda: "node-uuid", clock=lambda: 1_700_000_000.5)
    line = "x" * 1000
    for n in range(2600):   # ~2.7 MB of lines for a 2 MB, 2-file budget
        logs.write("ms", 2.0, "info", f"{n} {line}")
    names = sorted(os.listdir(tmp_path))
    assert names == ["ms.0.log", "ms.1.log"]
    sizes = [os.path.getsize(os.path.join(tmp_path, n)) for n in names]
    assert all(size <= 1024 * 1024 for size in sizes)
    last = json.loads(open(os.path.join(tmp_path, "ms.0.log"), encoding="utf-8").read().splitlines()[-1])
    assert last["message"].startswith("2599 ") and last["agent_id"] == "node-uuid"
    assert last["timestamp"].startswith("2023-11-1") and ".500" in last["timestamp"]


def test_one_file_when_log_size_is_under_one_mb(tmp_path: str) -> None:
    logs = MicroserviceLogs(lambda: str(tmp_path), lambda: "")
    for n in range(700):
        logs.write("ms", 0.25, "warning", "y" * 1000)
    assert os.listdir(tmp_path) == ["ms.0.log"]
    assert os.path.getsize(os.path.join(tmp_path, "ms.0.log")) <= 256 * 1024
