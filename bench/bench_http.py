"""Local API figures: start-to-ready, idle RSS, GET /v2/status throughput and p99.

    python bench/bench_http.py [--runs 5] [--seconds 3] [--clients 32]

Prints medians of several runs; never passes or fails on time. The throughput
baseline is a bare ThreadingHTTPServer JSON endpoint served from this process,
loaded by the same load generator (worker processes with keep-alive raw
sockets), so the ratio compares the daemon with the least a Python HTTP server
can do on this machine.

Start-up and RSS are measured as installed: the daemon and the bare server both
run on a throwaway virtual environment whose site-packages holds iofogd and
psutil as a wheel puts them there, and the daemon is started by an ``iofogd``
console script like the one pip writes (what the systemd unit runs). The
development venv would add its editable-install hook to every interpreter
start (pip's ``__editable__`` finder, imported by site), which no gateway runs;
``--checkout`` measures ``python -m iofogd`` on the development interpreter
instead.

Two start-ups are timed per run: the first on an empty root (it writes
config.xml, its backup and the token, each fsynced) and a restart on the files
that left (a gateway's every boot). Idle RSS is taken after the restart.
"""
from __future__ import annotations

import argparse
import compileall
import http.client
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import venv
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tests.daemon_process import free_port  # noqa: E402


