"""Messages across two nodes: socket publisher on daemon A -> router -> socket receiver on daemon B.

    .venv/bin/python bench/bench_nodes.py [--runs 3] [--count 3000] [--rate 500]   (root: RabbitMQ)
    RABBIT_PORT=26800 .venv/bin/python bench/bench_nodes.py

Two real iofogd processes (two roots, two loopback ports) follow a minimal
Controller double written below (``ControllerDouble``: the few agent endpoints
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
import http.client
import http.server
import json
import os
import shutil
import socket
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
from iofogd.bus import message as m  # noqa: E402

WINDOW = 256   # unreceipted messages a socket publisher keeps in flight


# -- a minimal Controller: provisioning, the router's address, one route ------------------------


class ControllerDouble:
    """Answers the agent API calls iofogd makes (modelled on the test suite's stand-in, far
    smaller): GET status, POST agent/provision, GET/PATCH agent/config, GET/PATCH
    agent/config/changes (never a flag: the first cycle reads everything), PUT agent/status,
    GET agent/microservices, agent/registries, agent/edgeResources.  Anything else: 404."""

    def __init__(self, router_port: int) -> None:
        self.router_port = router_port
        self.fogs: Dict[str, Dict[str, Any]] = {}   # token or key -> fog
        double = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}") if length else {}
                status, answer = double.dispatch(self.command, self.path.split("?")[0], self.headers, body)
                raw = b"" if answer is None else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/api/v3/"

    def add_fog(self, microservices: List[Dict[str, Any]]) -> str:
        """A node with these microservices; returns its provisioning key."""
        key = uuid.uuid4().hex[:8]
        self.fogs[key] = {"uuid": uuid.uuid4().hex, "token": uuid.uuid4().hex, "microservices": microservices}
        return key

    def dispatch(self, method: str, path: str, headers: Any, body: Any) -> Tuple[int, Any]:
        route = path[len("/api/v3/"):] if path.startswith("/api/v3/") else path
        if (method, route) == ("GET", "status"):
            return 200, {"status": "online", "timestamp": int(time.time() * 1000)}
        if (method, route) == ("POST", "agent/provision"):
            fog = self.fogs.get(str(body.get("key")))
            if fog is None:
                return 404, {"name": "NotFoundError", "message": "Invalid Provisioning Key"}
            self.fogs[fog["token"]] = fog
            return 200, {"uuid": fog["uuid"], "token": fog["token"]}
        fog = self.fogs.get(str(headers.get("Authorization")))
        if fog is None or fog["token"] != headers.get("Authorization"):
            return 401, {"name": "AuthenticationError", "message": "authorization failed"}
        if method in ("PATCH", "PUT"):
            return (200, {}) if route == "agent/config/changes" else (204, None)
        answers = {
            "agent/config": {"routerHost": "127.0.0.1", "routerPort": self.router_port},
            "agent/config/changes": {"lastUpdated": "2026-01-01T00:00:00.000Z"},
            "agent/microservices": {"microservices": fog["microservices"]},
            "agent/registries": {"registries": []},
            "agent/edgeResources": {"edgeResources": []},
        }
        if method == "GET" and route in answers:
            return 200, answers[route]
        return 404, {"name": "NotFoundError", "message": f"Cannot {method} {path}"}

    def start(self) -> ControllerDouble:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def microservice(ms_uuid: str, routes: List[str], consumer: bool) -> Dict[str, Any]:
    """One element of GET agent/microservices (the Controller's keys)."""
    return {"uuid": ms_uuid, "imageId": "busybox:latest", "config": "{}", "rebuild": False,
            "rootHostAccess": False, "logSize": 50, "registryId": 1, "portMappings": [], "volumeMappings": [],
            "imageSnapshot": "", "delete": False, "deleteWithCleanup": False, "env": [], "extraHosts": [],
            "cmd": [], "routes": routes, "isConsumer": consumer}


# -- a daemon ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    def __init__(self, root: str) -> None:
        self.root, self.port = root, free_port()
        os.makedirs(root, exist_ok=True)
        self.log_file = open(os.path.join(root, "daemon.log"), "ab")
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen([sys.executable, "-m", "iofogd", "--root", root, "--address", "127.0.0.1",
                                      "--port", str(self.port)], env=env, cwd=REPO,
                                     stdout=self.log_file, stderr=self.log_file)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"iofogd did not start: {self.log()[-2000:]}")
                time.sleep(0.05)

    def log(self) -> str:
        with open(os.path.join(self.root, "daemon.log"), encoding="utf-8", errors="replace") as f:
            return f.read()

    def request(self, method: str, path: str, body: Any = None) -> Tuple[int, Any]:
        with open(os.path.join(self.root, "etc/iofog-agent/local-api")) as f:
            token = f.read().strip()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, json.dumps(body) if body is not None else None,
                         {"Authorization": token, "Content-Type": "application/json"})
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        return resp.status, json.loads(raw) if raw else None

    def provision(self, controller: ControllerDouble, key: str) -> None:
        status, answer = self.request("POST", "/v2/config", {
            "controller-url": controller.url, "status-frequency": "1", "changes-frequency": "1"})
        assert status == 200, answer
        status, answer = self.request("POST", "/v2/provision", {"provisioning-key": key})
        assert status == 200, answer

    def router_connected(self) -> bool:
        status, body = self.request("GET", "/v2/status")
        return status == 200 and str(body.get("router", "")).startswith("connected")

    def cpu_seconds(self) -> float:
        """user + system CPU time of the daemon so far (/proc/<pid>/stat)."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log_file.close()


def wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


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


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--count", type=int, default=3000, help="messages in a burst")
    parser.add_argument("--rate", type=float, default=500, help="messages/s of the paced latency phase")
    args = parser.parse_args(argv)
    rabbit_port = os.environ.get("RABBIT_PORT", "25694")
    script = os.path.join(REPO, "scripts", "rabbitmq.sh")
    env = dict(os.environ, RABBIT_PORT=rabbit_port)
    subprocess.run([script, "start"], env=env, check=True, capture_output=True)
    url = f"amqp://guest:guest@127.0.0.1:{rabbit_port}"
    tmp = tempfile.mkdtemp(prefix="bench-nodes-")
    controller = ControllerDouble(int(rabbit_port)).start()
    daemons: List[Daemon] = []
    try:
        tx, rx = uuid.uuid4().hex, uuid.uuid4().hex
        key_a = controller.add_fog([microservice(tx, [rx], False)])
        key_b = controller.add_fog([microservice(rx, [], True)])
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
        for _ in range(args.runs):
            before = (a.cpu_seconds(), b.cpu_seconds())
            throughput, _ = run_nodes(a, b, tx, rx, args.count, 0)
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
