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
