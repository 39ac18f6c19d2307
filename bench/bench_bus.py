"""The message bus: publish-to-delivery messages/s and latency, and memory with messages waiting.

    .venv/bin/python -m bench.bench_bus [--seconds 3] [--runs 3]

A real iofogd (a subprocess, its files under a temporary root, the archive
on) follows a minimal Controller double (bench.peers), which gives it N
publisher -> receiver routes on the one node.  The clients run in a child process: per pair, a receiver on the
message socket that ACKs every message, and a publisher, either on its own
message socket (receipts counted, at most 256 unreceipted) or over REST
(keep-alive POST /v2/messages/new).  Each message carries its send time;
the receiver takes the latency when it arrives.  Printed, as medians over
``--runs``:

- flat out, 1 and 8 pairs: delivered messages/s, p50/p99 latency (the
  latency then is mostly queueing behind the 256 messages each socket
  publisher keeps in flight);
- paced at 1,000 messages/s in all (1 pair): p50/p99 latency;
- the baseline: the same clients against a bare relay written below (it
  forwards 0x0D frames from a publisher's socket, or POSTed JSON, to its
  receiver's socket and answers; no disk, no validation, no tracking of
  ACKs), so the ratio shows what the bus's guarantees cost;
- RSS of the daemon before and after 10,000 messages were published for a
  receiver that is not connected (they wait on disk).

It prints figures and never fails on them.  On a shared machine they are
noisy: say so when quoting them.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import multiprocessing
import os
import socket
import socketserver
import statistics
import struct
import sys
import tempfile
import threading
import time
import uuid
from typing import Any, Dict, List, Optional, Tuple

import websocket  # websocket-client (a test dependency)

from bench.peers import ControllerDouble, Daemon, microservice, wait
from bench.procfs import status_kib
from iofogd.bus import message as m

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WINDOW = 256   # unreceipted socket publishes per publisher


# -- the baseline: a bare relay ------------------------------------------------------------------


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _read_frame(sock: socket.socket) -> Tuple[int, bytes]:
    b0, b1 = _recv_exact(sock, 2)
    length = b1 & 0x7F
    if length == 126:
        length = struct.unpack(">H", _recv_exact(sock, 2))[0]
    elif length == 127:
        length = struct.unpack(">Q", _recv_exact(sock, 8))[0]
    mask = _recv_exact(sock, 4) if b1 & 0x80 else b""
    payload = _recv_exact(sock, length)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return b0 & 0x0F, payload


def _frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((0x82, n)) + payload
    if n < 65536:
        return bytes((0x82, 126)) + struct.pack(">H", n) + payload
    return bytes((0x82, 127)) + struct.pack(">Q", n) + payload


class BareRelay(socketserver.BaseRequestHandler):
    """``/v2/message/socket/id/<id>``: 0x0D from a publisher goes to the socket of its route's receiver."""

    sockets: Dict[str, socket.socket] = {}
    routes: Dict[str, str] = {}
    lock = threading.Lock()

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                return
            head += chunk
        if head.startswith(b"POST "):
            self._rest(sock, head)
            return
        path = head.split(b" ", 2)[1].decode()
        mid = path.rsplit("/", 1)[1]
        key = head.split(b"Sec-WebSocket-Key: ", 1)[1].split(b"\r\n", 1)[0]
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        with self.lock:
            self.sockets[mid] = sock
        try:
            while True:
                opcode, payload = _read_frame(sock)
                if opcode == 8:
                    return
                if payload[:1] != b"\x0d":
                    continue
                msg = m.decode(payload[5:])
                self._forward(msg.publisher, payload)
                mid_bytes = os.urandom(16).hex().encode()
                sock.sendall(_frame(b"\x0e\x20\x08" + mid_bytes + struct.pack(">q", msg.timestamp)))
        except (EOFError, OSError):
            return

    def _forward(self, publisher: str, payload: bytes) -> None:
        receiver = self.sockets.get(self.routes.get(publisher, ""))
        if receiver is not None:
            with self.lock:   # one writer at a time per receiver socket
                try:
                    receiver.sendall(_frame(payload))
                except OSError:
                    pass   # the receiver left (the end of a run): the message is dropped, as a relay would

    def _rest(self, sock: socket.socket, buffered: bytes) -> None:
        """Keep-alive POST /v2/messages/new: JSON in, binary out to the receiver, a JSON answer."""
        data = buffered
        try:
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, data = data.split(b"\r\n\r\n", 1)
                length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
                while len(data) < length:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                body, data = data[:length], data[length:]
                msg = m.from_json(json.loads(body))
                binary = m.encode(msg)
                self._forward(msg.publisher, b"\x0d" + struct.pack(">I", len(binary)) + binary)
                answer = json.dumps({"status": "okay", "timestamp": 0, "id": os.urandom(16).hex()}).encode()
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                             + str(len(answer)).encode() + b"\r\n\r\n" + answer)
        except (OSError, ValueError, IndexError):
            return


