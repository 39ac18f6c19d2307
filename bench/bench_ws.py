"""WebSocket figures: echo round trips against a bare framer, and the daemon under socket load.

    .venv/bin/python bench/bench_ws.py [--runs 5] [--seconds 2] [--size 32] [--only echo|load|fragments]
                                       [--clients 1,32] [--pin] [--sockets 300] [--rest-clients 32]

Echo: each server runs ALONE in its own process while it is measured (started,
loaded, stopped; then the next), the load comes from a third process, and the
figure is the median of ``--runs`` runs, with the ratio ours / baseline.

- ours: :mod:`iofogd.ws.echo`: a ThreadingHTTPServer with TCP_NODELAY that
  takes the daemon's upgrade steps (the pure handshake, the 101 in one write,
  :func:`~iofogd.ws.session.read_buffered`) and runs the daemon's
  :class:`~iofogd.ws.session.WebSocketSession`;
- baseline: a bare thread-per-connection framer written below the way a
  competent engineer writes one with the standard library: TCP_NODELAY on the
  accepted socket, a read buffer, one ``sendall`` per frame, no validation;
- the load client: one process, one thread, every connection non-blocking in an
  epoll selector; each connection sends one masked message, waits for its echo
  and sends the next. Every round trip is timed on its own and p99/max are
  printed, so a 40 ms delayed-ACK stall cannot hide in an average.

Beside the rate, the server process's CPU time (user + system, /proc) per
round trip, and the Python each server runs per message with the kernel taken
out (both loops reading one frame at a time from an in-memory socket, timed
with ``time.thread_time``). On this shared 2-core machine the rate and even
the CPU per round trip move with what the other processes do (the wake-ups of
the peer are most of it); the in-memory figure is the one that does not.

Load (issue 11): the daemon started as ``python -m iofogd`` on a throwaway root,
300 control sockets held open (each sending an SDK ping every second), 32 REST clients
looping on GET /v2/status, and a probe timing GET /v2/version: p50/p99/max of the
probe and the daemon's peak RSS.

Fragments (issue 12): the same daemon, 60 connections each sending one binary
message in 2-byte fragments that never ends (reconnecting when the daemon cuts
them off), while the probe times /v2/version: p99 and the daemon's peak RSS.

It prints figures and never fails on them. On a shared machine they are noisy.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import multiprocessing
import os
import selectors
import shutil
import socket
import socketserver
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench.procfs import cpu_seconds, status_kib  # noqa: E402

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Optional, Tuple

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {port}")


# -- the baseline: a bare thread-per-connection framer -------------------------------------


class BareFramer(socketserver.BaseRequestHandler):
    """Handshake by string search, then echo frames: TCP_NODELAY, one write per frame."""

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                return
            buf += chunk
        head, buf = buf.split(b"\r\n\r\n", 1)
        key = head.split(b"Sec-WebSocket-Key: ", 1)[1].split(b"\r\n", 1)[0]
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        bare_echo(sock, buf)


def bare_echo(sock: socket.socket, buf: bytes) -> None:
    """The bare framer's loop after the handshake: parse every whole frame, echo it, read more."""
    try:
        while True:
            while True:  # parse every whole frame in the buffer
                if len(buf) < 6:
                    break
                b0, b1 = buf[0], buf[1]
                n = b1 & 0x7F
                pos = 2
                if n == 126:
                    (n,) = struct.unpack_from("!H", buf, 2)
                    pos = 4
                elif n == 127:
                    (n,) = struct.unpack_from("!Q", buf, 2)
                    pos = 10
                if len(buf) < pos + 4 + n:
                    break
                mask = buf[pos:pos + 4]
                data = buf[pos + 4:pos + 4 + n]
                buf = buf[pos + 4 + n:]
                key4 = (mask * (n // 4 + 1))[:n]
                payload = (int.from_bytes(data, "big") ^ int.from_bytes(key4, "big")).to_bytes(n, "big")
                op = b0 & 0x0F
                if op == 0x8:
                    sock.sendall(bytes((0x88, len(payload))) + payload)
                    return
                if op == 0x9:
                    op = 0xA
                head2 = bytes((0x80 | op, n)) if n < 126 else (
                    struct.pack("!BBH", 0x80 | op, 126, n) if n < 65536 else struct.pack("!BBQ", 0x80 | op, 127, n))
                sock.sendall(head2 + payload)
            chunk = sock.recv(65536)
            if not chunk:
                return
            buf += chunk
    except OSError:
        pass


class BareServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def run_bare(port: int) -> None:
    server = BareServer(("127.0.0.1", port), BareFramer)
    server.serve_forever()


def run_ours(port: int) -> None:
    from iofogd.ws.echo import EchoServer
    import logging
    logging.basicConfig(level=logging.WARNING)
    EchoServer(("127.0.0.1", port)).serve_forever()


# -- the load client --------------------------------------------------------------------


def handshake(port: int, path: str = "/bench") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16))
    sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
    return sock


