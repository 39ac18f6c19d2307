"""One node's router link in its own process, for the kill -9 tests.

    python -m tests.bus.amqp.router_node send <port> <receiver> <count> <ackfile>
    python -m tests.bus.amqp.router_node receive <port> <receiver> <storefile>

``send`` offers ``count`` ioMessages (sequence numbers 0..count-1) and appends
the number of each one the router accepted to ``ackfile`` (fsynced: that is
what "acknowledged" means to the test).  ``receive`` stores every message that
arrives as a line of ``storefile``, fsynced (once per batch) before the link
accepts it, as the bus's durable store does.  Both run until killed.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from typing import List, Optional

from iofogd.bus.router import RouterLink, RouterSink
from tests.bus.amqp.test_router import iomessage


class FileSink(RouterSink):
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def deliver_local(self, receiver: str, iomessage_jsons: List[str]) -> List[Optional[str]]:
        os.write(self.fd, b"".join(text.encode() + b"\n" for text in iomessage_jsons))
        os.fsync(self.fd)
        return [None] * len(iomessage_jsons)


def main() -> None:
    mode, port = sys.argv[1], int(sys.argv[2])
    receiver = sys.argv[3]
    if mode == "receive":
        link = RouterLink(FileSink(sys.argv[4]), credentials=("guest", "guest"), backoff_first=0.2)
        link.start()
        link.set_router("127.0.0.1", port)
        link.set_local_receivers([receiver])
        threading.Event().wait()
    count, ackfile = int(sys.argv[4]), sys.argv[5]
    fd = os.open(ackfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    lock = threading.Lock()

    def acked(seq: int) -> "object":
        def on_settled(accepted: bool) -> None:
            if accepted:
                with lock:
                    os.write(fd, b"%d\n" % seq)
                    os.fsync(fd)
        return on_settled

    link = RouterLink(FileSink(os.devnull), credentials=("guest", "guest"), backoff_first=0.2, max_pending=200)
    link.start()
    link.set_router("127.0.0.1", port)
    for seq in range(count):
        while not link.offer(receiver, iomessage(seq), acked(seq)):  # type: ignore[arg-type]
            time.sleep(0.002)
    threading.Event().wait()


if __name__ == "__main__":
    main()
