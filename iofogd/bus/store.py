"""Group commit: every published message is on disk before anyone hears about it.

Publishers hand a message and its local receivers to :meth:`Store.submit`
(or the blocking :meth:`Store.store`). One commit thread takes everything that
arrived while it was busy as one batch, appends it to the archive (the
publisher's ``.idx``/``.iomsg`` pair) and to each receiver's waiting queue,
flushes each file once (one fdatasync per file per batch, whatever the batch
size, so throughput grows with load), and only then completes the batch: the
publishers' callbacks run (REST answers "okay", the socket sends its receipt)
and the listeners hear which receivers have new messages.

A batch that fails (a full disk) is cut back everywhere and each of its
publishers gets the error; nothing half-written stays. Backpressure: while
more than ``max_pending_bytes`` wait for the commit thread, submit blocks.
"""
from __future__ import annotations

import logging
import os
import threading

from iofogd.bus.archive import CLEAN_DOWN_TO, MessageArchive, archive_dir
from iofogd.bus.message import IoMessage, encode
from iofogd.bus.waiting import WaitingQueue, encode_entry, receivers_on_disk, waiting_dir
from iofogd.errors import ArchiveError

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

    Done = Callable[[Optional[ArchiveError]], None]

log = logging.getLogger(__name__)


class _Job:
    __slots__ = ("message", "binary", "receivers", "archive", "done")

    def __init__(self, message: IoMessage, receivers: Sequence[str], archive: bool, done: Done,
                 binary: Optional[bytes] = None) -> None:
        self.message = message
        self.binary = encode(message) if binary is None else binary   # MessageError here, in the publisher's thread
        self.receivers = receivers
        self.archive = archive
        self.done = done


def _ignore(error: Optional[ArchiveError]) -> None:
    """The completion of a job whose batch-mate reports for it (:meth:`Store.store_many`)."""


class _Waiter:
    """Turns the callback of a blocking :meth:`Store.store` into a wait."""

    __slots__ = ("event", "error")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.error: Optional[ArchiveError] = None

    def __call__(self, error: Optional[ArchiveError]) -> None:
        self.error = error
        self.event.set()