def client_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    head = bytes((b0, 0x80 | n)) if n < 126 else struct.pack("!BBH", b0, 0xFE, n)
    key = (mask * (n // 4 + 1))[:n]
    return head + mask + bytes(a ^ b for a, b in zip(payload, key))


def echo_load(port: int, clients: int, size: int, seconds: float,
              out: "multiprocessing.Queue[Tuple[int, List[float]]]") -> None:
    """Closed-loop echo clients in one epoll loop; puts (round trips, latencies)."""
    frame = client_frame(0x2, os.urandom(size))
    reply = len(frame) - 4
    sel = selectors.DefaultSelector()
    socks = [handshake(port) for _ in range(clients)]
    state: Dict[socket.socket, List[float]] = {}
    latencies: List[float] = []
    deadline = time.perf_counter() + seconds
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        state[s] = [0.0, 0.0]  # [bytes received of the current reply, send time]
    for s in socks:
        state[s][1] = time.perf_counter()
        s.send(frame)
    while time.perf_counter() < deadline:
        for key, _ in sel.select(1.0):
            s = key.fileobj  # type: ignore[assignment]
            try:
                data = s.recv(65536)  # type: ignore[union-attr]
            except BlockingIOError:
                continue
            st = state[s]  # type: ignore[index]
            st[0] += len(data)
            if st[0] >= reply:
                now = time.perf_counter()
                latencies.append(now - st[1])
                st[0] -= reply
                st[1] = now
                s.send(frame)  # type: ignore[union-attr]
    for s in socks:
        s.close()
    out.put((len(latencies), latencies))


def percentile(sorted_values: List[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p))]


def measure_echo(target: Callable[[int], None], clients: int, size: int,
                 seconds: float, pin: bool = False, one_cpu: bool = False) -> Tuple[float, float, float, float]:
    """Start ``target`` alone in a process, load it, stop it.

    Returns (round trips/s, p99 ms, max ms, server CPU us per round trip). The
    CPU figure is what the server process spent (user + system) while the load
    ran, divided by the round trips: on a shared machine it moves much less
    than the wall-clock rate, which depends on who else has the cores.

    ``pin``: the server on CPU 0 and the load client on CPU 1. Unpinned, the
    scheduler sometimes puts both on one core and sometimes not, and one
    client's rate jumps between ~35,000 and ~60,000 round trips/s for either
    server (measured on this 2-core machine); pinned, every run is placed alike.

    ``one_cpu``: the server on CPU 0, the client free: how the daemon runs its
    WebSocket sessions (it keeps its threads on one CPU, docs/host.md#cpu).
    """
    ctx = multiprocessing.get_context("spawn")
    port = free_port()
    server = ctx.Process(target=target, args=(port,), daemon=True)
    server.start()
    if pin or one_cpu:   # before the server has started a thread: they all inherit it
        os.sched_setaffinity(server.pid, {0})  # type: ignore[arg-type]
    try:
        wait_listening(port)
        queue: "multiprocessing.Queue[Tuple[int, List[float]]]" = ctx.Queue()
        loader = ctx.Process(target=echo_load, args=(port, clients, size, seconds, queue))
        cpu0 = cpu_seconds(server.pid)  # type: ignore[arg-type]
        loader.start()
        if pin:
            os.sched_setaffinity(loader.pid, {1})  # type: ignore[arg-type]
        count, latencies = queue.get(timeout=seconds + 60)
        cpu = cpu_seconds(server.pid) - cpu0  # type: ignore[arg-type]
        loader.join()
    finally:
        server.terminate()
        server.join(10)
    latencies.sort()
    return (count / seconds, percentile(latencies, 0.99) * 1000, latencies[-1] * 1000 if latencies else 0.0,
            cpu / count * 1e6 if count else float("nan"))


class MemorySocket:
    """Just enough of a socket for both echo loops: ``count`` reads of ``frame``, then EOF;
    writes are dropped. It takes the kernel (and the other processes on the machine) out
    of the figure, leaving the Python each server runs per message."""

    def __init__(self, frame: bytes, count: int) -> None:
        self.frame = frame
        self.left = count

    def recv(self, size: int) -> bytes:
        if self.left <= 0:
            return b""
        self.left -= 1
        return self.frame

    def sendall(self, data: bytes) -> None:
        pass

    def settimeout(self, timeout: Optional[float]) -> None:
        pass

    def setsockopt(self, *args: object) -> None:
        pass

    def shutdown(self, how: int) -> None:
        pass


def python_per_message(size: int, count: int = 100_000) -> Dict[str, float]:
    """Thread CPU time per echoed message, each server's loop on a MemorySocket (us)."""
    from iofogd.ws.echo import ECHO_LIMITS, echo
    from iofogd.ws.envelope import SDK_PING, sdk_pong
    from iofogd.ws.session import WebSocketSession

    frame = client_frame(0x2, os.urandom(size))

    def ours() -> None:
        session = WebSocketSession(
            MemorySocket(frame, count), ECHO_LIMITS,  # type: ignore[arg-type]
            ping_payload=SDK_PING, pong_payload=sdk_pong)
        session.run(echo)

    def bare() -> None:
        bare_echo(MemorySocket(frame, count), b"")  # type: ignore[arg-type]

    result = {}
    for name, loop in (("iofogd.ws", ours), ("bare", bare)):
        times = []
        for _ in range(5):
            t0 = time.thread_time()
            loop()
            times.append((time.thread_time() - t0) / count * 1e6)
        result[name] = min(times)
    return result


def bench_echo(args: argparse.Namespace) -> None:
    # (target, server on one CPU). The aim compares the first two; the last two
    # place both servers as the daemon places itself (its threads on one CPU,
    # docs/host.md#cpu), which is how its WebSocket sessions run.
    targets: Dict[str, Tuple[Callable[[int], None], bool]] = {
        "iofogd.ws": (run_ours, False), "bare": (run_bare, False)}
    if not args.pin:
        targets.update({"ws 1cpu": (run_ours, True), "bare 1cpu": (run_bare, True)})
    print(f"echo of {args.size}-byte binary messages; median of {args.runs} runs of {args.seconds:.1f}s, "
          "each server alone" + (", server on CPU 0, client on CPU 1" if args.pin else
                                 "; '1cpu': the server on one CPU (as the daemon), the client free"))
    print(f"{'server':<10} {'clients':>7} {'round trips/s':>14} {'p99 ms':>8} {'max ms':>8} {'server CPU us/rt':>17}")
    for clients in args.clients:
        results: Dict[str, List[Tuple[float, float, float, float]]] = {name: [] for name in targets}
        for _ in range(args.runs):  # interleaved, so that a noisy minute hits both
            for name, (target, one_cpu) in targets.items():
                results[name].append(measure_echo(target, clients, args.size, args.seconds, args.pin, one_cpu))
        rates = {}
        cpus = {}
        for name, runs in results.items():
            rate = statistics.median(r[0] for r in runs)
            rates[name] = rate
            cpus[name] = statistics.median(r[3] for r in runs)
            print(f"{name:<10} {clients:>7} {rate:>14.0f} {statistics.median(r[1] for r in runs):>8.2f} "
                  f"{statistics.median(r[2] for r in runs):>8.2f} {cpus[name]:>17.1f}")
        print(f"{'ratio':<10} {clients:>7} iofogd.ws / bare = {rates['iofogd.ws'] / rates['bare']:.2f} "
              f"(rate), {cpus['iofogd.ws'] / cpus['bare']:.2f} (server CPU per round trip)")
        if "ws 1cpu" in rates:
            print(f"{'ratio':<10} {clients:>7} ws 1cpu / bare = {rates['ws 1cpu'] / rates['bare']:.2f} "
                  f"(the daemon's placement vs the baseline's); ws 1cpu / bare 1cpu = "
                  f"{rates['ws 1cpu'] / rates['bare 1cpu']:.2f} (both on one CPU)")
    python = python_per_message(args.size)
    print(f"Python per message, each loop on an in-memory socket (no kernel, best of 5 x 100,000): "
          f"iofogd.ws {python['iofogd.ws']:.2f} us, bare {python['bare']:.2f} us, "
          f"ratio {python['iofogd.ws'] / python['bare']:.2f}")


# -- the daemon under load ----------------------------------------------------------------


class Daemon:
    """``python -m iofogd`` on a throwaway root, loopback only."""

    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="bench-ws-")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "iofogd", "--root", self.root, "--address", "127.0.0.1",
             "--port", str(self.port)],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        token_path = os.path.join(self.root, "etc/iofog-agent/local-api")
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("iofogd exited during start-up")
            try:
                with open(token_path) as f:
                    self.token = f.read().strip()
                if self.token and self.get("/v2/status")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("iofogd did not start")
            time.sleep(0.05)

    def get(self, path: str) -> Tuple[int, float]:
        """(status, seconds) of one GET on a fresh connection."""
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path, headers={"Authorization": self.token})
            response = conn.getresponse()
            response.read()
            return response.status, time.perf_counter() - t0
        finally:
            conn.close()

    def peak_rss_mib(self) -> float:
        return status_kib(self.proc.pid, "VmHWM") / 1024

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def hold_control_sockets(port: int, count: int, ready: "multiprocessing.Event", stop: "multiprocessing.Event") -> None:
    """Open ``count`` control sockets (one id each) and keep them busy: a ping from each one
    every second, and an answer to the daemon's pings."""
    socks = [handshake(port, f"/v2/control/socket/id/bench-{i}") for i in range(count)]
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    ready.set()
    pong = client_frame(0xA, b"\x0a")
    ping = client_frame(0x9, b"\x09")   # each socket pings once a second, as the SDKs keep alive
    next_ping = time.monotonic()
    while not stop.is_set():
        if time.monotonic() >= next_ping:
            next_ping += 1.0
            for s in socks:
                try:
                    s.send(ping)
                except OSError:
                    pass
        for key, _ in sel.select(0.05):
            s = key.fileobj
            try:
                data = s.recv(4096)  # type: ignore[union-attr]
            except (BlockingIOError, ConnectionError):
                continue
            if not data:
                sel.unregister(s)
                continue
            if data[:1] == b"\x89":  # a ping from the daemon's keepalive
                s.send(pong)  # type: ignore[union-attr]
    for s in socks:
        s.close()


