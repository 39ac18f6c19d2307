"""iofogd.durable: the one way the daemon writes its files."""
from __future__ import annotations

import os
import stat

import pytest

from iofogd.durable import atomic_write, create_once


def _mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_write_creates_with_mode_and_keeps_existing_bits(tmp_path):
    path = str(tmp_path / "sub" / "file.xml")
    atomic_write(path, b"one", mode=0o600)
    assert open(path, "rb").read() == b"one" and _mode(path) == 0o600
    os.chmod(path, 0o644)
    atomic_write(path, b"two")
    assert open(path, "rb").read() == b"two" and _mode(path) == 0o644
    assert os.listdir(tmp_path / "sub") == ["file.xml"]   # no temporary file left


def test_atomic_write_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "file"
    path.write_bytes(b"old")
    (tmp_path / "dir").mkdir()
    with pytest.raises(OSError):
        atomic_write(str(tmp_path / "dir"), b"new")   # renaming a file over a directory fails
    assert path.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["dir", "file"]


def test_create_once_never_replaces(tmp_path):
    path = str(tmp_path / "token")
    assert create_once(path, b"first", 0o640) is True
    assert create_once(path, b"second", 0o640) is False
    assert open(path, "rb").read() == b"first" and _mode(path) == 0o640
    assert os.listdir(tmp_path) == ["token"]


def test_before_replace_runs_with_the_new_content_durable_and_can_stop_the_rename(tmp_path):
    path = str(tmp_path / "file.xml")
    atomic_write(path, b"one")
    seen = []

    def check() -> None:
        seen.append(open(path, "rb").read())          # still the old file at this point
        temps = [n for n in os.listdir(tmp_path) if n != "file.xml"]
        seen.append(open(tmp_path / temps[0], "rb").read())

    atomic_write(path, b"two", before_replace=check)
    assert seen == [b"one", b"two"] and open(path, "rb").read() == b"two"

    def refuse() -> None:
        raise RuntimeError("changed by someone else")

    with pytest.raises(RuntimeError):
        atomic_write(path, b"three", before_replace=refuse)
    assert open(path, "rb").read() == b"two" and os.listdir(tmp_path) == ["file.xml"]
