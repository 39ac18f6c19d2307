"""Messages through the router: our AMQP client beside Qpid Proton, same broker, same run.

    python bench/bench_router.py [--runs 3] [--count 5000] [--rate 1000] [--url amqp://...]

The broker is RabbitMQ with its AMQP 1.0 plugin, started privately with
scripts/rabbitmq.sh (root) on ``RABBIT_PORT`` (default 25694) unless ``--url`` names one.  Each run sends the
same ioMessage (its JSON form in a JMS TextMessage, the Java agent's wire
form) from a sender link to a receiver link on one queue, at least once: the
sender's deliveries unsettled until the broker accepts them, the receiver
accepting each message after it is decoded, with 100 credit.  Three clients:

- ``ours``: iofogd.bus.amqp.client (a Client for each side, one I/O thread each);
- ``router``: iofogd.bus.router.RouterLink on both sides (two nodes), the whole
  path the bus will use (JSON text out, a sink that parses it in);
- ``proton``: Qpid Proton's C engine driven by its Python reactor (a
  MessagingHandler with a sender and a receiver), a competent baseline.

Two figures each: messages/s for a burst of ``--count`` messages (first send to
last receipt), and p99 latency (send to receipt) at a paced ``--rate``.
Medians of ``--runs`` runs; never passes or fails on time.  Figures taken on
a shared 2-core machine are noisy: compare the ratios, not the absolutes.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from typing import Any, Callable, Dict, List, Optional, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from iofogd.bus.amqp import message as m  # noqa: E402
from iofogd.bus.amqp.client import Client  # noqa: E402
from iofogd.bus.router import RouterLink, RouterSink, encode_text_message  # noqa: E402

BENCH_PORT = os.environ.get("RABBIT_PORT", "25694")   # a private RabbitMQ's port


def iomessage(seq: int) -> str:
    return json.dumps({"id": uuid.uuid4().hex, "tag": "bench", "groupid": "", "sequencenumber": seq,
                       "sequencetotal": 0, "priority": 0, "timestamp": int(time.time() * 1000),
                       "publisher": "hpf2f8WNWYmLTp6n9T4ZxLpxWBHXZBfC", "authid": "", "authgroup": "",
                       "version": 4, "chainposition": 0, "hash": "", "previoushash": "", "nonce": "",
                       "difficultytarget": 0, "infotype": "text", "infoformat": "utf-8", "contextdata": "",
                       "contentdata": "eyJ0ZW1wZXJhdHVyZSI6IDIxLjUsICJ1bml0IjogIkMifQ=="},
                      separators=(",", ":"))


def p99(values: List[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def paced(count: int, rate: float, send: Callable[[int], None]) -> None:
    """Call send(0..count-1) at ``rate`` per second (rate 0: as fast as it goes)."""
    start = time.perf_counter()
    for i in range(count):
        if rate:
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        send(i)


# -- ours: the client ------------------------------------------------------------------------


def run_ours(url: str, count: int, rate: float) -> Tuple[float, List[float]]:
    address = uuid.uuid4().hex
    sent: Dict[int, float] = {}
    latencies: List[float] = []
    done = threading.Event()
    rx = Client(url)
    tx = Client(url)
    rx.connect()
    tx.connect()

    def on_message(receiver: Any, delivery: Any) -> None:
        msg = m.decode_message(delivery.payload)
        seq = int(str(msg.properties.message_id).rsplit(":", 1)[1])
        latencies.append(time.perf_counter() - sent[seq])
        rx.settle(delivery)
        if len(latencies) == count:
            done.set()

    try:
        rx.receiver(address, on_message, credit=100)
        sender = tx.sender(address)
        texts = [iomessage(i) for i in range(count)]
        start = time.perf_counter()

        def send(i: int) -> None:
            payload = encode_text_message(address, texts[i], f"ID:bench:{i}", int(time.time() * 1000))
            # Back-pressure as the router link applies it: no more than 1000 waiting for credit.
            while sender.queued > 1000:
                time.sleep(0.0005)
            sent[i] = time.perf_counter()
            tx.send(sender, payload)

        paced(count, rate, send)
        if not done.wait(120):
            raise RuntimeError(f"ours: only {len(latencies)} of {count} arrived")
        elapsed = time.perf_counter() - start
    finally:
        tx.close()
        rx.close()
    return count / elapsed, latencies


# -- ours: the router link on two nodes -------------------------------------------------------


class _Sink(RouterSink):
    def __init__(self, count: int, sent: Dict[int, float]) -> None:
        self.count = count
        self.sent = sent
        self.latencies: List[float] = []
        self.done = threading.Event()

    def deliver_local(self, receiver: str, iomessage_jsons: List[str]) -> List[Optional[str]]:
        for text in iomessage_jsons:
            seq = json.loads(text)["sequencenumber"]
            self.latencies.append(time.perf_counter() - self.sent[seq])
        if len(self.latencies) == self.count:
            self.done.set()
        return [None] * len(iomessage_jsons)


def run_router(url: str, count: int, rate: float) -> Tuple[float, List[float]]:
    from urllib.parse import urlsplit
    parts = urlsplit(url)
    address = uuid.uuid4().hex
    sent: Dict[int, float] = {}
    sink = _Sink(count, sent)
    creds = (parts.username, parts.password) if parts.username else None
    b = RouterLink(sink, credentials=creds)  # type: ignore[arg-type]
    a = RouterLink(_Sink(0, sent), credentials=creds, max_pending=1000)  # type: ignore[arg-type]
    for node in (a, b):
        node.start()
        node.set_router(parts.hostname, parts.port)
    b.set_local_receivers([address])
    try:
        deadline = time.monotonic() + 20
        while not (a.connected and address in b._receivers) and time.monotonic() < deadline:
            time.sleep(0.01)
        texts = [iomessage(i) for i in range(count)]
        start = time.perf_counter()

        def send(i: int) -> None:
            sent[i] = time.perf_counter()
            while not a.offer(address, texts[i], lambda ok: None):
                time.sleep(0.0005)  # the bus would keep it in the archive; here we wait

        paced(count, rate, send)
        if not sink.done.wait(120):
            raise RuntimeError(f"router: only {len(sink.latencies)} of {count} arrived")
        elapsed = time.perf_counter() - start
    finally:
        a.stop()
        b.stop()
    return count / elapsed, sink.latencies


# -- Qpid Proton -------------------------------------------------------------------------------


def run_proton(url: str, count: int, rate: float) -> Tuple[float, List[float]]:
    import proton
    from proton.handlers import MessagingHandler
    from proton.reactor import Container

    address = uuid.uuid4().hex
    texts = [iomessage(i) for i in range(count)]
    annotations = {proton.symbol("x-opt-jms-msg-type"): proton.byte(5), proton.symbol("x-opt-jms-dest"): proton.byte(0)}
    sent: Dict[int, float] = {}
    latencies: List[float] = []
    times: Dict[str, float] = {}

    class Bench(MessagingHandler):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(prefetch=100, auto_accept=True)
            self.next = 0
            self.sender: Any = None
            self.conn: Any = None

        def on_start(self, event: Any) -> None:
            self.conn = event.container.connect(url, allowed_mechs="PLAIN")
            event.container.create_receiver(self.conn, address)
            self.sender = event.container.create_sender(self.conn, address)
            if rate:
                event.container.schedule(0.001, self)

        def on_link_opened(self, event: Any) -> None:
            if event.receiver is not None and "start" not in times:
                pass

        def _send_due(self) -> None:
            now = time.perf_counter()
            times.setdefault("start", now)
            while self.next < count and self.sender.credit:
                if rate and times["start"] + self.next / rate > now:
                    break
                msg = proton.Message(body=texts[self.next], id=f"ID:bench:{self.next}", address=address,
                                     durable=True, creation_time=time.time())
                msg.annotations = annotations
                sent[self.next] = time.perf_counter()
                self.sender.send(msg)
                self.next += 1

        def on_sendable(self, event: Any) -> None:
            if not rate:
                self._send_due()

        def on_timer_task(self, event: Any) -> None:
            self._send_due()
            if self.next < count:
                event.container.schedule(0.0005, self)

        def on_message(self, event: Any) -> None:
            seq = int(str(event.message.id).rsplit(":", 1)[1])
            latencies.append(time.perf_counter() - sent[seq])
            if len(latencies) == count:
                times["end"] = time.perf_counter()
                event.connection.close()

    Container(Bench()).run()
    if len(latencies) != count:
        raise RuntimeError(f"proton: only {len(latencies)} of {count} arrived")
    return count / (times["end"] - times["start"]), latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--count", type=int, default=5000, help="messages in a burst")
    parser.add_argument("--rate", type=float, default=1000, help="messages/s of the paced latency phase")
    parser.add_argument("--url", help="a broker to use instead of a private RabbitMQ")
    args = parser.parse_args()
    started = False
    url = args.url
    script = os.path.join(REPO, "scripts", "rabbitmq.sh")
    env = dict(os.environ, RABBIT_PORT=BENCH_PORT)
    if url is None:
        subprocess.run([script, "start"], env=env, check=True, capture_output=True)
        started = True
        url = f"amqp://guest:guest@127.0.0.1:{BENCH_PORT}"
    try:
        runners = {"ours": run_ours, "router": run_router, "proton": run_proton}
        rates: Dict[str, List[float]] = {k: [] for k in runners}
        p99s: Dict[str, List[float]] = {k: [] for k in runners}
        paced_count = max(200, int(args.rate * 3))
        for _ in range(args.runs):
            for name, run in runners.items():  # interleaved, so noise hits all alike
                throughput, _ = run(url, args.count, 0)
                rates[name].append(throughput)
                _, latencies = run(url, paced_count, args.rate)
                p99s[name].append(p99(latencies) * 1000)
        print(f"{args.count} messages per burst, p99 at {args.rate:g} msg/s, medians of {args.runs} runs")
        print(f"{'client':<8} {'msg/s':>10} {'p99 ms':>8}")
        for name in runners:
            print(f"{name:<8} {statistics.median(rates[name]):>10.0f} {statistics.median(p99s[name]):>8.2f}")
        base = statistics.median(rates["proton"])
        print(f"ratio ours/proton   {statistics.median(rates['ours']) / base:.2f}")
        print(f"ratio router/proton {statistics.median(rates['router']) / base:.2f}")
    finally:
        if started:
            subprocess.run([script, "stop"], env=env, capture_output=True)


if __name__ == "__main__":
    main()
