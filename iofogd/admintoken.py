"""The Local API admin token: created once, read, and checked per request (docs/local-api.md#checks, docs/host.md#files)."""
from __future__ import annotations

import logging
import os
import string
import threading
import time

try:
    # What hmac.compare_digest is without OpenSSL: the same constant-time compare,
    # without importing hashlib and OpenSSL's _hashlib (0.7 MiB of every daemon's RSS).
    from _operator import _compare_digest as compare_digest
except ImportError:  # an interpreter without CPython's _operator
    from hmac import compare_digest  # type: ignore[no-redef]

from iofogd.durable import create_once
from iofogd.errors import ConfigFileError

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Callable, Optional

logger = logging.getLogger(__name__)

_TOKEN_ALPHABET = string.ascii_letters + string.digits
TOKEN_LENGTH = 32


def ensure_token(path: str) -> str:
    """Create the Local API admin token if missing (32 × [A-Za-z0-9], mode 0640, no newline).

    Never regenerated when present (upstream regenerates it on every package
    upgrade, breaking clients that cached it: docs/host.md#files, docs/compatibility.md#fixed). Created atomically:
    written aside, then hard-linked into place, so a crash never leaves a
    half-written token and a concurrent creator's token wins.
    """
    try:
        return read_token(path)
    except ConfigFileError:
        if os.path.exists(path):
            raise
    try:
        token = _create_token(path)
    except OSError as exc:
        # A full disk or a read-only /etc: say which file and why, in one line.
        raise ConfigFileError(path, f"cannot create the Local API token: {exc.strerror or exc}") from exc
    if token is None:
        return read_token(path)
    logger.info("created the Local API token in %s", path)
    return token


def _create_token(path: str) -> Optional[str]:
    """The new token, or None when a concurrent creator's token won."""
    # secrets.choice is SystemRandom().choice (os.urandom); secrets itself would
    # import hmac and OpenSSL's _hashlib (~3 ms, 0.7 MiB) for nothing else.
    from random import SystemRandom

    choice = SystemRandom().choice
    token = "".join(choice(_TOKEN_ALPHABET) for _ in range(TOKEN_LENGTH))
    return token if create_once(path, token.encode("ascii"), 0o640) else None


def read_token(path: str) -> str:
    """The token: the file's first line, stripped; ConfigFileError if missing, unreadable or empty."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            token = f.readline().strip()
    except OSError as exc:
        raise ConfigFileError(path, f"cannot read the Local API token: {exc.strerror or exc}") from None
    if not token:
        raise ConfigFileError(path, "the Local API token file is empty")
    return token


class TokenFile:
    """The admin token in etc/iofog-agent/local-api.

    Compared exactly and in constant time (upstream compared
    case-insensitively, docs/local-api.md#checks). The file is looked at
    (one stat) at most once per RECHECK_SECONDS and re-read only when it
    changed, so an admin who replaces it is obeyed within that second.
    Not a stat per request: that syscall releases the GIL in the middle of
    every admin request, one more thread hand-off each, which cost 15-30 %
    of the Local API's throughput under 32 connections (docs/local-api.md#checks).
    """

    RECHECK_SECONDS = 1.0

    def __init__(self, path: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        # (when the file was last looked at, the token then): one tuple, read
        # without the lock, so a request between re-checks takes no lock at all.
        self._seen: tuple[float, str] = (float("-inf"), "")

    def current(self) -> str:
        now = self._clock()
        looked_at, token = self._seen
        if now - looked_at < self.RECHECK_SECONDS:
            return token
        with self._lock:
            try:
                st = os.stat(self.path)
            except OSError:
                self._stamp, token = None, ""
            else:
                stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
                token = self._seen[1]
                if stamp != self._stamp:
                    try:
                        token = read_token(self.path)
                    except ConfigFileError:
                        token = ""
                    self._stamp = stamp
            self._seen = (now, token)
            return token

    def matches(self, presented: str) -> bool:
        token = self.current()
        if presented.startswith("Bearer "):
            presented = presented[len("Bearer "):]
        if not token or not presented:
            return False
        return compare_digest(presented.strip().encode(), token.encode())
