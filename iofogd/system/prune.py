"""Automatic pruning: free disk by removing unused images when it runs low (docs/docker.md#prune).

Upstream checks every 30 minutes whether the available share of the disk has
fallen below ``available_disk_threshold`` percent and, if so, removes images no
microservice uses. Its first check ran before the first disk measurement,
divided by zero and silently cancelled every later run for the daemon's
lifetime (docs/docker.md#prune, "probable bug"). Here a missing or zero measurement means
"not known yet, skip this round", and no error ever ends the loop.

The policy takes everything as arguments: how to prune (normally
``Microservices.prune_unused``), how to measure the disk, and the threshold
(a callable, so that a config change applies on the next round).
"""
from __future__ import annotations

import logging
import os
import shutil
import threading

from iofogd.errors import DockerError

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Callable, Iterable, Optional

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 30 * 60.0   # upstream's period (docs/docker.md#prune)


def available_percent(paths: Iterable[str]) -> Optional[int]:
    """The lowest ``free * 100 // total`` over the filesystems of ``paths`` (None: none measurable)."""
    lowest: Optional[int] = None
    for path in paths:
        try:
            usage = shutil.disk_usage(path)
        except OSError:
            continue
        if usage.total <= 0:
            continue
        percent = usage.free * 100 // usage.total
        lowest = percent if lowest is None else min(lowest, percent)
    return lowest


class AutoPruner:
    """Prunes when the available disk share falls below the threshold."""

    def __init__(
        self,
        prune: Callable[[], int],
        available: Callable[[], Optional[int]],
        threshold: Callable[[], int],
    ) -> None:
        self._prune = prune
        self._available = available
        self._threshold = threshold
        self.last_reclaimed: Optional[int] = None

    @classmethod
    def for_paths(cls, prune: Callable[[], int], paths: Iterable[str], threshold: Callable[[], int]) -> AutoPruner:
        """Measure the filesystems holding ``paths`` (e.g. ``/`` and Docker's data root)."""
        roots = [p for p in paths if os.path.exists(p)]
        return cls(prune, lambda: available_percent(roots), threshold)

    def check_once(self) -> Optional[int]:
        """Prune if needed: bytes reclaimed, or None when no pruning was due or possible."""
        available = self._available()
        if available is None:
            log.debug("auto-prune: disk not measured yet; skipping this round")
            return None
        threshold = int(self._threshold())
        if threshold <= 0 or available >= threshold:
            return None
        log.info("auto-prune: %d%% of the disk available, below the %d%% threshold", available, threshold)
        try:
            reclaimed = self._prune()
        except DockerError as exc:
            log.warning("auto-prune failed: %s", exc.message)
            return None
        self.last_reclaimed = reclaimed
        return reclaimed

    def run(self, stop: threading.Event, interval: float = DEFAULT_INTERVAL) -> None:
        """Check now, then every ``interval`` seconds, until ``stop`` is set."""
        while not stop.is_set():
            try:
                self.check_once()
            except Exception:   # never let a bug end automatic pruning (the upstream failure)
                log.exception("auto-prune check failed")
            stop.wait(interval)
