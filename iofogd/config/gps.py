"""Positions from microservices (POST /v2/gps, docs/local-api.md#gps) into config.xml, bounded (issue 12).

A POST needs no token, so any container may send one, as often as it likes.
Upstream set GPS mode ``dynamic`` and rewrote config.xml and its backup (each
fsynced) on every POST, and marked each for a PATCH to the Controller: an admin's
``-gps off`` was undone and the flash worn at hundreds of writes a second.
Here (:class:`GpsUpdates`):

- the admin's modes ``off`` and ``manual`` are kept unless the request carries
  the admin token (:meth:`GpsUpdates.submit` says so; the Local API answers 403);
- a position equal (as numbers) to the stored one in mode ``dynamic`` writes
  nothing and so is not PATCHed (:meth:`ConfigStore.set_gps`);
- config.xml is written at most once per ``interval`` seconds: a POST that comes
  sooner is answered at once, and its position, or the newest one received by
  then, is written when the interval has passed (latest wins; GET shows it
  meanwhile).

This is the only write a request without a token can cause: /v2/config/get,
/v2/edgeResources and the control socket only read state or keep memory, and
the message bus and /v2/log are not served yet (their writes must follow the
same rule when they come).
"""
from __future__ import annotations

import logging
import threading
import time

from iofogd.config.schema import parse_coordinates
from iofogd.config.store import ConfigStore
from iofogd.errors import ConfigError, ConfigValueError

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Callable, Optional, Tuple

log = logging.getLogger(__name__)

GPS_WRITE_INTERVAL = 5.0   # seconds between two writes of a microservice's position
ADMIN_MODES = ("off", "manual")   # set by the admin; a microservice may not change them


class GpsUpdates:
    """Positions from POST /v2/gps into config.xml: admin modes kept, bounded rate, no idle writes."""

    def __init__(self, store: ConfigStore, interval: float = GPS_WRITE_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        # (lat, lon, modes to keep) waiting for the interval; the newest wins
        self._pending: Optional[Tuple[str, str, Tuple[str, ...]]] = None
        self._timer: Optional[threading.Timer] = None
        self._last_write = float("-inf")
        self.writes = 0   # positions written so far (for tests and the bench)

    def submit(self, lat: str, lon: str, *, admin: bool = False) -> bool:
        """Take a position: False when the admin's GPS mode keeps it out; ConfigValueError when invalid."""
        lat, lon = lat.strip(), lon.strip()
        if parse_coordinates(f"{lat},{lon}") is None:
            raise ConfigValueError("gps", f"Option -gps has invalid value: {lat},{lon}")
        keep = () if admin else ADMIN_MODES
        if self._store.current.gps_mode in keep:
            return False
        with self._lock:
            self._pending = (lat, lon, keep)
            if self._timer is not None:          # a write is due: it takes the newest position
                return True
            wait = self._last_write + self.interval - self._clock()
            if wait > 0:
                self._timer = threading.Timer(wait, self._timer_fired)
                self._timer.daemon = True
                self._timer.start()
                return True
            self._write_pending()
            return True

    def coordinates(self) -> str:
        """What GET answers: a position still waiting for its write, else the stored one."""
        with self._lock:
            pending = self._pending
        return f"{pending[0]},{pending[1]}" if pending else self._store.current.gps_coordinates

    def flush(self) -> None:
        """Write a waiting position now (the timer, and the daemon when it stops)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._write_pending()

    def _timer_fired(self) -> None:
        try:
            self.flush()
        except ConfigError as exc:   # a full disk: the request was answered long ago; say it here
            log.error("cannot store the GPS position: %s", exc)

    def _write_pending(self) -> None:
        if self._pending is None:
            return
        lat, lon, keep = self._pending
        self._pending = None
        # The mode is checked again by the store, under its lock: an admin who
        # turned GPS off meanwhile is not overridden by a waiting position.
        if self._store.set_gps(lat, lon, keep_modes=keep):
            self._last_write = self._clock()
            self.writes += 1
