"""The daemon's logging: stderr plus rotating files in the log directory.

Files are named as upstream names them (docs/host.md#logs): ``iofog-agent.0.log`` is
the newest, then ``.1.log``, ``.2.log`` ...; the disk limit is shared out over
``log_file_count`` files. The rotating handler is written here rather than
taken from ``logging.handlers``: that module imports pickle, queue and socket
handlers the daemon never uses, ~10 ms of start-up on the bench machine (and
its RotatingFileHandler would name the files ``iofog-agent.0.log.1`` and never
rotate a single file at all).
"""
from __future__ import annotations

import logging
import os
import sys

from iofogd.config.schema import java_level, python_log_level
from iofogd.config.value import Config

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Optional

log = logging.getLogger("iofogd")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
EARLY_RECORDS = 10_000   # kept while the config is not known yet
MIN_FILE_BYTES = 1024 * 1024


def log_file_name(directory: str, n: int) -> str:
    return os.path.join(directory, f"iofog-agent.{n}.log")


class LogFile(logging.FileHandler):
    """``iofog-agent.0.log`` up to ``max_bytes``, then shifted to ``.1.log``
    (and so on up to ``count`` files, the oldest dropped) and begun afresh.

    A file that cannot be written (a full disk) is said once on stderr, not
    per record (logging's own handleError prints a traceback for each); the
    daemon goes on either way.
    """

    def __init__(self, directory: str, max_bytes: int, count: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.count = max(1, count)
        self.failing = False
        self._failed = False
        super().__init__(log_file_name(directory, 0), encoding="utf-8")

    def emit(self, record: logging.LogRecord) -> None:
        self._failed = False
        try:
            if self._full(record):
                self._rotate()
        except OSError:
            self.handleError(record)
            return
        super().emit(record)   # calls handleError on failure
        if self.failing and not self._failed:
            self.failing = False
            sys.stderr.write(f"iofogd: writing the log file {self.baseFilename} again\n")

    def _full(self, record: logging.LogRecord) -> bool:
        if self.stream is None:
            return False
        size = len(self.format(record).encode("utf-8", "replace")) + 1
        self.stream.seek(0, os.SEEK_END)
        return self.stream.tell() + size > self.max_bytes

    def _rotate(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        for n in range(self.count - 1, 0, -1):
            older = log_file_name(self.directory, n - 1)
            if os.path.exists(older):
                os.replace(older, log_file_name(self.directory, n))
        # With one file, rotating means starting it again: the limit holds.
        self.stream = open(self.baseFilename, "w", encoding="utf-8")

    def handleError(self, record: logging.LogRecord) -> None:
        self._failed = True
        if not self.failing:
            self.failing = True
            sys.stderr.write(f"iofogd: cannot write the log file {self.baseFilename}: "
                             f"{sys.exc_info()[1]}\n")

    def close(self) -> None:
        try:
            super().close()
        except OSError:
            pass  # what is still buffered for a full disk is lost; stderr had it


class _Early(logging.Handler):
    """Holds what is logged before the config is known."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.records) < EARLY_RECORDS:
            self.records.append(record)


class LogSetup:
    """stderr plus rotating files in the log directory, re-done on config change."""

    def __init__(self) -> None:
        self._file: Optional[LogFile] = None
        root = logging.getLogger()
        self._stderr = logging.StreamHandler(sys.stderr)
        self._stderr.setFormatter(logging.Formatter(LOG_FORMAT))
        # What is logged before the config is known waits here: shown once the
        # daemon starts, dropped when it refuses to (that is one clear line).
        self._early: Optional[_Early] = _Early()
        root.addHandler(self._early)
        root.setLevel(logging.INFO)

    def refused(self) -> None:
        if self._early is not None:
            logging.getLogger().removeHandler(self._early)
            self._early = None

    def apply(self, cfg: Config) -> None:
        root = logging.getLogger()
        if self._early is not None:
            root.removeHandler(self._early)
            root.addHandler(self._stderr)
            for record in self._early.records:
                self._stderr.handle(record)
            self._early = None
        root.setLevel(python_log_level(java_level(cfg.log_level) or 800))
        self.close()
        count = max(1, cfg.log_file_count)
        # Upstream's per-file size: the disk limit shared out over the files (docs/host.md#logs).
        per_file = max(MIN_FILE_BYTES, int(cfg.log_limit_gb * 1024 ** 3 / count))
        try:
            os.makedirs(cfg.log_directory, exist_ok=True)
            handler = LogFile(cfg.log_directory, per_file, count)
        except OSError as exc:
            log.warning("cannot log to %s: %s", cfg.log_directory, exc)
            return
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
        self._file = handler

    def close(self) -> None:
        if self._file is not None:
            logging.getLogger().removeHandler(self._file)
            self._file.close()
            self._file = None
