"""POST /v2/gps without a token (issue 12): the admin's mode kept, no write when
nothing changed, at most one write per interval, through the real daemon.

Writes are counted (config.xml's inode and mtime, the store's listeners, the
Controller sync's PATCH marks), never timed: the one bound that involves time is
"no more writes than intervals elapsed, plus one", true on any machine.
"""
from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Optional

import pytest

from iofogd.daemon import Daemon
from iofogd.config import Origin
from iofogd.config.gps import GPS_WRITE_INTERVAL
from tests.controller.standin import wait_until


def post_gps(d: Daemon, lat: str, lon: str, token: Optional[str] = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = token
    req = urllib.request.Request(f"http://127.0.0.1:{d.api_port}/v2/gps",  # type: ignore[attr-defined]
                                 data=json.dumps({"lat": lat, "lon": lon}).encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def get_gps(d: Daemon) -> tuple[str, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{d.api_port}/v2/gps",  # type: ignore[attr-defined]
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = json.loads(resp.read())
    return body["lat"], body["lon"]


def wait_for(predicate: Callable[[], Any]) -> bool:
    return wait_until(predicate, timeout=3 * GPS_WRITE_INTERVAL)


class Writes:
    """Counts what a config change costs: files replaced, listeners told, PATCHes marked."""

    def __init__(self, d: Daemon) -> None:
        self.d = d
        self.path = d.paths.config_xml
        self.lock = threading.Lock()
        self.changes = 0
        self.patches = 0
        d.store.add_listener(self._changed)
        mark = d.sync.config_changed

        def counted() -> None:   # the real call, counted (the store's listener looks it up each time)
            with self.lock:
                self.patches += 1
            mark()

        d.sync.config_changed = counted  # type: ignore[method-assign]
        self.stamp = self.file_stamp()

    def _changed(self, old: Any, new: Any, origin: str) -> None:
        with self.lock:
            self.changes += 1

    def file_stamp(self) -> tuple[int, int]:
        st = os.stat(self.path)
        return st.st_ino, st.st_mtime_ns


@pytest.mark.parametrize("mode", ["off", "manual"])
def test_the_admins_mode_is_kept(inproc_daemon: Daemon, mode: str) -> None:
    d = inproc_daemon
    assert d.store.apply({"gps": "48.85,2.35"}, Origin.LOCAL).errors == []
    assert d.store.apply({"gps": mode}, Origin.LOCAL).errors == []
    writes = Writes(d)
    before = open(d.paths.config_xml, "rb").read()
    status, body = post_gps(d, "1.5", "2.5")
    assert status == 403, body
    assert body == {"status": "failed", "error": f"GPS mode is '{mode}', set by the admin: a microservice cannot "
                                                 "change it (the admin can allow it with: iofog-agent config -gps auto)"}
    assert d.store.current.gps_mode == mode
    assert open(d.paths.config_xml, "rb").read() == before
    assert (writes.changes, writes.patches, d.app.gps.writes) == (0, 0, 0)
    # Bad input is still a 400, whatever the mode.
    assert post_gps(d, "91", "0")[0] == 400
    # The admin, with the token, may set a position.
    status, body = post_gps(d, "1.5", "2.5", token=d.app.token.current())
    assert (status, body) == (200, {"status": "okay"})
    assert (d.store.current.gps_mode, d.store.current.gps_coordinates) == ("dynamic", "1.5,2.5")
    assert (writes.changes, writes.patches) == (1, 1)


def test_a_burst_is_written_at_most_once_per_interval_and_the_last_position_wins(inproc_daemon: Daemon) -> None:
    d = inproc_daemon
    gps = d.app.gps
    assert gps.interval == GPS_WRITE_INTERVAL and d.store.current.gps_mode == "auto"
    writes = Writes(d)
    began = time.monotonic()
    positions = [(f"{10 + i / 100:.2f}", f"{20 + i / 100:.2f}") for i in range(60)]
    for lat, lon in positions:
        assert post_gps(d, lat, lon) == (200, {"status": "okay"})
    # GET shows the newest position at once, written or waiting.
    assert get_gps(d) == positions[-1]
    assert wait_for(lambda: d.store.current.gps_coordinates == "10.59,20.59"), d.store.current.gps_coordinates
    elapsed = time.monotonic() - began
    assert d.store.current.gps_mode == "dynamic"
    assert 1 <= gps.writes <= 2 + elapsed / gps.interval, (gps.writes, elapsed)
    assert writes.changes == gps.writes and writes.patches == gps.writes
    assert writes.file_stamp() != writes.stamp
    # The position as stored on disk is the last one.
    assert b"<gps_coordinates>10.59,20.59</gps_coordinates>" in open(d.paths.config_xml, "rb").read()


def test_the_same_position_writes_nothing(inproc_daemon: Daemon) -> None:
    d = inproc_daemon
    assert post_gps(d, "45.5", "-73.25")[0] == 200
    assert wait_for(lambda: d.store.current.gps_coordinates == "45.5,-73.25")
    writes = Writes(d)
    done = d.app.gps.writes
    # The same numbers, however spelt, 40 times, with the write interval long over between some.
    for lat, lon in [("45.5", "-73.25"), ("45.50", "-73.250"), (" 45.5", "-73.25 "), ("+45.5", "-73.25")] * 10:
        assert post_gps(d, lat, lon) == (200, {"status": "okay"})
    d.app.gps.flush()   # whatever waits, written now
    assert d.app.gps.writes == done
    assert (writes.changes, writes.patches) == (0, 0)
    assert writes.file_stamp() == writes.stamp
    assert get_gps(d) == ("45.5", "-73.25")


def test_a_waiting_position_does_not_undo_an_admin_who_turned_gps_off(inproc_daemon: Daemon) -> None:
    d = inproc_daemon
    gps = d.app.gps
    assert post_gps(d, "1.5", "2.5")[0] == 200     # written at once: the interval starts
    assert post_gps(d, "3.5", "4.5")[0] == 200     # waits for the interval
    assert gps.coordinates() == "3.5,4.5"
    assert d.store.apply({"gps": "off"}, Origin.LOCAL).errors == []
    gps.flush()
    assert (d.store.current.gps_mode, d.store.current.gps_coordinates) == ("off", "1.5,2.5")
    assert post_gps(d, "5.5", "6.5")[0] == 403
