"""iofogd.admintoken: the Local API token file, created once and checked per request (spec 1.5)."""
from __future__ import annotations

import os
import stat
import string
from pathlib import Path

import pytest

from iofogd.admintoken import TOKEN_LENGTH, TokenFile, ensure_token, read_token
from iofogd.errors import ConfigFileError


def test_ensure_token_creates_once_and_never_regenerates(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "local-api"
    token = ensure_token(str(path))
    assert len(token) == TOKEN_LENGTH and set(token) <= set(string.ascii_letters + string.digits)
    assert path.read_bytes() == token.encode()                 # no newline
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert ensure_token(str(path)) == token
    path.write_text("admin-chosen\n")
    assert ensure_token(str(path)) == "admin-chosen"           # an admin's token is kept


def test_read_token_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="cannot read the Local API token"):
        read_token(str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigFileError, match="empty"):
        read_token(str(empty))
    with pytest.raises(ConfigFileError):
        ensure_token(str(empty))                               # present but empty: not replaced


def test_token_file_matches_exactly_and_follows_the_file(tmp_path: Path) -> None:
    path = tmp_path / "local-api"
    tokens = TokenFile(str(path))
    assert tokens.current() == "" and not tokens.matches("anything")   # no file: nothing matches
    path.write_text("Secret1")
    assert tokens.matches("Secret1") and tokens.matches("Bearer Secret1")
    assert not tokens.matches("secret1")                      # exact (upstream ignored case)
    assert not tokens.matches("") and not tokens.matches("Bearer ")
    path.write_text("Other22")                               # replaced by the admin: obeyed at once
    assert tokens.matches("Other22") and not tokens.matches("Secret1")
    path.write_text("")
    assert not tokens.matches("")                             # an empty file matches nothing
