"""The message archive on disk, in the Java agent's layout (docs/iomessage.md#archive).

``<disk_directory>messages/archive/<publisher>_<ts>.idx`` and ``.iomsg``: one
pair per publisher at a time, ``<ts>`` the timestamp of its first message.  An
``.idx`` record is 41 bytes, the message's 33-byte binary header and the 8-byte
big-endian offset of its data section in the ``.iomsg`` file, which holds the
data sections one after the other.  A new pair begins when the data file would
reach 1,000,000 bytes; at start-up the newest pair of a publisher is reused if
its index is under 41,000 bytes, as upstream does.  A gateway moving from the
Java agent keeps its history: its files are read as they are.

What we add, and why:

- Crash safety.  Data is written before its index record, both are flushed to
  disk (fdatasync) before anyone is told the message is stored, and the index
  of a pair reopened after a crash is cut back to its last whole record (a
  torn record, or one pointing past the data file).  A kill -9 loses only what
  nobody was told about.
- A full disk (ENOSPC, EDQUOT, EFBIG) cuts every file of the failed write back
  to its length before it, and raises :class:`ArchiveFull`: never a torn record.
- The message storage limit (``disk_consumption_limit``, GB, counted by daemon.py as 1024**3 bytes,
  docs/host.md#figures): when the archive grows past it, whole pairs go, oldest first (by the
  timestamp in their names), until usage is back under 75% of the limit, with
  one log line per run.  A publisher's open pair is never removed.

Not thread-safe by itself: :class:`iofogd.bus.store.Store` serialises writers.
"""
from __future__ import annotations

import errno
import logging
import os
import struct

from iofogd.bus.message import HEADER_SIZE, VERSION, IoMessage, data_length, decode_parts, encode_parts
from iofogd.errors import ArchiveError, ArchiveFull, MessageError

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Callable, Dict, Iterator, List, Optional, Tuple

log = logging.getLogger(__name__)

RECORD_SIZE = HEADER_SIZE + 8          # header + data offset (docs/iomessage.md#archive)
ROLL_OVER_BYTES = 1_000_000           # a data file never reaches this (docs/iomessage.md#archive)
REUSE_INDEX_BELOW = 41_000            # at start-up, reuse the newest pair under this (docs/iomessage.md#archive)
CLEAN_DOWN_TO = 0.75                  # of the limit, after a clean-up (docs/host.md#figures)
FULL_ERRNOS = frozenset((errno.ENOSPC, errno.EDQUOT, errno.EFBIG))
_OFFSET = struct.Struct(">Q")


def archive_dir(disk_directory: str) -> str:
    return os.path.join(disk_directory, "messages", "archive")


def pair_name(publisher: str, ts: int) -> str:
    return f"{publisher}_{ts}"


def parse_pair(filename: str) -> Optional[Tuple[str, int]]:
    """``(publisher, ts)`` of an ``.idx`` file name, None for other files."""
    if not filename.endswith(".idx"):
        return None
    publisher, sep, ts = filename[: -len(".idx")].rpartition("_")
    if not sep or not publisher or not ts.isdigit():
        return None
    return publisher, int(ts)


def raise_for_write(exc: OSError, what: str) -> None:
    """An OSError while writing, as the archive's error (full disk: ArchiveFull)."""
    if exc.errno in FULL_ERRNOS:
        raise ArchiveFull(f"no space left to store messages ({what}: {exc.strerror})") from exc
    raise ArchiveError(f"cannot store messages ({what}: {exc})") from exc


class _OpenPair:
    """The pair a publisher appends to now; the file descriptors stay open."""

    __slots__ = ("publisher", "ts", "idx_fd", "data_fd", "idx_size", "data_size")

    def __init__(self, publisher: str, ts: int, idx_fd: int, data_fd: int, idx_size: int, data_size: int) -> None:
        self.publisher = publisher
        self.ts = ts
        self.idx_fd = idx_fd
        self.data_fd = data_fd
        self.idx_size = idx_size
        self.data_size = data_size

    def close(self) -> None:
        for fd in (self.idx_fd, self.data_fd):
            try:
                os.close(fd)
            except OSError:
                pass


