"""The receive path's batching, proved by counting, not timing: what one read of the socket
brings is stored with ONE commit (one fdatasync), and accepted only after it, in one
disposition frame.  The peer is Qpid Proton's engine behind a real loopback socket, the
store the bus's own (real files)."""
from __future__ import annotations

import base64
import contextlib
import json
import os
import uuid
from typing import Any, Iterator, List, Tuple

import pytest

proton = pytest.importorskip("proton", reason="python-qpid-proton (the test extra) is not installed")

from iofogd.bus import message as bm  # noqa: E402
from iofogd.bus.remote import RouterDelivery  # noqa: E402
from iofogd.bus.router import RouterLink, encode_text_message  # noqa: E402
from iofogd.bus.store import Store  # noqa: E402
from tests.bus.amqp.conftest import wait_for  # noqa: E402
from tests.bus.amqp.proton_peer import ProtonServer  # noqa: E402
from tests.bus.amqp.test_router import iomessage  # noqa: E402


@contextlib.contextmanager
def node(tmp_path: str, prefetch: int, prefetch_bytes: int = 4 << 20) -> Iterator[Tuple[Store, ProtonServer, str]]:
    """A bus store and its router link, connected to a Proton server; yields once the link
    listens for a fresh receiver with all its credit given."""
    receiver = uuid.uuid4().hex
    store = Store(str(tmp_path) + "/")
    store.start()
    store.queue(receiver)   # its files exist: what follows creates none
    sink = RouterDelivery(store)
    server = ProtonServer().start()
    link = RouterLink(sink, prefetch=prefetch, prefetch_bytes=prefetch_bytes, backoff_first=0.2)
    sink.link = link
    link.start()
    try:
        link.set_router("127.0.0.1", server.port)
        link.set_local_receivers([receiver])
        assert wait_for(lambda: server.credit(receiver) == prefetch), "our receiver never gave its credit"
        yield store, server, receiver
    finally:
        link.stop()
        server.stop()
        store.stop()


def test_one_read_of_transfers_is_one_commit_then_their_dispositions(
        tmp_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    count = 40
    with node(tmp_path, 64) as (store, server, receiver):
        syncs: List[int] = []
        real = os.fdatasync
        monkeypatch.setattr(os, "fdatasync", lambda fd: (syncs.append(fd), real(fd))[1])
        committed_when_accepted: List[int] = []
        server.peer.on_outcome = lambda: committed_when_accepted.append(store.committed)
        batches, frames = store.batches, len(server.frames)
        texts = [iomessage(i) for i in range(count)]
        with server.lock:   # all transfers go out in one sendall: one read on our side
            for i, text in enumerate(texts):
                server.peer.offer(receiver, encode_text_message(receiver, text, f"ID:peer:{i}", 0))
        assert wait_for(lambda: len(server.peer.outcomes) == count), len(server.peer.outcomes)

        assert store.batches - batches == 1          # one commit for the whole read ...
        assert len(syncs) == 1                       # ... one fdatasync (the receiver's queue file)
        assert committed_when_accepted[0] == count   # the first "accepted" left after all were durable
        assert server.peer.outcomes == [proton.Delivery.ACCEPTED] * count
        assert server.frames[frames:].count("disposition") == 1   # one frame for the forty
        queue = store.queue(receiver)
        stored = [json.dumps(bm.to_json(bm.decode(e.data)), separators=(",", ":"))
                  for e in queue.read(queue.consumed, 1000)]
        assert stored == texts                       # in order, ids and timestamps kept


def test_a_batch_with_a_malformed_message_stores_the_others_and_rejects_it(tmp_path: str) -> None:
    with node(tmp_path, 16) as (store, server, receiver):
        batches = store.batches
        bodies: List[Any] = [iomessage(0), "{not json", iomessage(2), json.dumps({"publisher": "p" * 300})]
        with server.lock:
            for i, text in enumerate(bodies):
                server.peer.offer(receiver, encode_text_message(receiver, text, f"ID:peer:{i}", 0))
        assert wait_for(lambda: len(server.peer.outcomes) == 4)
        assert store.batches - batches == 1
        outcomes = server.peer.outcomes
        assert outcomes.count(proton.Delivery.ACCEPTED) == 2 and outcomes.count(proton.Delivery.REJECTED) == 2
        queue = store.queue(receiver)
        assert [bm.decode(e.data).sequencenumber for e in queue.read(queue.consumed, 10)] == [0, 2]


def test_big_messages_get_less_credit_so_memory_stays_bounded_in_bytes(tmp_path: str) -> None:
    with node(tmp_path, 64, prefetch_bytes=64 << 10) as (store, server, receiver):
        def send(texts: List[str]) -> None:
            with server.lock:
                for i, text in enumerate(texts):
                    server.peer.offer(receiver, encode_text_message(receiver, text, f"ID:peer:{i}", 0))

        big = [json.dumps({"publisher": "p", "contentdata": base64.b64encode(b"x" * 20_000).decode()})] * 4
        send(big)
        assert wait_for(lambda: len(server.peer.outcomes) == 4)
        # 64 KiB over ~27 KiB messages: a window of 2, not 64 x 27 KiB.
        assert wait_for(lambda: server.credit(receiver) == 2), server.credit(receiver)
        send([iomessage(i) for i in range(6)])
        assert wait_for(lambda: len(server.peer.outcomes) == 10)
        assert wait_for(lambda: server.credit(receiver) >= 64 - 4)   # small ones again: the full window back
        assert store.queue(receiver).waiting_bytes() > 4 * 20_000
