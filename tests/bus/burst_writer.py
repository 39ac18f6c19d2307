"""A child process for the kill -9 tests: publishes a burst through a real Store
and prints each message id on stdout the moment the Store says it is on disk.

usage: python -m tests.bus.burst_writer DISK_DIRECTORY COUNT THREADS [FSIZE_LIMIT]
"""
from __future__ import annotations

import os
import resource
import signal
import sys
import threading
import time

from iofogd.bus.message import IoMessage
from iofogd.bus.store import Store
from iofogd.errors import ArchiveError

PUBLISHERS = ("pubA", "pubB")
RECEIVERS = {"pubA": ("rx1", "rx2"), "pubB": ("rx2",)}


def main() -> int:
    directory, count, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if len(sys.argv) > 4:   # a "full disk": writes past this size fail with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        limit = int(sys.argv[4])
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    store = Store(directory)
    store.start()
    out_lock = threading.Lock()
    refused = [0]

    def publish(worker: int) -> None:
        for n in range(worker, count, threads):
            publisher = PUBLISHERS[n % 2]
            mid = f"{worker:02d}{n:030d}"
            msg = IoMessage(id=mid, timestamp=int(time.time() * 1000), publisher=publisher,
                            infotype="t", infoformat="f", contentdata=os.urandom(n % 300))
            try:
                store.store(msg, RECEIVERS[publisher])
            except ArchiveError as exc:
                with out_lock:
                    refused[0] += 1
                    sys.stdout.write(f"refused {mid} {type(exc).__name__} {exc}\n")
                    sys.stdout.flush()
                continue
            with out_lock:
                sys.stdout.write(f"ok {mid}\n")
                sys.stdout.flush()

    workers = [threading.Thread(target=publish, args=(w,)) for w in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    store.stop()
    sys.stdout.write(f"done {refused[0]}\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