def installed_python(where: str) -> str:
    """A venv (no pip) whose site-packages has iofogd and psutil as installed."""
    venv.EnvBuilder(with_pip=False, symlinks=True).create(where)
    python = os.path.join(where, "bin", "python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    os.symlink(os.path.join(REPO, "iofogd"), os.path.join(site, "iofogd"))
    try:
        import psutil
    except ImportError:
        pass  # the daemon then reads /proc, as on a gateway without psutil
    else:
        os.symlink(os.path.dirname(psutil.__file__), os.path.join(site, "psutil"))
    return python


PYTHON = sys.executable   # replaced by main() with the installed-layout interpreter
DAEMON = [sys.executable, "-m", "iofogd"]   # and this with its console script

# What pip writes for a console_scripts entry point (pip/_internal/operations/install/wheel.py).
CONSOLE_SCRIPT = """#!{python}
# -*- coding: utf-8 -*-
import re
import sys
from iofogd.daemon import main
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit(main())
"""


def console_script(python: str) -> str:
    path = os.path.join(os.path.dirname(python), "iofogd")
    with open(path, "w") as f:
        f.write(CONSOLE_SCRIPT.format(python=python))
    os.chmod(path, 0o755)
    return path


def running_after(port: int, token: str, t0: float) -> float:
    """Seconds from ``t0`` to a 200 on /v2/status, which waits for start-up phase 2
    (Docker, Controller and WebSocket layers): the daemon fully RUNNING."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/v2/status", headers={"Authorization": token})
    response = conn.getresponse()
    body = json.loads(response.read())
    if response.status != 200 or body.get("iofog-daemon") != "RUNNING":
        raise RuntimeError(f"/v2/status answered {response.status}: {body}")
    return time.perf_counter() - t0


def start_daemon(root: str, port: int) -> tuple[subprocess.Popen[bytes], float]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if PYTHON == sys.executable:
        env["PYTHONPATH"] = REPO
    t0 = time.perf_counter()
    proc = subprocess.Popen([*DAEMON, "--root", root, "--address", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    token_path = os.path.join(root, "etc/iofog-agent/local-api")
    while True:
        try:
            with open(token_path) as f:
                token = f.read().strip()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/v2/version", headers={"Authorization": token})
            if conn.getresponse().status == 200:
                return proc, time.perf_counter() - t0
        except (OSError, http.client.HTTPException):
            pass
        if proc.poll() is not None:
            raise RuntimeError("iofogd exited during start-up")
        time.sleep(0.002)


BARE_SERVER = """
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = json.dumps({"version": "x"}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def start_bare(port: int) -> tuple[subprocess.Popen[bytes], float]:
    """The same measure for a bare ThreadingHTTPServer: the floor on this machine."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([PYTHON, "-c", BARE_SERVER, str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/v2/version")
            if conn.getresponse().status == 200:
                return proc, time.perf_counter() - t0
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.002)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Baseline(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = json.dumps({"status": "ok", "value": "about 1.00 MiB"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _client(port: int, request: bytes, seconds: float, out: list[float]) -> None:
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = s.makefile("rb")
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        s.sendall(request)
        length = 0
        while True:
            line = f.readline()
            if line in (b"\r\n", b""):
                break
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        f.read(length)
        out.append(time.perf_counter() - t0)
    s.close()


def _worker(port: int, request: bytes, clients: int, seconds: float, q: "multiprocessing.Queue[list[float]]") -> None:
    results: list[list[float]] = [[] for _ in range(clients)]
    threads = [threading.Thread(target=_client, args=(port, request, seconds, r)) for r in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    q.put([x for r in results for x in r])


def load(port: int, request: bytes, clients: int, seconds: float) -> tuple[float, float]:
    """(requests/s, p99 ms) with ``clients`` keep-alive connections over two processes."""
    procs = 2
    q: multiprocessing.Queue[list[float]] = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=_worker, args=(port, request, clients // procs, seconds, q))
               for _ in range(procs)]
    for w in workers:
        w.start()
    latencies = [x for _ in workers for x in q.get()]
    for w in workers:
        w.join()
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)] * 1000 if latencies else 0.0
    return len(latencies) / seconds, p99


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--checkout", action="store_true",
                    help="run on this interpreter (the development venv) instead of an installed layout")
    ap.add_argument("--startup-only", action="store_true", help="skip the throughput runs")
    args = ap.parse_args()
    global PYTHON, DAEMON
    layout = tempfile.TemporaryDirectory()
    if not args.checkout:
        PYTHON = installed_python(layout.name)
        DAEMON = [console_script(PYTHON)]
    print(f"interpreter: {'development venv (checkout)' if args.checkout else 'installed layout'} ({PYTHON}); "
          f"daemon: {' '.join(DAEMON)}")
    # An installed wheel or .deb has its bytecode compiled (pip and dh-python do
    # it); a checkout run with PYTHONDONTWRITEBYTECODE=1 would compile every
    # module at every start and measure the compiler instead.
    compileall.compile_dir(os.path.join(REPO, "iofogd"), quiet=1)

    first, ready, running, rss = [], [], [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as root:
            proc, t = start_daemon(root, free_port())
            first.append(t * 1000)
            proc.terminate()
            proc.wait()
            port = free_port()
            t0 = time.perf_counter()
            proc, t = start_daemon(root, port)
            ready.append(t * 1000)
            with open(os.path.join(root, "etc/iofog-agent/local-api")) as f:
                running.append(running_after(port, f.read().strip(), t0) * 1000)
            time.sleep(1.0)
            rss.append(rss_mib(proc.pid))
            proc.terminate()
            proc.wait()
    bare_ready, bare_rss = [], []
    for _ in range(args.runs):
        proc, t = start_bare(free_port())
        bare_ready.append(t * 1000)
        time.sleep(1.0)
        bare_rss.append(rss_mib(proc.pid))
        proc.terminate()
        proc.wait()
    bare = statistics.median(bare_ready)
    for name, times in (("start-to-ready, restart", ready), ("start-to-ready, first start", first)):
        print(f"{name} (exec to first 200 on /v2/version): median {statistics.median(times):.1f} ms "
              f"(runs: {', '.join(f'{x:.0f}' for x in times)}); bare ThreadingHTTPServer: "
              f"{bare:.1f} ms; ratio {statistics.median(times) / bare:.2f}")
    print(f"start-to-running, restart (exec to a 200 on /v2/status saying RUNNING: every layer up): "
          f"median {statistics.median(running):.1f} ms (runs: {', '.join(f'{x:.0f}' for x in running)})")
    print(f"idle RSS after 1 s: median {statistics.median(rss):.1f} MiB; bare ThreadingHTTPServer: "
          f"{statistics.median(bare_rss):.1f} MiB")

    if args.startup_only:
        return
    baseline = ThreadingHTTPServer(("127.0.0.1", 0), Baseline)
    baseline.daemon_threads = True
    threading.Thread(target=baseline.serve_forever, daemon=True).start()
    base_port = baseline.server_address[1]
    with tempfile.TemporaryDirectory() as root:
        port = free_port()
        proc, _ = start_daemon(root, port)
        with open(os.path.join(root, "etc/iofog-agent/local-api")) as f:
            token = f.read().strip()
        req = (f"GET /v2/status HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n\r\n").encode()
        base_req = b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n"
        ours, base = [], []
        for _ in range(args.runs):
            base.append(load(base_port, base_req, args.clients, args.seconds))
            ours.append(load(port, req, args.clients, args.seconds))
        proc.terminate()
        proc.wait()
    baseline.shutdown()
    o_rps = statistics.median(r for r, _ in ours)
    b_rps = statistics.median(r for r, _ in base)
    print(f"GET /v2/status, {args.clients} keep-alive clients: median {o_rps:.0f} req/s, "
          f"p99 {statistics.median(p for _, p in ours):.2f} ms")
    print(f"baseline bare ThreadingHTTPServer JSON: median {b_rps:.0f} req/s, "
          f"p99 {statistics.median(p for _, p in base):.2f} ms")
    print(f"ratio iofogd/baseline: {o_rps / b_rps:.2f}")


if __name__ == "__main__":
    main()