def rest_load(port: int, token: str, stop: "multiprocessing.Event") -> None:
    """A keep-alive client looping on GET /v2/status until ``stop``."""
    request = f"GET /v2/status HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n\r\n".encode()
    while not stop.is_set():
        try:
            conn = socket.create_connection(("127.0.0.1", port), timeout=10)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            reader = conn.makefile("rb")
            while not stop.is_set():
                conn.sendall(request)
                length = 0
                status = reader.readline()
                if not status:
                    break
                while True:
                    line = reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                reader.read(length)
            conn.close()
        except OSError:
            time.sleep(0.01)


def rest_clients(port: int, token: str, clients: int, stop: "multiprocessing.Event") -> None:
    threads = [threading.Thread(target=rest_load, args=(port, token, stop)) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def fragment_attack(port: int, connections: int, stop: "multiprocessing.Event") -> None:
    """``connections`` sockets sending one never-ending binary message in 2-byte fragments."""
    first = client_frame(0x2, b"ab", fin=False)
    more = client_frame(0x0, b"cd", fin=False) * 256  # 512 fragments per write
    socks: List[Optional[socket.socket]] = [None] * connections
    while not stop.is_set():
        for i in range(connections):
            s = socks[i]
            try:
                if s is None:
                    s = socks[i] = handshake(port, f"/v2/control/socket/id/attacker-{i}")
                    s.setblocking(False)
                    s.send(first)
                s.send(more)
            except BlockingIOError:
                pass
            except OSError:
                if s is not None:
                    s.close()
                socks[i] = None
        time.sleep(0.001)
    for s in socks:
        if s is not None:
            s.close()


def probe(daemon: Daemon, seconds: float) -> Tuple[List[float], int]:
    """Time GET /v2/version every 20 ms for ``seconds``: (latencies, non-200 answers)."""
    latencies: List[float] = []
    failed = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            status, elapsed = daemon.get("/v2/version")
        except OSError:
            status, elapsed = 0, 10.0
        latencies.append(elapsed)
        failed += status != 200
        time.sleep(0.02)
    latencies.sort()
    return latencies, failed


def report_probe(name: str, latencies: List[float], failed: int, rss: float, aims: str) -> None:
    print(f"{name}: /v2/version p50 {percentile(latencies, 0.5) * 1000:.1f} ms, "
          f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms, "
          f"{failed} of {len(latencies)} not 200; daemon peak RSS {rss:.1f} MiB   ({aims})")


def bench_load(args: argparse.Namespace) -> None:
    ctx = multiprocessing.get_context("spawn")
    daemon = Daemon()
    stop = ctx.Event()
    ready = ctx.Event()
    procs = []
    try:
        holder = ctx.Process(target=hold_control_sockets, args=(daemon.port, args.sockets, ready, stop))
        holder.start()
        procs.append(holder)
        if not ready.wait(60):
            raise RuntimeError("the 300 control sockets did not open")
        rest = ctx.Process(target=rest_clients, args=(daemon.port, daemon.token, args.rest_clients, stop))
        rest.start()
        procs.append(rest)
        time.sleep(0.5)
        latencies, failed = probe(daemon, args.seconds * 3)
        report_probe(f"{args.sockets} control sockets + {args.rest_clients} REST clients", latencies, failed, daemon.peak_rss_mib(),
                     "aim: p99 < 20 ms, RSS < 40 MiB")
    finally:
        stop.set()
        for p in procs:
            p.join(30)
        daemon.stop()


def bench_fragments(args: argparse.Namespace) -> None:
    ctx = multiprocessing.get_context("spawn")
    daemon = Daemon()
    stop = ctx.Event()
    attacker = ctx.Process(target=fragment_attack, args=(daemon.port, 60, stop))
    try:
        attacker.start()
        time.sleep(1.0)
        latencies, failed = probe(daemon, args.seconds * 3)
        report_probe("60 connections of 2-byte fragments", latencies, failed, daemon.peak_rss_mib(),
                     "aim: p99 < 100 ms, RSS < 64 MiB")
    finally:
        stop.set()
        attacker.join(30)
        daemon.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="WebSocket benchmarks")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", type=int, default=32, help="message size in bytes (< 65536)")
    parser.add_argument("--only", choices=("echo", "load", "fragments"))
    parser.add_argument("--pin", action="store_true",
                        help="echo: the server on CPU 0, the load client on CPU 1 (see measure_echo)")
    parser.add_argument("--clients", type=lambda text: [int(n) for n in text.split(",")], default=[1, 32],
                        help="echo client counts, comma-separated (default 1,32)")
    parser.add_argument("--sockets", type=int, default=300, help="control sockets held open in the load case")
    parser.add_argument("--rest-clients", type=int, default=32, help="busy REST clients in the load case")
    args = parser.parse_args()
    if args.only in (None, "echo"):
        bench_echo(args)
    if args.only in (None, "load"):
        bench_load(args)
    if args.only in (None, "fragments"):
        bench_fragments(args)


if __name__ == "__main__":
    main()
