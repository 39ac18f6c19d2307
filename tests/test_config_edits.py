"""config.xml edited by hand while the daemon runs (issue 12): the edit is never lost.

The store merges: a write that finds the active file changed since it last read
or wrote it takes the file in first and applies its change on top; a changed
file it cannot parse is left alone and the change is refused, naming the file.
Tested on the store directly and through the real daemon (API and CLI writes
landing between the hand edit and the SIGHUP).
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Collection, List, Tuple

import pytest

from iofogd.config import Config, ConfigStore, Origin, parse_config_xml
from iofogd.errors import ConfigFileError
from iofogd.paths import Paths
from iofogd.system.host import Host, interface_names
from tests.daemon_process import RunningDaemon

HOST = Host("x86_64", interface_names, lambda: "Europe/Paris")


def config_path(root: Path) -> Path:
    return root / "etc" / "iofog-agent" / "config.xml"


def backup_path(root: Path) -> Path:
    return root / "etc" / "iofog-agent" / "config-bck.xml"


def hand_edit(path: Path, old: str, new: str) -> None:
    """What an admin's editor does: rewrite the file in place with one value changed."""
    text = path.read_text()
    assert old in text, (old, text)
    path.write_text(text.replace(old, new))


def file_values(path: Path) -> dict[str, str]:
    return parse_config_xml(path.read_bytes()).values


def new_store(root: Path, host: Host = HOST) -> ConfigStore:
    store = ConfigStore(Paths.from_root(str(root)), host=host)
    store.load()        # a fresh root: the shipped values are written
    return store


# -- the store --------------------------------------------------------------------------------

