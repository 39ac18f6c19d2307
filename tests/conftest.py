from __future__ import annotations

from typing import Iterator

import pytest

from tests.daemon_process import RunningDaemon


@pytest.fixture
def daemon(tmp_path) -> Iterator[RunningDaemon]:  # type: ignore[no-untyped-def]
    d = RunningDaemon(str(tmp_path / "root")).start()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def inproc_daemon(tmp_path):  # type: ignore[no-untyped-def]
    """The daemon in this process, so a test can reach its state directly (the
    one internal call through which microservice configs enter, for example)."""
    import threading
    import time

    from iofogd.admintoken import ensure_token
    from iofogd.config import ConfigStore
    from iofogd.paths import Paths
    from iofogd.daemon import Daemon, DaemonArgs
    from iofogd.state import RUNNING

    paths = Paths.from_root(str(tmp_path / "root"))
    store = ConfigStore(paths)
    store.load()
    ensure_token(paths.token_file)
    args = DaemonArgs(paths.root, address="127.0.0.1", port=0)
    daemon = Daemon(paths, store, args)
    # daemon=True: a test that fails half-way must not keep pytest alive at exit.
    thread = threading.Thread(target=daemon.run, name="inproc-daemon", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while daemon.state.snapshot().daemon_status != RUNNING and time.monotonic() < deadline:
        time.sleep(0.01)
    daemon.api_port = daemon.server.server_address[1]  # type: ignore[attr-defined]
    try:
        yield daemon
    finally:
        daemon.stop.set()
        thread.join(30)
        assert not thread.is_alive(), "the daemon did not stop within 30 s"
