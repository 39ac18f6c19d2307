"""Log lines about clients: escaped, and rate-limited per peer.

Whatever a client sends (a path, a header, a request line) may hold terminal
escape sequences or line breaks; :func:`printable` escapes every control
character before such text reaches the log. :class:`PeerLog` keeps one noisy
peer from filling the disk: a given kind of line about a given peer is logged
at most once per ``interval`` seconds, and the next one says how many were
left out.
"""
from __future__ import annotations

import logging
import threading
import time

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Any

# C0 controls, DEL and C1 controls, each as \xNN.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}


def printable(text: object) -> str:
    """``text`` with every control character written as ``\\xNN``."""
    return str(text).translate(_ESCAPES)


class PeerLog:
    """Rate-limited log lines keyed by (peer, kind)."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0, max_peers: int = 1024) -> None:
        self._log = logger
        self.interval = interval
        self._max_peers = max_peers
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], tuple[float, int]] = {}   # (peer, kind) -> (logged at, left out since)

    def log(self, level: int, peer: str, kind: str, message: str, *args: Any) -> bool:
        """Log ``message % args`` (args escaped) unless the same kind of line about
        ``peer`` was logged less than ``interval`` seconds ago; whether it was logged."""
        if not self._log.isEnabledFor(level):
            return False
        now = time.monotonic()
        key = (peer, kind)
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last[0] < self.interval:
                self._last[key] = (last[0], last[1] + 1)
                return False
            if len(self._last) >= self._max_peers and key not in self._last:
                # Forget the stale entries; if none is stale, the oldest half.
                stale = [k for k, (t, _) in self._last.items() if now - t >= self.interval]
                for k in stale or sorted(self._last, key=lambda k: self._last[k][0])[: self._max_peers // 2]:
                    del self._last[k]
            self._last[key] = (now, 0)
        left_out = last[1] if last is not None else 0
        text = message % tuple(printable(a) if isinstance(a, (str, bytes)) else a for a in args)
        if left_out:
            text += f" ({left_out} more like this from {peer} in the last {self.interval:g} s not logged)"
        self._log.log(level, "%s", text)
        return True

    def warning(self, peer: str, kind: str, message: str, *args: Any) -> bool:
        return self.log(logging.WARNING, peer, kind, message, *args)
