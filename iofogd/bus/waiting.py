"""What waits for each receiver, on disk: one append-only queue file per receiver.

``<disk_directory>messages/waiting/<receiver>.<base>.q`` holds entries
``[4-byte length][4-byte CRC-32][binary ioMessage]``; ``<receiver>.pos`` holds
the 8-byte position up to which the receiver has consumed (acknowledged, or
taken with /v2/messages/next).  Positions are *logical*: file offset plus
``base``, so they only ever grow, and a consumer's position stays valid when
the file is compacted (the consumed head dropped into a new file with a new
base).  Upstream kept these in the AMQP router's memory; a receiver that never
read grew the router.  Here memory holds only positions; readers take a
bounded window with :meth:`WaitingQueue.read`.

Durability: the writer (:class:`iofogd.bus.store.Store`) appends a batch and
fdatasyncs before anyone hears "okay".  The position file is written without
fsync: after a crash it may lag, which means duplicates, never loss.  A torn
entry at the end after a crash fails its length or CRC and is cut off at
start-up.
"""
from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from urllib.parse import quote, unquote

from iofogd.bus.archive import raise_for_write

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import List

log = logging.getLogger(__name__)

_ENTRY = struct.Struct(">II")
_POS = struct.Struct(">Q")
COMPACT_AFTER = 1 << 20     # consumed bytes at the head of a file before it is compacted
COMPACT_TAIL_MAX = 1 << 18  # ... if no more than this is left to copy
READ_CHUNK = 1 << 16
MAX_ENTRY = 1 << 30


def waiting_dir(disk_directory: str) -> str:
    return os.path.join(disk_directory, "messages", "waiting")


def encode_entry(message: bytes) -> bytes:
    return _ENTRY.pack(len(message), zlib.crc32(message)) + message


class Entry:
    """One waiting message: where it starts, where the next begins, its bytes."""

    __slots__ = ("start", "end", "data")

    def __init__(self, start: int, end: int, data: bytes) -> None:
        self.start = start
        self.end = end
        self.data = data


