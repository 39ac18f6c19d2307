"""Echo round trips per second and latency: iofogd.ws against a bare RFC 6455 echo loop.

    .venv/bin/python -m bench.bench_ws [--seconds 1.0] [--runs 5] [--size 32]

Both servers run in this process on 127.0.0.1: the conformance echo server
(ThreadingHTTPServer + iofogd.ws.session, the daemon's code path) and, as the
baseline, a minimal thread-per-connection echo loop written below with no
validation at all.  The clients run in a child process (so that they do not
share the servers' GIL), each one sending a masked binary message and waiting
for its echo, in a loop.  For 1 and 32 clients it prints the median over
``--runs`` runs of round trips/s and p50/p99 latency, and the ratio
ours/baseline.  It prints figures and never fails on them.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import multiprocessing
import os
import socket
import socketserver
import statistics
import struct
import threading
import time
from typing import List, Tuple

from tests.conformance.echo_server import serve, stop

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# -- the baseline: a bare echo loop ------------------------------------------------------


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


class BareEcho(socketserver.BaseRequestHandler):
    """Handshake by string search, then echo frames: no checks, no limits, no pings."""

    def handle(self) -> None:
        sock: socket.socket = self.request
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        key = head.split(b"Sec-WebSocket-Key: ", 1)[1].split(b"\r\n", 1)[0]
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        try:
            while True:
                b0, b1 = _recv_exact(sock, 2)
                n = b1 & 0x7F
                if n == 126:
                    (n,) = struct.unpack("!H", _recv_exact(sock, 2))
                elif n == 127:
                    (n,) = struct.unpack("!Q", _recv_exact(sock, 8))
                mask = _recv_exact(sock, 4)
                data = _recv_exact(sock, n)
                key = (mask * (n // 4 + 1))[:n]
                payload = (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
                if b0 & 0x0F == 0x8:
                    sock.sendall(bytes((0x88, len(payload))) + payload)
                    return
                head = bytes((b0, n)) if n < 126 else bytes((b0, 126)) + struct.pack("!H", n)
                sock.sendall(head + payload)
        except (EOFError, OSError):
            pass


class BareServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


# -- the clients (child process) ----------------------------------------------------------


def _client(port: int, size: int, seconds: float, start: threading.Barrier, out: List[float]) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16))
    sock.sendall(b"GET /bench HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    mask = os.urandom(4)
    payload = os.urandom(size)
    masked = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
    frame = (bytes((0x82, 0x80 | size)) if size < 126 else bytes((0x82, 0xFE)) + struct.pack("!H", size)) + mask + masked
    reply_len = len(frame) - 4
    start.wait()
    deadline = time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        if t0 >= deadline:
            break
        sock.sendall(frame)
        _recv_exact(sock, reply_len)
        out.append(time.perf_counter() - t0)
    sock.sendall(b"\x88\x82" + mask + bytes(a ^ b for a, b in zip(b"\x03\xe8", mask)))
    sock.close()


def _run_clients(port: int, clients: int, size: int, seconds: float, queue: "multiprocessing.Queue[Tuple[int, List[float]]]") -> None:
    start = threading.Barrier(clients)
    results: List[List[float]] = [[] for _ in range(clients)]
    threads = [threading.Thread(target=_client, args=(port, size, seconds, start, results[i])) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies = [x for r in results for x in r]
    queue.put((len(latencies), latencies))


def measure(port: int, clients: int, size: int, seconds: float) -> Tuple[float, float, float]:
    """(round trips/s, p50 ms, p99 ms) of one run."""
    ctx = multiprocessing.get_context("spawn")
    queue: "multiprocessing.Queue[Tuple[int, List[float]]]" = ctx.Queue()
    proc = ctx.Process(target=_run_clients, args=(port, clients, size, seconds, queue))
    proc.start()
    count, latencies = queue.get(timeout=seconds + 60)
    proc.join()
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    return count / seconds, p50, p99


def main() -> None:
    parser = argparse.ArgumentParser(description="WebSocket echo benchmark")
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", type=int, default=32, help="message size in bytes (< 65536)")
    args = parser.parse_args()

    ours, _ = serve(0)
    bare = BareServer(("127.0.0.1", 0), BareEcho)
    threading.Thread(target=bare.serve_forever, args=(0.05,), daemon=True).start()
    targets = {"iofogd.ws": ours.server_address[1], "bare loop": bare.server_address[1]}
    print(f"echo of {args.size}-byte binary messages, median of {args.runs} runs of {args.seconds:.1f}s")
    print(f"{'server':<10} {'clients':>7} {'round trips/s':>14} {'p50 ms':>8} {'p99 ms':>8}")
    try:
        for clients in (1, 32):
            rates = {}
            for name, port in targets.items():
                runs = [measure(port, clients, args.size, args.seconds) for _ in range(args.runs)]
                rate = statistics.median(r[0] for r in runs)
                p50 = statistics.median(r[1] for r in runs)
                p99 = statistics.median(r[2] for r in runs)
                rates[name] = rate
                print(f"{name:<10} {clients:>7} {rate:>14.0f} {p50:>8.3f} {p99:>8.3f}")
            print(f"{'':<10} {clients:>7} ratio iofogd.ws / bare loop = {rates['iofogd.ws'] / rates['bare loop']:.2f}")
    finally:
        stop(ours)
        bare.shutdown()
        bare.server_close()


if __name__ == "__main__":
    main()
