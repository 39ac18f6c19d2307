"""Microservice logs written through ``POST /v2/log`` (docs/local-api.md#log, docs/host.md#microservice-logs).

Each microservice known from the Controller has its own files
``<log_directory>/<uuid>.0.log`` (newest), ``.1.log`` ...: ``round(logSize)``
files (at least one) sharing ``logSize`` MB, one JSON object per line as the
agent's own v3 log (``timestamp``, ``level``, ``agent_id``, ``pid``,
``hostname``, ``thread``, ``module``, ``message``).  ``type`` ``info`` is
INFO, anything else WARNING, as upstream.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Callable, Dict

MB = 1024 * 1024


def _timestamp(now: float) -> str:
    # yyyy-MM-dd'T'HH:mm:ss.SSSZ, as upstream's LogFormatter (docs/host.md#logs)
    local = time.localtime(now)
    return time.strftime("%Y-%m-%dT%H:%M:%S", local) + f".{int(now * 1000) % 1000:03d}" + time.strftime("%z", local)


class MicroserviceLogs:
    def __init__(self, directory: Callable[[], str], node_uuid: Callable[[], str],
                 clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.node_uuid = node_uuid
        self._clock = clock
        self._lock = threading.Lock()
        self._locks: Dict[str, threading.Lock] = {}
        self._hostname = socket.gethostname()

    def write(self, microservice: str, log_size_mb: float, kind: str, text: str) -> None:
        """Append one line to the microservice's log; OSError if it cannot be written."""
        with self._lock:
            lock = self._locks.setdefault(microservice, threading.Lock())
        count = max(1, round(log_size_mb))
        per_file = max(64 * 1024, int(log_size_mb * MB / count))
        now = self._clock()
        line = json.dumps({
            "timestamp": _timestamp(now), "level": "INFO" if kind == "info" else "WARNING",
            "agent_id": self.node_uuid(), "pid": os.getpid(), "hostname": self._hostname,
            "thread": "LAPI", "module": microservice, "message": text,
        }, separators=(",", ":"), ensure_ascii=False) + "\n"
        data = line.encode("utf-8")
        directory = self.directory()
        with lock:
            os.makedirs(directory, exist_ok=True)
            path = os.path.join(directory, f"{microservice}.0.log")
            try:
                size = os.path.getsize(path)
            except OSError:
                size = 0
            if size and size + len(data) > per_file:
                for n in range(count - 1, 0, -1):
                    older = os.path.join(directory, f"{microservice}.{n - 1}.log")
                    if os.path.exists(older):
                        os.replace(older, os.path.join(directory, f"{microservice}.{n}.log"))
                if count == 1:
                    os.unlink(path)
            with open(path, "ab") as f:
                f.write(data)
