"""iofogd.admintoken: the Local API token file, created once and checked per request (docs/local-api.md#checks)."""
from __future__ import annotations

import stat
from pathlib import Path

import pytest

from iofogd.admintoken import TokenFile, ensure_token, read_token
from iofogd.errors import ConfigFileError


def test_token_is_created_once_with_mode_0640(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "iofog-agent" / "local-api"
    token = ensure_token(str(path))
    assert len(token) == 32 and token.isascii() and token.isalnum()
    assert path.read_bytes() == token.encode()                  # no newline
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    before = path.stat()
    assert ensure_token(str(path)) == token
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert read_token(str(path)) == token
    assert ensure_token(str(tmp_path / "other")) != token
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_existing_token_is_never_regenerated(tmp_path: Path) -> None:
    path = tmp_path / "local-api"
    path.write_text("MyOwnToken\n")
    assert ensure_token(str(path)) == "MyOwnToken"
    assert path.read_text() == "MyOwnToken\n"
    path.write_text("")
    with pytest.raises(ConfigFileError):
        ensure_token(str(path))                                 # an empty file is an error, not replaced
    assert path.read_text() == ""


def test_read_token_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError) as info:
        read_token(str(tmp_path / "missing"))
    assert info.value.path == str(tmp_path / "missing")
    (tmp_path / "blank").write_text("  \n")
    with pytest.raises(ConfigFileError):
        read_token(str(tmp_path / "blank"))


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_file_matches_exactly_and_follows_the_file(tmp_path: Path) -> None:
    path = tmp_path / "local-api"
    clock = FakeClock()
    tokens = TokenFile(str(path), clock=clock)
    assert tokens.current() == "" and not tokens.matches("anything")   # no file: nothing matches
    path.write_text("Secret1")
    clock.now += TokenFile.RECHECK_SECONDS
    assert tokens.matches("Secret1") and tokens.matches("Bearer Secret1")
    assert not tokens.matches("secret1")                      # exact (upstream ignored case)
    assert not tokens.matches("") and not tokens.matches("Bearer ")
    path.write_text("Other22")                               # replaced by the admin
    clock.now += TokenFile.RECHECK_SECONDS
    assert tokens.matches("Other22") and not tokens.matches("Secret1")
    path.write_text("")
    clock.now += TokenFile.RECHECK_SECONDS
    assert not tokens.matches("")                             # an empty file matches nothing
    path.unlink()
    clock.now += TokenFile.RECHECK_SECONDS
    assert tokens.current() == ""                             # removed: every admin request refused


def test_token_file_is_looked_at_once_per_recheck_interval(tmp_path: Path) -> None:
    # The property that keeps a syscall (and a GIL hand-off) out of every admin request:
    # within RECHECK_SECONDS the file is not looked at; after it, a replacement is obeyed.
    path = tmp_path / "local-api"
    path.write_text("Secret1")
    clock = FakeClock()
    tokens = TokenFile(str(path), clock=clock)
    assert tokens.matches("Secret1")
    path.write_text("Other22")
    clock.now += TokenFile.RECHECK_SECONDS * 0.9
    assert tokens.matches("Secret1") and not tokens.matches("Other22")
    clock.now += TokenFile.RECHECK_SECONDS * 0.1
    assert tokens.matches("Other22") and not tokens.matches("Secret1")