class _Relay(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


# -- the clients (in a child process) ---------------------------------------------------------------


def _percentile(values: List[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def _receiver(port: int, rx: str, latencies: List[float], stop: threading.Event, ready: threading.Event,
              counter: List[int]) -> None:
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/v2/message/socket/id/{rx}", timeout=2)
    ready.set()
    while not stop.is_set():
        try:
            _, data = ws.recv_data()
        except websocket.WebSocketTimeoutException:
            continue
        except Exception:
            break
        if data[:1] == b"\x0d":
            sent = struct.unpack(">q", m.decode(data[5:]).contentdata[:8])[0]
            latencies.append((time.perf_counter_ns() - sent) / 1e6)
            counter[0] += 1
            try:
                ws.send_binary(b"\x0b")
            except (OSError, websocket.WebSocketException):
                break
    ws.close()


def _socket_publisher(port: int, tx: str, stop: threading.Event, interval: float) -> None:
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/v2/message/socket/id/{tx}", timeout=5)
    credit = threading.Semaphore(WINDOW)

    def receipts() -> None:
        while True:
            try:
                _, data = ws.recv_data()
            except Exception:
                return
            if data[:1] == b"\x0e":
                try:
                    ws.send_binary(b"\x0b")
                except (OSError, websocket.WebSocketException):
                    return
                credit.release()

    reader = threading.Thread(target=receipts, daemon=True)
    reader.start()
    next_at = time.perf_counter()
    while not stop.is_set():
        if not credit.acquire(timeout=0.5):
            continue
        if interval:
            next_at += interval
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        body = m.encode(m.IoMessage(publisher=tx, infotype="bench", infoformat="ns",
                                    contentdata=struct.pack(">q", time.perf_counter_ns()) + b"x" * 56))
        try:
            ws.send_binary(b"\x0d" + struct.pack(">I", len(body)) + body)
        except (OSError, websocket.WebSocketException):
            return   # the server went away (the relay closes the publisher when its run ends)
    time.sleep(0.5)
    ws.close()


def _rest_publisher(port: int, tx: str, stop: threading.Event, interval: float) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    next_at = time.perf_counter()
    while not stop.is_set():
        if interval:
            next_at += interval
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        content = base64.b64encode(struct.pack(">q", time.perf_counter_ns()) + b"x" * 56).decode()
        body = json.dumps({"publisher": tx, "version": 4, "infotype": "bench", "infoformat": "ns",
                           "contentdata": content})
        try:
            conn.request("POST", "/v2/messages/new", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException):
            if stop.is_set():
                return
            raise
        if resp.status != 200:
            raise RuntimeError(f"publish failed: {resp.status}")
    conn.close()


def _clients(port: int, pairs: List[Tuple[str, str]], kind: str, seconds: float, rate: float,
             out: Any) -> None:
    latencies: List[List[float]] = [[] for _ in pairs]
    counters = [[0] for _ in pairs]
    stop = threading.Event()
    threads = []
    for i, (tx, rx) in enumerate(pairs):
        ready = threading.Event()
        t = threading.Thread(target=_receiver, args=(port, rx, latencies[i], stop, ready, counters[i]))
        t.start()
        ready.wait(10)
        threads.append(t)
    interval = len(pairs) / rate if rate else 0.0
    publishers = []
    for tx, _ in pairs:
        target = _socket_publisher if kind == "socket" else _rest_publisher
        p = threading.Thread(target=target, args=(port, tx, stop, interval), daemon=True)
        p.start()
        publishers.append(p)
    warm = min(1.0, seconds / 4)
    time.sleep(warm)
    start_counts = sum(c[0] for c in counters)
    start_lat = [len(x) for x in latencies]
    t0 = time.perf_counter()
    time.sleep(seconds)
    elapsed = time.perf_counter() - t0
    delivered = sum(c[0] for c in counters) - start_counts
    window = [v for lst, s in zip(latencies, start_lat) for v in lst[s:]]
    stop.set()
    for p in publishers:
        p.join(5)
    for t in threads:
        t.join(5)
    out.put((delivered / elapsed, _percentile(window, 0.5), _percentile(window, 0.99)))


def measure(port: int, pairs: List[Tuple[str, str]], kind: str, seconds: float, rate: float = 0.0) -> Tuple[float, float, float]:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_clients, args=(port, pairs, kind, seconds, rate, out))
    proc.start()
    result = out.get(timeout=seconds + 120)
    proc.join(30)
    return result  # type: ignore[no-any-return]


# -- the node --------------------------------------------------------------------------------------


def start_node(root: str, controller: ControllerDouble, n_pairs: int) -> Tuple[Daemon, List[Tuple[str, str]]]:
    """A node with ``n_pairs`` routes tx_i -> rx_i, and last a "waiting" route whose receiver
    never connects (its pair comes back as ``(tx, "")``).  The fog's routerMode is "none": the
    Controller's default router address, where no router listens; delivery is local."""
    pairs = [(uuid.uuid4().hex, uuid.uuid4().hex) for _ in range(n_pairs + 1)]
    microservices = []
    for tx, rx in pairs:
        microservices += [microservice(tx, [rx], False), microservice(rx, [], True)]
    key = controller.add_fog(microservices)
    daemon = Daemon(root)
    try:
        daemon.provision(controller, key, status_frequency=5)
        wait(lambda: "bus: routes now" in daemon.log(), 30, "the bus's routes")
    except BaseException:
        daemon.stop()
        raise
    return daemon, pairs[:-1] + [(pairs[-1][0], "")]


def rss_kib(pid: int) -> int:
    return status_kib(pid, "VmRSS")


def waiting_rss(daemon: Daemon, tx: str, count: int = 10_000) -> Tuple[int, int]:
    ws = websocket.create_connection(f"ws://127.0.0.1:{daemon.port}/v2/message/socket/id/{tx}", timeout=30)
    # Warm the path first (imports, buffers), then measure the growth over `count` more.
    for phase in ("warm", "measure"):
        n = 1000 if phase == "warm" else count
        for i in range(n):
            body = m.encode(m.IoMessage(publisher=tx, infotype="t", infoformat="f", contentdata=b"w" * 64))
            ws.send_binary(b"\x0d" + struct.pack(">I", len(body)) + body)
        got = 0
        while got < n:
            if ws.recv_data()[1][:1] == b"\x0e":
                got += 1
        time.sleep(1.0)
        if phase == "warm":
            before = rss_kib(daemon.proc.pid)
    after = rss_kib(daemon.proc.pid)
    ws.close()
    return before, after


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"bench_bus: {os.cpu_count()} CPUs, python {sys.version.split()[0]}, "
          f"{args.runs} runs of {args.seconds:.1f} s (medians)")
    with tempfile.TemporaryDirectory() as tmp, ControllerDouble() as controller:
        daemon, pairs = start_node(os.path.join(tmp, "root"), controller, 8)
        waiting_tx = pairs.pop()[0]
        relay = _Relay(("127.0.0.1", 0), BareRelay)
        BareRelay.routes = dict(pairs)
        threading.Thread(target=relay.serve_forever, daemon=True).start()
        relay_port = relay.server_address[1]
        try:
            cases = [
                ("socket publisher, 1 pair, flat out", "socket", 1, 0.0),
                ("socket publisher, 8 pairs, flat out", "socket", 8, 0.0),
                ("REST publisher, 1 pair, flat out", "rest", 1, 0.0),
                ("REST publisher, 8 pairs, flat out", "rest", 8, 0.0),
                ("socket publisher, 1 pair, 1,000 msg/s", "socket", 1, 1000.0),
                ("REST publisher, 1 pair, 1,000 msg/s", "rest", 1, 1000.0),
            ]
            print(f"{'case':42} {'msg/s':>9} {'p50 ms':>8} {'p99 ms':>8} | {'relay msg/s':>11} {'p99 ms':>7} {'ratio':>6}")
            for name, kind, n, rate in cases:
                ours = [measure(daemon.port, pairs[:n], kind, args.seconds, rate) for _ in range(args.runs)]
                base = [measure(relay_port, pairs[:n], kind, args.seconds, rate) for _ in range(args.runs)]
                rate_o = statistics.median(r[0] for r in ours)
                p50_o = statistics.median(r[1] for r in ours)
                p99_o = statistics.median(r[2] for r in ours)
                rate_b = statistics.median(r[0] for r in base)
                p99_b = statistics.median(r[2] for r in base)
                print(f"{name:42} {rate_o:9.0f} {p50_o:8.2f} {p99_o:8.2f} | {rate_b:11.0f} {p99_b:7.2f} "
                      f"{rate_o / rate_b:6.2f}", flush=True)
            before, after = waiting_rss(daemon, waiting_tx)
            print(f"RSS with 10,000 messages waiting for a receiver not connected: {before / 1024:.1f} MiB -> "
                  f"{after / 1024:.1f} MiB (growth {(after - before) / 1024:.2f} MiB)")
        finally:
            relay.shutdown()
            daemon.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