class WaitingQueue:
    """One receiver's queue file and consumed position. Thread-safe."""

    def __init__(self, directory: str, receiver: str) -> None:
        self.directory = directory
        self.receiver = receiver
        self._name = quote(receiver, safe="-_")
        self._lock = threading.Lock()
        self._fd = -1
        self._base = 0
        self._size = 0        # bytes in the file that are durable and whole
        self._consumed = 0    # logical
        self._pos_fd = -1
        self._appending = False   # appended, not yet synced and published: no compaction now
        self._open()

    # -- files -----------------------------------------------------------------------------

    def _queue_path(self, base: int) -> str:
        return os.path.join(self.directory, f"{self._name}.{base}.q")

    def _open(self) -> None:
        bases = []
        prefix = self._name + "."
        for name in os.listdir(self.directory):
            if name.startswith(prefix) and name.endswith(".q") and name[len(prefix) : -2].isdigit():
                bases.append(int(name[len(prefix) : -2]))
        base = max(bases) if bases else 0
        for old in bases:
            if old != base:   # a compaction that was interrupted after the new file was in place
                os.unlink(self._queue_path(old))
        pos_path = os.path.join(self.directory, f"{self._name}.pos")
        self._pos_fd = os.open(pos_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        raw = os.pread(self._pos_fd, _POS.size, 0)
        consumed = _POS.unpack(raw)[0] if len(raw) == _POS.size else base
        self._fd = os.open(
            self._queue_path(base), os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0), 0o644
        )
        self._base = base
        size = os.fstat(self._fd).st_size
        consumed = max(base, min(consumed, base + size))
        self._consumed = consumed
        good = self._scan(consumed - base, size)
        if good != size:
            log.warning("waiting queue of %s: cut %d torn bytes at its end", self.receiver, size - good)
            os.ftruncate(self._fd, good)
        self._size = good

    def _scan(self, offset: int, size: int) -> int:
        """The end of the last whole entry from ``offset`` on."""
        while offset + _ENTRY.size <= size:
            length, crc = _ENTRY.unpack(os.pread(self._fd, _ENTRY.size, offset))
            end = offset + _ENTRY.size + length
            if length > MAX_ENTRY or end > size:
                break
            if zlib.crc32(os.pread(self._fd, length, offset + _ENTRY.size)) != crc:
                break
            offset = end
        return offset

    # -- writer side (the Store's commit thread) ------------------------------------------------

    def append(self, blob: bytes) -> int:
        """Append encoded entries (not yet durable); the file size before, for :meth:`undo`."""
        with self._lock:
            before = self._size
            self._appending = True
            try:
                view = memoryview(blob)
                while view:
                    view = view[os.write(self._fd, view):]
            except OSError as exc:
                os.ftruncate(self._fd, before)
                self._appending = False
                raise_for_write(exc, f"waiting queue of {self.receiver}")
            return before

    def undo(self, size: int) -> None:
        with self._lock:
            os.ftruncate(self._fd, size)
            self._appending = False

    def sync(self) -> None:
        try:
            os.fdatasync(self._fd)
        except OSError as exc:
            raise_for_write(exc, f"waiting queue of {self.receiver}")

    def publish(self) -> None:
        """What was appended and synced is now visible to readers."""
        with self._lock:
            self._size = os.fstat(self._fd).st_size
            self._appending = False

    # -- reader side ------------------------------------------------------------------------------

    @property
    def consumed(self) -> int:
        with self._lock:
            return self._consumed

    @property
    def end(self) -> int:
        with self._lock:
            return self._base + self._size

    def waiting_bytes(self) -> int:
        with self._lock:
            return self._base + self._size - self._consumed

    def read(self, start: int, max_count: int, max_bytes: int = 1 << 20) -> List[Entry]:
        """Up to ``max_count`` entries from logical position ``start`` (at least one if any)."""
        out: List[Entry] = []
        with self._lock:
            start = max(start, self._base)
            offset = start - self._base
            total = 0
            # A small window (a socket refilled after one ACK) reads a small chunk:
            # copying 64 KiB to send one message cost more than the message.
            want = max(4096, min(READ_CHUNK, max_count * 512, max_bytes + _ENTRY.size))
            while offset + _ENTRY.size <= self._size and len(out) < max_count and (not out or total < max_bytes):
                chunk = os.pread(self._fd, min(want, self._size - offset), offset)
                pos = 0
                while pos + _ENTRY.size <= len(chunk) and len(out) < max_count:
                    length, _ = _ENTRY.unpack_from(chunk, pos)
                    end = pos + _ENTRY.size + length
                    if end > len(chunk):
                        if pos == 0:   # one entry larger than the chunk
                            data = os.pread(self._fd, length, offset + _ENTRY.size)
                            out.append(Entry(self._base + offset, self._base + offset + _ENTRY.size + length, data))
                            total += length
                            pos = _ENTRY.size + length
                        break
                    out.append(Entry(self._base + offset + pos, self._base + offset + end,
                                     chunk[pos + _ENTRY.size : end]))
                    total += length
                    pos = end
                    if total >= max_bytes:
                        break
                offset += pos
        return out

    def consume_to(self, position: int) -> None:
        """Everything before ``position`` is consumed; may compact the file."""
        with self._lock:
            if position <= self._consumed:
                return
            self._consumed = min(position, self._base + self._size)
            os.pwrite(self._pos_fd, _POS.pack(self._consumed), 0)
            head = self._consumed - self._base
            tail = self._size - head
            # A short tail is cheap to copy; a long one is copied once the head is
            # at least as long (each byte is then copied O(1) times overall).
            if not self._appending and head >= COMPACT_AFTER and (tail <= COMPACT_TAIL_MAX or tail <= head):
                self._compact(head)

    def drop_oldest(self, nbytes: int) -> tuple[int, int]:
        """Consume at least ``nbytes`` of the oldest waiting messages (the storage limit);
        ``(messages, bytes)`` dropped."""
        count = 0
        start = position = self.consumed
        while position - start < nbytes:
            entries = self.read(position, 1024, 1 << 20)
            if not entries:
                break
            for entry in entries:
                position = entry.end
                count += 1
                if position - start >= nbytes:
                    break
        self.consume_to(position)
        return count, position - start

    def _compact(self, head: int) -> None:
        """Copy the unconsumed tail to a new file whose base is the consumed position."""
        new_base = self._base + head
        tail = self._size - head
        tmp = self._queue_path(new_base) + ".tmp"
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                offset = head
                while offset < self._size:   # in chunks: a long tail never sits in memory whole
                    chunk = os.pread(self._fd, min(1 << 20, self._size - offset), offset)
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
                    offset += len(chunk)
                os.fdatasync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self._queue_path(new_base))
            new_fd = os.open(self._queue_path(new_base), os.O_RDWR | os.O_APPEND | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:   # the old file stays in use; try again at the next consume
            log.warning("waiting queue of %s: compaction failed: %s", self.receiver, exc)
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return
        old_path = self._queue_path(self._base)
        os.close(self._fd)
        self._fd, self._base, self._size = new_fd, new_base, tail
        os.unlink(old_path)

    def close(self) -> None:
        with self._lock:
            for fd in (self._fd, self._pos_fd):
                if fd >= 0:
                    os.close(fd)
            self._fd = self._pos_fd = -1


def receivers_on_disk(directory: str) -> List[str]:
    """The receivers that have a queue file (at start-up: they may have messages waiting)."""
    out = set()
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    for name in names:
        if name.endswith(".q"):
            stem = name[:-2].rpartition(".")[0]
            if stem:
                out.add(unquote(stem))
    return sorted(out)