class Store:
    """The archive and the waiting queues, written by one commit thread."""

    def __init__(
        self, disk_directory: str, limit_bytes: Callable[[], float] = lambda: 0.0,
        max_pending_bytes: int = 8 << 20,
    ) -> None:
        self.archive = MessageArchive(archive_dir(disk_directory), limit_bytes)
        self.waiting_directory = waiting_dir(disk_directory)
        self.max_pending_bytes = max_pending_bytes
        self._queues: Dict[str, WaitingQueue] = {}
        self._queues_lock = threading.Lock()
        self._cond = threading.Condition()
        self._jobs: List[_Job] = []
        self._pending_bytes = 0
        self._stopping = False
        self._committing = False   # one batch at a time, by the commit thread or a leader
        self._thread: Optional[threading.Thread] = None
        self._listeners: List[Callable[[Set[str]], None]] = []
        self.batches = 0     # committed batches, for tests and the bench
        self.committed = 0   # committed messages

    # -- life cycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Load and repair what is on disk, then start the commit thread."""
        self.archive.load()
        os.makedirs(self.waiting_directory, exist_ok=True)
        for receiver in receivers_on_disk(self.waiting_directory):
            self.queue(receiver)
        self._thread = threading.Thread(target=self._run, name="bus-commit", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Commit what was submitted, then stop."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        self.archive.close()
        with self._queues_lock:
            for queue in self._queues.values():
                queue.close()
            self._queues.clear()

    def on_committed(self, listener: Callable[[Set[str]], None]) -> None:
        """``listener(receivers)`` after each batch, with the receivers that got messages."""
        self._listeners.append(listener)

    # -- queues ------------------------------------------------------------------------------------

    def queue(self, receiver: str) -> WaitingQueue:
        """The receiver's waiting queue, created if it has none yet."""
        with self._queues_lock:
            queue = self._queues.get(receiver)
            if queue is None:
                queue = self._queues[receiver] = WaitingQueue(self.waiting_directory, receiver)
            return queue

    def existing_queue(self, receiver: str) -> Optional[WaitingQueue]:
        with self._queues_lock:
            return self._queues.get(receiver)

    def receivers(self) -> List[str]:
        with self._queues_lock:
            return list(self._queues)

    # -- publishing ----------------------------------------------------------------------------------

    def submit(self, message: IoMessage, receivers: Sequence[str], done: Done, archive: bool = True) -> None:
        """Queue the message for the next batch; ``done(None)`` once it is on disk, ``done(error)`` if not.

        Raises MessageError at once for a message the binary form cannot hold.
        """
        self._submit([_Job(message, receivers, archive, done)])

    def _submit(self, jobs: List[_Job]) -> None:
        """Queue ``jobs`` together: one batch takes them all (or none)."""
        with self._cond:
            while self._pending_bytes > self.max_pending_bytes and not self._stopping:
                self._cond.wait()
            if self._stopping:
                raise ArchiveError("the message bus is stopping")
            self._jobs.extend(jobs)
            self._pending_bytes += sum(len(job.binary) for job in jobs)
            self._cond.notify_all()

    def store(self, message: IoMessage, receivers: Sequence[str], archive: bool = True) -> None:
        """:meth:`submit`, and wait until the message is on disk; raises ArchiveError if it could not be.

        If no batch is being committed, the caller commits the waiting ones
        itself (leader): a lone REST publisher then pays no hand-over to the
        commit thread and back, two GIL switches of up to 5 ms each on a busy
        machine.
        """
        self.store_many([message], receivers, archive)

    def store_many(self, messages: Sequence[IoMessage], receivers: Sequence[str], archive: bool = True,
                   encoded: Optional[Sequence[bytes]] = None) -> None:
        """:meth:`store` for several messages as ONE commit (one fdatasync per file, all of
        them or none): what the router link received in one read.  ``encoded``: their binary
        forms, if the caller has them.  Raises ArchiveError if they could not be stored,
        MessageError (nothing queued) if one cannot be encoded."""
        if not messages:
            return
        waiter = _Waiter()   # the last job's: a batch completes its jobs together, in order
        binaries = encoded if encoded is not None else [None] * len(messages)
        jobs = [_Job(message, receivers, archive, _ignore, binary) for message, binary in zip(messages, binaries)]
        jobs[-1].done = waiter
        self._submit(jobs)
        taken = self._take()
        if taken is not None:
            self._commit_batch(taken)
        waiter.event.wait()
        if waiter.error is not None:
            raise waiter.error

    # -- committing --------------------------------------------------------------------------------

    def _take(self) -> Optional[List[_Job]]:
        """The waiting jobs, if nobody is committing; the caller must then :meth:`_commit_batch` them."""
        with self._cond:
            if self._committing or not self._jobs:
                return None
            jobs, self._jobs = self._jobs, []
            self._pending_bytes = 0
            self._committing = True
            self._cond.notify_all()
            return jobs

    def _run(self) -> None:
        """The commit thread: commits what nobody else is committing (socket publishers' jobs)."""
        while True:
            with self._cond:
                while (self._committing or not self._jobs) and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    while self._committing:
                        self._cond.wait()
                    if not self._jobs:
                        return
            jobs = self._take()
            if jobs is not None:
                self._commit_batch(jobs)

    def _commit_batch(self, jobs: List[_Job]) -> None:
        """Commit, then tell the publishers and listeners, in batch order (receipts stay in order)."""
        try:
            try:
                error = self._commit(jobs)
            except Exception as exc:   # a bug, not the disk: refuse the batch, keep going
                log.exception("bus: commit failed")
                error = ArchiveError(f"cannot store messages: {exc}")
            for job in jobs:
                try:
                    job.done(error)
                except Exception:
                    log.exception("bus: a publisher's completion failed")
            if error is None:
                touched = {r for job in jobs for r in job.receivers}
                for listener in self._listeners:
                    try:
                        listener(touched)
                    except Exception:
                        log.exception("bus: a commit listener failed")
        finally:
            with self._cond:
                self._committing = False
                self._cond.notify_all()

    def _commit(self, jobs: List[_Job]) -> Optional[ArchiveError]:
        blobs: Dict[str, List[bytes]] = {}
        for job in jobs:
            if job.receivers:
                entry = encode_entry(job.binary)
                for receiver in job.receivers:
                    blobs.setdefault(receiver, []).append(entry)
        appended: List[Tuple[WaitingQueue, int]] = []
        archived = False
        try:
            self.archive.append([(job.message.publisher, job.message.timestamp, job.binary)
                                 for job in jobs if job.archive])
            archived = True
            for receiver, entries in blobs.items():
                queue = self.queue(receiver)
                appended.append((queue, queue.append(b"".join(entries))))
            self.archive.sync()
            for queue, _ in appended:
                queue.sync()
        except (ArchiveError, OSError) as exc:
            for queue, size in appended:
                queue.undo(size)
            if archived:
                self.archive.rollback()
            error = exc if isinstance(exc, ArchiveError) else ArchiveError(f"cannot store messages: {exc}")
            log.error("bus: %d messages refused: %s", len(jobs), error)
            return error
        for queue, _ in appended:
            queue.publish()
        self.batches += 1
        self.committed += len(jobs)
        try:
            self.archive.enforce_limit()
            self._limit_waiting()
        except OSError as exc:
            log.warning("bus: cannot enforce the message storage limit: %s", exc)
        return None

    def _limit_waiting(self) -> None:
        """What waits for receivers that do not read is bounded by the storage limit too:
        past it, the oldest waiting messages of the longest queue go, with a log line."""
        limit = self.archive.limit_bytes()
        if limit <= 0:
            return
        with self._queues_lock:
            queues = list(self._queues.values())
        sizes = [(q.waiting_bytes(), q) for q in queues]
        total = sum(size for size, _ in sizes)
        if total <= limit:
            return
        excess = total - CLEAN_DOWN_TO * limit
        for size, queue in sorted(sizes, key=lambda x: -x[0]):
            if excess <= 0:
                break
            count, dropped = queue.drop_oldest(int(min(size, excess)))
            excess -= dropped
            log.warning("bus: messages waiting for %s exceed the message storage limit of %.0f bytes: "
                        "dropped the %d oldest (%d bytes)", queue.receiver, limit, count, dropped)