@pytest.mark.parametrize("write", ["apply", "gps", "identity", "defaults", "controller"])
def test_a_write_after_a_hand_edit_keeps_the_edit(tmp_path: Path, write: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    store = new_store(tmp_path)
    seen: List[Tuple[str, str, str]] = []
    store.add_listener(lambda old, new, origin: seen.append(
        (old.get("log_level"), new.get("log_level"), origin)))
    hand_edit(config_path(tmp_path), "<log_level>INFO<", "<log_level>FINE<")
    caplog.set_level(logging.INFO, "iofogd.config")
    if write == "apply":
        assert store.apply({"lc": "7"}, Origin.LOCAL).errors == []
    elif write == "gps":
        assert store.set_gps("10", "20")
    elif write == "identity":
        store.set_identity("uuid-1", "token-1")
    elif write == "defaults":
        # `config defaults` puts every flagged key back: the edit is taken in, then reset (as a
        # SIGHUP then `config defaults` would); the listeners heard of both in that order.
        store.reset_defaults()
    else:
        store.apply({"lc": "7"}, Origin.CONTROLLER)
    on_disk = file_values(config_path(tmp_path))
    expected_level = "INFO" if write == "defaults" else "FINE"
    assert on_disk["log_level"] == expected_level
    assert store.current.get("log_level") == expected_level
    if write in ("apply", "controller"):
        assert on_disk["log_file_count"] == "7"
    elif write == "gps":
        assert (on_disk["gps"], on_disk["gps_coordinates"]) == ("dynamic", "10,20")
    elif write == "identity":
        assert on_disk["iofog_uuid"] == "uuid-1"
    # The edit reached the listeners as the admin's (local) change, before the write's own.
    assert seen[0] == ("INFO", "FINE", Origin.LOCAL)
    assert backup_path(tmp_path).read_bytes() == config_path(tmp_path).read_bytes()
    assert f"{config_path(tmp_path)} was changed on disk" in caplog.text
    # The next SIGHUP finds nothing new.
    before = store.current
    assert store.load() == before


def test_no_edit_no_reread(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = new_store(tmp_path)
    caplog.set_level(logging.INFO, "iofogd.config")
    for i in range(1, 4):
        store.apply({"lc": str(i)}, Origin.LOCAL)
    assert "changed on disk" not in caplog.text
    assert file_values(config_path(tmp_path))["log_file_count"] == "3"


def test_an_edit_that_does_not_parse_is_not_overwritten(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    # An admin half-way through an edit: the change is refused, the file left as it is.
    store = new_store(tmp_path)
    path = config_path(tmp_path)
    half = path.read_text().replace("<log_level>INFO</log_level>", "<log_level>FINE</log_lev")
    assert half != path.read_text()
    path.write_text(half)
    before = store.current
    with pytest.raises(ConfigFileError) as info:
        store.apply({"lc": "7"}, Origin.LOCAL)
    assert info.value.path == str(path)
    assert path.read_text() == half
    assert store.current == before
    assert f"{path} was changed on disk and cannot be parsed" in caplog.text
    with pytest.raises(ConfigFileError):
        store.set_gps("1", "2")
    assert path.read_text() == half
    # Finished: the next write takes the edit in.
    path.write_text(half.replace("FINE</log_lev", "FINE</log_level>"))
    assert store.apply({"lc": "7"}, Origin.LOCAL).errors == []
    assert (file_values(path)["log_level"], file_values(path)["log_file_count"]) == ("FINE", "7")


def test_an_edit_while_a_change_is_validated_is_kept(tmp_path: Path) -> None:
    # The edit lands after the store compared the file and before it writes: the
    # change is computed again on top of the edit. The hook is the one place
    # validation calls out while the lock is held: the list of interfaces (-n).
    path = config_path(tmp_path)
    edits: List[str] = []

    def interfaces_while_editing() -> Collection[str]:
        if not edits:
            edits.append("done")
            hand_edit(path, "<log_level>INFO<", "<log_level>FINE<")
        return interface_names()

    store = new_store(tmp_path, Host("x86_64", interfaces_while_editing, lambda: "UTC"))
    assert store.apply({"n": "lo", "lc": "7"}, Origin.LOCAL).errors == []
    values = file_values(path)
    assert (values["log_level"], values["network_interface"], values["log_file_count"]) == (
        "FINE", "lo", "7")
    assert store.current.get("log_level") == "FINE"


def test_edits_in_place_during_a_burst_of_writes_are_never_lost(tmp_path: Path) -> None:
    # An editor saving in place (truncate, write: nano, Python's write_text) over
    # and over while the store writes as fast as it can; some saves land in the
    # file the store is replacing. Each time the editor's latest value survives:
    # it is in the file after the next write. Bounded: 150 saves.
    import re
    store = new_store(tmp_path)
    path = config_path(tmp_path)
    stop = threading.Event()
    refused: List[str] = []

    def writer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                store.apply({"lc": str(1 + i % 50)}, Origin.LOCAL)
            except ConfigFileError as exc:   # read half-saved: refused, never written over
                refused.append(exc.reason)

    thread = threading.Thread(target=writer)
    thread.start()
    lost = []
    try:
        for value in range(100, 250):
            text = path.read_text()
            path.write_text(re.sub(r"<status_update_freq>\d+<", f"<status_update_freq>{value}<", text))
            time.sleep(0.002)
            # The store's next write keeps it (or a later save of ours replaced it).
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                got = int(file_values(path)["status_update_freq"]) if b"</config>" in path.read_bytes() else -1
                if got == value:
                    break
                time.sleep(0.001)
            else:
                lost.append(value)
    finally:
        stop.set()
        thread.join()
    store.apply({"lc": "3"}, Origin.LOCAL)
    assert lost == []
    assert store.current.status_update_freq == 249 and file_values(path)["status_update_freq"] == "249"
    # Refused: read half-saved, or saved again each time the change was computed anew.
    assert all("cannot be parsed" in r or "keeps changing" in r for r in refused), refused[:3]


def test_sighup_reload_takes_a_hand_edit(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    seen: List[Tuple[int, int, str]] = []
    store.add_listener(lambda old, new, origin: seen.append(
        (old.log_file_count, new.log_file_count, origin)))
    hand_edit(config_path(tmp_path), "<log_file_count>10<", "<log_file_count>4<")
    assert store.load().log_file_count == 4
    assert seen == [(10, 4, Origin.LOCAL)]
    assert "<log_file_count>4<" in config_path(tmp_path).read_text()


def test_sighup_reload_leaves_an_unparseable_edit_alone(tmp_path: Path) -> None:
    # In a running daemon, unlike at start-up, a file that does not parse is not
    # replaced from the backup: it is more likely an edit in progress.
    store = new_store(tmp_path)
    store.apply({"lc": "7"}, Origin.LOCAL)
    path = config_path(tmp_path)
    half = path.read_text().replace("</config>", "<log_level>FINE")
    path.write_text(half)
    with pytest.raises(ConfigFileError) as info:
        store.reload()
    assert info.value.path == str(path)
    assert path.read_text() == half and store.current.log_file_count == 7
    # At start-up the backup is used, as upstream.
    fresh = ConfigStore(Paths.from_root(str(tmp_path)), host=HOST)
    assert fresh.reload().log_file_count == 7
    assert parse_config_xml(path.read_bytes()).values["log_file_count"] == "7"


@pytest.mark.parametrize("uuid,token", [(" uuid-1", "t"), ("uuid-1", "t\u2003"), ("u\x1b", "t")])
def test_an_identity_that_would_not_survive_a_reload_is_refused(tmp_path: Path, uuid: str,
                                                                 token: str) -> None:
    # Values are stored as they are used: config.xml gives them back stripped.
    from iofogd.errors import ConfigValueError
    store = new_store(tmp_path)
    with pytest.raises(ConfigValueError):
        store.set_identity(uuid, token)
    assert store.current.iofog_uuid == "" and file_values(config_path(tmp_path))["iofog_uuid"] == ""
    store.set_identity("uuid-1", "token-1")
    assert ConfigStore(Paths.from_root(str(tmp_path)), host=HOST).load() == store.current


# -- through the daemon -----------------------------------------------------------------------

def info(daemon: RunningDaemon) -> Any:
    status, _, body = daemon.request("GET", "/v2/info")
    assert status == 200
    return body


def sighup_and_wait(daemon: RunningDaemon, key: str, value: str) -> None:
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while info(daemon)[key] != value and time.monotonic() < deadline:
        time.sleep(0.05)


def test_daemon_sighup_reloads_a_hand_edit(daemon: RunningDaemon) -> None:
    path = config_path(Path(daemon.root))
    hand_edit(path, "<status_update_freq>30<", "<status_update_freq>42<")
    sighup_and_wait(daemon, "status-update-frequency", "42")
    assert info(daemon)["status-update-frequency"] == "42"
    assert daemon.wait_log("configuration reloaded")


def test_daemon_api_and_cli_writes_between_a_hand_edit_and_sighup_keep_it(
        daemon: RunningDaemon) -> None:
    path = config_path(Path(daemon.root))
    hand_edit(path, "<status_update_freq>30<", "<status_update_freq>42<")
    # A write through the Local API lands before the admin's SIGHUP ...
    status, _, body = daemon.request("POST", "/v2/config", {"logs-count": "7"})
    assert (status, body) == (200, {})
    # ... then another hand edit, and a write through the CLI.
    hand_edit(path, "<get_changes_freq>60<", "<get_changes_freq>33<")
    out = daemon.cli("config", "-df", "15")
    assert out.returncode == 0 and "New Value is : 15" in out.stdout, out
    values = file_values(path)
    assert (values["status_update_freq"], values["get_changes_freq"]) == ("42", "33")
    assert (values["log_file_count"], values["post_diagnostics_freq"]) == ("7", "15")
    assert backup_path(Path(daemon.root)).read_bytes() == path.read_bytes()
    sighup_and_wait(daemon, "status-update-frequency", "42")
    now = info(daemon)
    assert (now["status-update-frequency"], now["get-changes-frequency"]) == ("42", "33")
    assert (now["log-rolling-file-count"], now["post-diagnostics-frequency"]) == ("7", "15")
    assert f"{path} was changed on disk since it was last read" in daemon.log()


def test_daemon_refuses_a_write_over_an_edit_it_cannot_parse(daemon: RunningDaemon) -> None:
    path = config_path(Path(daemon.root))
    half = path.read_text().replace("<status_update_freq>30</status_update_freq>",
                                    "<status_update_freq>42</status_upd")
    path.write_text(half)
    status, _, body = daemon.request("POST", "/v2/config", {"logs-count": "7"})
    assert status == 500 and str(path) in body["error"], body
    assert path.read_text() == half
    assert f"{path} was changed on disk and cannot be parsed" in daemon.log()
    out = daemon.cli("config", "-lc", "7")
    assert out.returncode == 1 and f"Error updating new config : {path}: changed on disk" in out.stdout, out
    assert path.read_text() == half
    # SIGHUP over the half edit keeps the running configuration (and the file).
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    assert daemon.wait_log(f"reload failed, keeping the current configuration: {path}")
    assert path.read_text() == half
    path.write_text(half.replace("42</status_upd", "42</status_update_freq>"))
    sighup_and_wait(daemon, "status-update-frequency", "42")
    assert info(daemon)["status-update-frequency"] == "42"


def test_daemon_hand_edit_and_sighup_during_a_burst_of_api_writes(daemon: RunningDaemon) -> None:
    # Writes land all the time (bounded: one client, about 2 s); the admin edits
    # and sends SIGHUP in the middle. An editor's save is not atomic (truncate,
    # then write): a write that reads the file half-saved is refused, never
    # written over it.
    path = config_path(Path(daemon.root))
    stop = threading.Event()
    answers: List[int] = []

    def writer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            answers.append(daemon.request("POST", "/v2/config",
                                          {"logs-count": str(1 + i % 50)})[0])

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.5)
        hand_edit(path, "<status_update_freq>30<", "<status_update_freq>42<")
        time.sleep(0.5)
        sighup_and_wait(daemon, "status-update-frequency", "42")
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join()
    assert answers.count(200) > 10 and set(answers) <= {200, 500}, answers
    assert info(daemon)["status-update-frequency"] == "42"
    assert file_values(path)["status_update_freq"] == "42"
    assert "Traceback" not in daemon.log()