def _valid_length(idx: bytes, data_size: int) -> int:
    """How many bytes of an index are whole records that point inside the data.

    Offsets must not go back; they need not be contiguous: the Java agent
    counted string lengths in UTF-16 units, so a record with non-ASCII text
    announces fewer data bytes than it has, and its successor's offset is
    further on than its header says.
    """
    good = 0
    previous = 0
    for pos in range(0, len(idx) - RECORD_SIZE + 1, RECORD_SIZE):
        header = idx[pos : pos + HEADER_SIZE]
        if header[:2] != b"\x00\x04":
            break
        (offset,) = _OFFSET.unpack_from(idx, pos + HEADER_SIZE)
        if offset < previous or offset + data_length(header) > data_size:
            break
        previous = offset
        good = pos + RECORD_SIZE
    return good


class MessageArchive:
    """Every publisher's pairs under one directory."""

    def __init__(self, directory: str, limit_bytes: Callable[[], float] = lambda: 0.0) -> None:
        self.directory = directory
        self.limit_bytes = limit_bytes     # 0: no limit
        self._open: Dict[str, _OpenPair] = {}
        self._usage = 0
        self._dirty: Dict[int, _OpenPair] = {}   # fds written since the last sync
        # Pairs rolled over since the last sync: open until their writes are synced (or cut
        # back), so sync never meets a closed (or re-used) descriptor and nothing is left unsynced.
        self._retired: List[_OpenPair] = []
        self._dir_dirty = False
        self._last: Tuple[List[Tuple[_OpenPair, int, int]], List[_OpenPair]] = ([], [])

    # -- start-up ------------------------------------------------------------------------

    def load(self) -> None:
        """Create the directory, measure it, repair each publisher's newest pair and reuse it if small."""
        os.makedirs(self.directory, exist_ok=True)
        newest: Dict[str, int] = {}
        usage = 0
        for name in os.listdir(self.directory):
            try:
                usage += os.stat(os.path.join(self.directory, name)).st_size
            except OSError:
                continue
            parsed = parse_pair(name)
            if parsed is not None and parsed[1] >= newest.get(parsed[0], -1):
                newest[parsed[0]] = parsed[1]
        self._usage = usage
        for publisher, ts in newest.items():
            self._repair(publisher, ts)

    def _paths(self, publisher: str, ts: int) -> Tuple[str, str]:
        base = os.path.join(self.directory, pair_name(publisher, ts))
        return base + ".idx", base + ".iomsg"

    def _repair(self, publisher: str, ts: int) -> None:
        idx_path, data_path = self._paths(publisher, ts)
        try:
            with open(idx_path, "rb") as f:
                idx = f.read()
            data_size = os.path.getsize(data_path) if os.path.exists(data_path) else 0
        except OSError as exc:
            log.warning("archive: cannot read %s: %s", idx_path, exc)
            return
        good = _valid_length(idx, data_size)
        if good != len(idx):
            # Only the index is cut: the data file is left as it is (bytes behind its last
            # record are never referenced; new records point past them), because a Java
            # record with non-ASCII text looks shorter than it is (see _valid_length).
            log.warning("archive: %s ended with an incomplete write (index %d of %d bytes); cut back",
                        pair_name(publisher, ts), good, len(idx))
            os.truncate(idx_path, good)
            self._usage -= len(idx) - good
        if good < REUSE_INDEX_BELOW and data_size < ROLL_OVER_BYTES:
            self._open[publisher] = self._open_pair(publisher, ts, good, data_size)

    def _open_pair(self, publisher: str, ts: int, idx_size: int, data_size: int) -> _OpenPair:
        idx_path, data_path = self._paths(publisher, ts)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        idx_fd = os.open(idx_path, flags, 0o644)
        try:
            data_fd = os.open(data_path, flags, 0o644)
        except OSError:
            os.close(idx_fd)
            raise
        return _OpenPair(publisher, ts, idx_fd, data_fd, idx_size, data_size)

    # -- writing ---------------------------------------------------------------------------

    def append(self, messages: List[Tuple[str, int, bytes]]) -> None:
        """Write the messages ``(publisher, timestamp, binary form)`` of one batch (not yet durable: :meth:`sync` makes them so).

        On any error, every file of this call is cut back to its length before
        it and the error is raised: the archive stays whole.
        """
        undo: List[Tuple[_OpenPair, int, int]] = []
        fresh: List[_OpenPair] = []
        try:
            by_publisher: Dict[str, List[Tuple[bytes, bytes, int]]] = {}
            for publisher, timestamp, binary in messages:
                by_publisher.setdefault(publisher, []).append((binary[:HEADER_SIZE], binary[HEADER_SIZE:], timestamp))
            for publisher, parts in by_publisher.items():
                self._append_publisher(publisher, parts, undo, fresh)
            self._last = (undo, fresh)
        except OSError as exc:
            self._undo(undo, fresh)
            raise_for_write(exc, "message archive")
        except BaseException:
            self._undo(undo, fresh)
            raise

    def _append_publisher(
        self, publisher: str, parts: List[Tuple[bytes, bytes, int]],
        undo: List[Tuple[_OpenPair, int, int]], fresh: List[_OpenPair],
    ) -> None:
        i = 0
        while i < len(parts):
            pair = self._open.get(publisher)
            if pair is None or pair.data_size + len(parts[i][1]) >= ROLL_OVER_BYTES and pair.data_size > 0:
                if pair is not None:
                    del self._open[publisher]
                    if pair.data_fd in self._dirty or pair.idx_fd in self._dirty:
                        self._retired.append(pair)
                    else:
                        pair.close()
                pair = self._new_pair(publisher, parts[i][2])   # named after its first message
                fresh.append(pair)
            undo.append((pair, pair.idx_size, pair.data_size))
            idx_out: List[bytes] = []
            data_out: List[bytes] = []
            offset = pair.data_size
            while i < len(parts) and (offset == pair.data_size or offset + len(parts[i][1]) < ROLL_OVER_BYTES):
                header, data, _ = parts[i]
                idx_out.append(header + _OFFSET.pack(offset))
                data_out.append(data)
                offset += len(data)
                i += 1
            data_blob = b"".join(data_out)
            idx_blob = b"".join(idx_out)
            _write_all(pair.data_fd, data_blob)   # data first: an index never points at nothing
            pair.data_size += len(data_blob)
            self._usage += len(data_blob)
            _write_all(pair.idx_fd, idx_blob)
            pair.idx_size += len(idx_blob)
            self._usage += len(idx_blob)
            self._dirty[pair.data_fd] = pair
            self._dirty[pair.idx_fd] = pair

    def _new_pair(self, publisher: str, ts: int) -> _OpenPair:
        # Two pairs begun in one millisecond would share a name: take the next free one.
        while os.path.exists(self._paths(publisher, ts)[0]):
            ts += 1
        pair = self._open_pair(publisher, ts, 0, 0)
        self._open[publisher] = pair
        self._dir_dirty = True
        return pair

    def rollback(self) -> None:
        """Cut back what the last :meth:`append` wrote (a later step of its batch failed)."""
        undo, fresh = self._last
        self._last = ([], [])
        self._undo(undo, fresh)

    def _undo(self, undo: List[Tuple[_OpenPair, int, int]], fresh: List[_OpenPair]) -> None:
        for pair, idx_size, data_size in reversed(undo):
            try:
                os.ftruncate(pair.idx_fd, idx_size)
                os.ftruncate(pair.data_fd, data_size)
            except OSError as exc:   # nothing more we can do; load() repairs at the next start
                log.error("archive: cannot cut back %s: %s", pair_name(pair.publisher, pair.ts), exc)
            self._usage -= (pair.idx_size - idx_size) + (pair.data_size - data_size)
            pair.idx_size, pair.data_size = idx_size, data_size
        for pair in fresh:
            if pair.idx_size == 0:
                self._open.pop(pair.publisher, None)
                self._dirty.pop(pair.idx_fd, None)
                self._dirty.pop(pair.data_fd, None)
                pair.close()
                for path in self._paths(pair.publisher, pair.ts):
                    try:
                        os.unlink(path)
                    except OSError:
                        pass

    def sync(self) -> None:
        """Make what :meth:`append` wrote durable (one fdatasync per file written)."""
        dirty, self._dirty = self._dirty, {}
        try:
            for fd in dirty:
                os.fdatasync(fd)
            if self._dir_dirty:
                _sync_dir(self.directory)
                self._dir_dirty = False
        except OSError as exc:
            raise_for_write(exc, "message archive sync")   # rollback() closes the retired pairs
        self._close_retired()

    def _close_retired(self) -> None:
        for pair in self._retired:
            self._dirty.pop(pair.idx_fd, None)
            self._dirty.pop(pair.data_fd, None)
            pair.close()
        self._retired = []

    # -- the storage limit (docs/host.md#figures) --------------------------------------------

    @property
    def usage(self) -> int:
        return self._usage

    def enforce_limit(self) -> int:
        """Remove the oldest closed pairs while over the limit; the bytes freed."""
        limit = self.limit_bytes()
        if limit <= 0 or self._usage <= limit:
            return 0
        target = self._usage - CLEAN_DOWN_TO * limit
        open_names = {pair_name(p.publisher, p.ts) for p in self._open.values()}
        pairs = sorted(
            (parsed[1], parsed[0]) for parsed in map(parse_pair, _listdir(self.directory)) if parsed is not None
        )
        freed = 0
        removed = 0
        for ts, publisher in pairs:
            if freed >= target:
                break
            if pair_name(publisher, ts) in open_names:
                continue
            for path in self._paths(publisher, ts):
                try:
                    size = os.path.getsize(path)
                    os.unlink(path)
                    freed += size
                except OSError:
                    pass
            removed += 1
        self._usage -= freed
        log.warning(
            "message archive over its limit of %.0f bytes: removed the %d oldest file pairs (%d bytes)",
            limit, removed, freed,
        )
        return freed

    # -- reading (docs/iomessage.md#archive) ---------------------------------------------------

    def query(self, publisher: str, start: int, end: int, max_bytes: int = 16 << 20) -> List[IoMessage]:
        """The publisher's messages with ``start <= timestamp <= end``, oldest first.

        Stops after ``max_bytes`` of data (the caller sees where from the last
        timestamp), where upstream stopped when its heap ran low.
        """
        out: List[IoMessage] = []
        if start > end:
            return out
        total = 0
        for ts in self._files_for(publisher, start, end):
            for message in self._read_pair(publisher, ts):
                if start <= message.timestamp <= end:
                    out.append(message)
                    total += HEADER_SIZE + len(message.contentdata) + len(message.contextdata)
                    if total >= max_bytes:
                        return out
        return out

    def _files_for(self, publisher: str, start: int, end: int) -> List[int]:
        stamps = sorted(
            ts for p, ts in (parse_pair(n) or ("", 0) for n in _listdir(self.directory)) if p == publisher
        )
        chosen: List[int] = []
        # Newest back: every file begun inside the window, and the first one begun
        # before it (it may hold messages from after ``start``), as upstream.
        for ts in reversed(stamps):
            if ts > end:
                continue
            chosen.append(ts)
            if ts < start:
                break
        return list(reversed(chosen))

    def _read_pair(self, publisher: str, ts: int) -> Iterator[IoMessage]:
        idx_path, data_path = self._paths(publisher, ts)
        try:
            with open(idx_path, "rb") as f:
                idx = f.read()
            with open(data_path, "rb") as f:
                data = f.read()
        except OSError as exc:
            log.warning("archive: cannot read %s: %s", idx_path, exc)
            return
        for pos in range(0, len(idx) - RECORD_SIZE + 1, RECORD_SIZE):
            header = idx[pos : pos + HEADER_SIZE]
            (offset,) = _OFFSET.unpack_from(idx, pos + HEADER_SIZE)
            if header[:2] != struct.pack(">H", VERSION):
                return   # upstream aborts the file too
            try:
                yield decode_parts(header, data, offset)
            except MessageError:
                return   # a record past the data: the torn end of a file

    def append_messages(self, messages: List[IoMessage]) -> None:
        """:meth:`append` for messages not encoded yet."""
        self.append([(msg.publisher, msg.timestamp, b"".join(encode_parts(msg))) for msg in messages])

    def close(self) -> None:
        self._close_retired()
        for pair in self._open.values():
            pair.close()
        self._open.clear()


def _listdir(directory: str) -> List[str]:
    try:
        return os.listdir(directory)
    except OSError:
        return []


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _sync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
