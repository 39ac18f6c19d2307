"""Messages across two nodes: socket publisher on daemon A -> router -> socket receiver on daemon B.

    .venv/bin/python bench/bench_nodes.py [--runs 3] [--count 3000] [--rate 500]   (root: RabbitMQ)
    RABBIT_PORT=26800 .venv/bin/python bench/bench_nodes.py
    .venv/bin/python bench/bench_nodes.py --runs 1 --profile /tmp/prof   (py-spy on PATH: where CPU goes)

Two real iofogd processes (two roots, two loopback ports) follow a minimal
Controller double (``bench.peers.ControllerDouble``: the few agent endpoints
a daemon calls to provision, read its router config and its microservices; it
serves one route tx (node A) -> rx (node B) and the broker as ``routerHost``/
``routerPort``).  The broker is RabbitMQ with its AMQP 1.0 plugin, started
privately with scripts/rabbitmq.sh on ``RABBIT_PORT`` (default 25694).

Per run, interleaved so noise hits both alike:

- ``nodes``: a message-socket publisher on A (at most 256 unreceipted) sends
  ``--count`` ioMessages for rx; a message-socket receiver on B ACKs each.
  Each message carries its send time.  Figures: messages/s (first send to
  last receipt on B) and p99 latency of a paced phase at ``--rate``.
- ``proton``: Qpid Proton's C engine (bench_router.run_proton) sending the
  same number of messages, in the Java agent's wire form, through the same
  broker to its own receiver: a competent baseline for the broker hop.

The two paths are not the same work: ``nodes`` adds two daemons (each message
durably stored on A until the router accepts it and on B before it is
accepted), two WebSocket hops and the Controller-driven routing; the ratio
says what that whole path costs against a bare C-backed client.  Medians of
``--runs``; it never passes or fails on time.  On a shared machine the
figures are noisy: compare ratios.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Any, Dict, List, Optional, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import websocket  # noqa: E402  websocket-client (a test dependency)

from bench.bench_router import p99, run_proton  # noqa: E402
from bench.peers import ControllerDouble, Daemon, microservice, wait  # noqa: E402
from iofogd.bus import message as m  # noqa: E402

WINDOW = 256   # unreceipted messages a socket publisher keeps in flight


# -- the measurement -----------------------------------------------------------------------------


def run_nodes(a: Daemon, b: Daemon, tx: str, rx: str, count: int, rate: float) -> Tuple[float, List[float]]:
    """``count`` messages from a socket publisher on A to a socket receiver on B: (msg/s, latencies s)."""
    latencies: List[float] = []
    done = threading.Event()
    times: Dict[str, float] = {}
    rws = websocket.create_connection(f"ws://127.0.0.1:{b.port}/v2/message/socket/id/{rx}", timeout=60)

    def receive() -> None:
        try:
            while len(latencies) < count:
                _, data = rws.recv_data()
                if data[:1] == b"\x0d":
                    (length,) = struct.unpack(">I", data[1:5])
                    sent = struct.unpack(">q", m.decode(data[5:5 + length]).contentdata[:8])[0]
                    latencies.append((time.perf_counter_ns() - sent) / 1e9)
                    rws.send_binary(b"\x0b")
            times["end"] = time.perf_counter()
        finally:
            done.set()

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    pws = websocket.create_connection(f"ws://127.0.0.1:{a.port}/v2/message/socket/id/{tx}", timeout=60)
    credit = threading.Semaphore(WINDOW)

    def receipts() -> None:
        for _ in range(count):
            _, data = pws.recv_data()
            if data[:1] == b"\x0e":
                pws.send_binary(b"\x0b")
                credit.release()

    reader = threading.Thread(target=receipts, daemon=True)
    reader.start()
    start = times["start"] = time.perf_counter()
    for i in range(count):
        credit.acquire()
        if rate:
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        body = m.encode(m.IoMessage(publisher=tx, infotype="bench", infoformat="ns",
                                    contentdata=struct.pack(">q", time.perf_counter_ns()) + b"x" * 56))
        pws.send_binary(b"\x0d" + struct.pack(">I", len(body)) + body)
    done.wait(120)
    reader.join(10)
    pws.close()
    rws.close()
    if len(latencies) != count:
        raise RuntimeError(f"nodes: only {len(latencies)} of {count} arrived on B")
    return count / (times["end"] - times["start"]), latencies


def profile(daemon: Daemon, out: str) -> subprocess.Popen[bytes]:
    """py-spy sampling ``daemon`` (threads on CPU) until SIGINT."""
    os.makedirs(os.path.dirname(out), exist_ok=True)
    spy = subprocess.Popen(["py-spy", "record", "--nonblocking", "-r", "200", "-f", "raw", "-o", out,
                            "-p", str(daemon.proc.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)   # py-spy attaches
    return spy


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--count", type=int, default=3000, help="messages in a burst")
    parser.add_argument("--rate", type=float, default=500, help="messages/s of the paced latency phase")
    parser.add_argument("--profile", metavar="DIR", help="py-spy (on PATH) samples both daemons during the "
                        "first burst: DIR/a.txt, DIR/b.txt (raw, collapsed stacks)")
    args = parser.parse_args(argv)
    rabbit_port = os.environ.get("RABBIT_PORT", "25694")
    script = os.path.join(REPO, "scripts", "rabbitmq.sh")
    env = dict(os.environ, RABBIT_PORT=rabbit_port)
    subprocess.run([script, "start"], env=env, check=True, capture_output=True)
    url = f"amqp://guest:guest@127.0.0.1:{rabbit_port}"
    tmp = tempfile.mkdtemp(prefix="bench-nodes-")
    controller = ControllerDouble().start()
    router = ("127.0.0.1", int(rabbit_port))
    daemons: List[Daemon] = []
    try:
        tx, rx = uuid.uuid4().hex, uuid.uuid4().hex
        key_a = controller.add_fog([microservice(tx, [rx], False)], router)
        key_b = controller.add_fog([microservice(rx, [], True)], router)
        a, b = Daemon(os.path.join(tmp, "a")), Daemon(os.path.join(tmp, "b"))
        daemons += [a, b]
        a.provision(controller, key_a)
        b.provision(controller, key_b)
        wait(lambda: a.router_connected() and b.router_connected(), 60, "both daemons on the router")
        wait(lambda: f"listening for {rx}" in b.log(), 60, "B listening for rx")
        run_nodes(a, b, tx, rx, 200, 0)   # warm: links attached, queues declared, code paths loaded
        paced_count = max(200, int(args.rate * 3))
        rates: Dict[str, List[float]] = {"nodes": [], "proton": []}
        p99s: Dict[str, List[float]] = {"nodes": [], "proton": []}
        cpu: List[Tuple[float, float]] = []
        for run in range(args.runs):
            spies = [profile(d, os.path.join(args.profile, f"{n}.txt")) for n, d in (("a", a), ("b", b))] \
                if args.profile and run == 0 else []
            before = (a.cpu_seconds(), b.cpu_seconds())
            throughput, _ = run_nodes(a, b, tx, rx, args.count, 0)
            for spy in spies:
                spy.send_signal(signal.SIGINT)
                spy.wait(30)
            cpu.append((a.cpu_seconds() - before[0], b.cpu_seconds() - before[1]))
            rates["nodes"].append(throughput)
            _, latencies = run_nodes(a, b, tx, rx, paced_count, args.rate)
            p99s["nodes"].append(p99(latencies) * 1000)
            throughput, _ = run_proton(url, args.count, 0)
            rates["proton"].append(throughput)
            _, latencies = run_proton(url, paced_count, args.rate)
            p99s["proton"].append(p99(latencies) * 1000)
        print(f"{args.count} messages per burst, p99 at {args.rate:g} msg/s, medians of {args.runs} runs "
              f"(RabbitMQ on 127.0.0.1:{rabbit_port})")
        print(f"{'path':<8} {'msg/s':>10} {'p99 ms':>8}")
        for name in rates:
            print(f"{name:<8} {statistics.median(rates[name]):>10.0f} {statistics.median(p99s[name]):>8.2f}")
        print(f"CPU per burst message: A {statistics.median(c[0] for c in cpu) / args.count * 1e6:.0f} us, "
              f"B {statistics.median(c[1] for c in cpu) / args.count * 1e6:.0f} us (2 cores shared by both)")
        print(f"ratio nodes/proton {statistics.median(rates['nodes']) / statistics.median(rates['proton']):.2f}")
    finally:
        for daemon in daemons:
            daemon.stop()
        controller.stop()
        subprocess.run([script, "stop"], env=env, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
