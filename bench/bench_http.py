"""Local API figures: throughput and p99 under wrk, start-to-ready, idle RSS.

    python bench/bench_http.py [--runs 5] [--seconds 5] [--clients 32]
                               [--startup-only | --throughput-only] [--checkout]

Prints medians of several runs and ratios; never passes or fails on time.

Throughput: GET /v2/status, GET /v2/version and POST /v2/config/get, loaded by
wrk (Debian's package, installed with apt-get when missing: a C load
generator, so the figure is the server's, not the client's) with
``-t2 -c32``, against two baselines serving the same endpoints:

- a bare ThreadingHTTPServer JSON endpoint as a competent engineer writes it:
  TCP_NODELAY on every accepted socket and each response in one write (without
  them every answer waits ~40 ms for a delayed ACK, and so did the old
  baseline of this script, which made its ratio meaningless);
- aiohttp, the asyncio peer (a bench-only dependency, pip-installed when
  missing; not a dependency of iofogd).

Two more rows, outside the aims, say where the difference comes from: iofogd
with its threads free to run on any CPU (``--cpus all``; by default it keeps
them on one, docs/host.md#cpu) and the bare server held on one CPU the same way.

POST /v2/config/get answers 200 with a microservice's configuration on all
three: ``{"status":"okay","config":"<the config string>"}``, the same body
bytes. The daemon serves it through the real path of a provisioned node
restarted while its Controller is down (docs/controller-api.md#offline-cache): before it starts, the
bench lays down what provisioning and the last Controller fetch leave on disk
(uuid and token in config.xml, written by iofogd's ConfigStore; the
microservice list in the offline cache, written by iofogd's OfflineCache with
its checksum), with controller_url on a closed loopback port and docker_url on
a socket that does not exist, so no Controller and no container is involved;
the daemon loads the cache at its first failed ping. The baselines answer the
same bytes from a constant.

Each server runs alone while it is measured, all three on this interpreter.
On a machine shared with other work the figures are noisy: re-run on a quiet one.

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
import logging
import os
import socket
import statistics
import subprocess
import shutil
import sys
import tempfile
import time
import venv

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench.procfs import cpu_seconds, status_kib  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def installed_python(where: str, with_psutil: bool = True) -> str:
    """A venv (no pip) whose site-packages has iofogd (and psutil) as installed."""
    venv.EnvBuilder(with_pip=False, symlinks=True).create(where)
    python = os.path.join(where, "bin", "python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    os.symlink(os.path.join(REPO, "iofogd"), os.path.join(site, "iofogd"))
    try:
        if not with_psutil:
            raise ImportError
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


def config_get_answer(port: int, timeout: float = 30.0) -> bytes:
    """The body of a 200 to POST /v2/config/get for the bench's microservice, which
    must be CONFIG_GET_BODY on every server (waits while the daemon loads its
    offline cache, which it does after its first failed ping)."""
    deadline = time.monotonic() + timeout
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("POST", "/v2/config/get", body=json.dumps({"id": MICROSERVICE_ID}),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        body = response.read()
        conn.close()
        if response.status == 200:
            if body != CONFIG_GET_BODY.encode():
                raise RuntimeError(f"/v2/config/get answered another body: {body!r}")
            return body
        if time.monotonic() > deadline:
            raise RuntimeError(f"/v2/config/get answered {response.status}: {body!r}")
        time.sleep(0.05)


def start_daemon(root: str, port: int, *extra: str) -> tuple[subprocess.Popen[bytes], float]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if PYTHON == sys.executable:
        env["PYTHONPATH"] = REPO
    t0 = time.perf_counter()
    proc = subprocess.Popen([*DAEMON, "--root", root, "--address", "127.0.0.1",
                             "--port", str(port), *extra], env=env, stdout=subprocess.DEVNULL,
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


# The microservice whose configuration POST /v2/config/get asks for, and what
# the three servers answer to it: the config is the string the Controller sent
# (SDKs JSON-parse it themselves), and the answer is the daemon's own encoding
# of it (Response.json: compact JSON), so the baselines send the same bytes.
MICROSERVICE_ID = "bench-microservice"
MICROSERVICE_CONFIG = json.dumps({"sensor": "temperature", "unit": "celsius", "interval_ms": 1000,
                                  "thresholds": {"low": -10.5, "high": 42.0}, "labels": ["gateway", "bench"]})
CONFIG_GET_BODY = json.dumps({"status": "okay", "config": MICROSERVICE_CONFIG}, separators=(",", ":"))


def provision_offline(root: str) -> None:
    """Lay down a provisioned node whose Controller is down, as the daemon's own
    code writes it: uuid and token in config.xml (ConfigStore.set_identity, what
    provisioning stores), controller_url on a closed loopback port, docker_url on
    a missing socket, and the microservice list in the offline cache
    (OfflineCache.save, what the last changes cycle wrote). A daemon started on
    ``root`` fails its first ping and serves the cached configs (sync.py
    ``load_offline_cache``; tests/controller covers a real restart that way)."""
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    from iofogd.config.store import ConfigStore, Origin
    from iofogd.controller.cache import MICROSERVICES, OfflineCache
    from iofogd.paths import Paths

    paths = Paths.from_root(root)
    quiet = logging.getLogger("bench.provision")   # "config.xml missing; writing the shipped defaults"
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    store = ConfigStore(paths, log=quiet)
    store.load()   # writes the default config.xml on an empty root, as the daemon's first start
    closed = free_port()   # bound then released: nothing listens there
    # What ``iofog-agent config -a <controller url> -c <docker url>`` applies.
    report = store.apply({"a": f"http://127.0.0.1:{closed}/api/v3/",
                          "c": f"unix://{os.path.join(root, 'no-docker.sock')}"}, Origin.LOCAL)
    if report.errors:
        raise RuntimeError(f"bench config refused: {report.errors}")
    store.set_identity("benchnode0000000000000000000000000", "bench-controller-token")
    OfflineCache(paths.etc_dir).save(MICROSERVICES, [{
        "uuid": MICROSERVICE_ID, "name": "sensor", "config": MICROSERVICE_CONFIG,
        "imageId": "", "images": [], "registryId": 1, "rebuild": False, "delete": False,
        "deleteWithCleanup": False, "routes": [], "portMappings": [], "volumeMappings": [],
    }])


# The competent baseline: http.server's ThreadingHTTPServer as one would write
# it for a JSON API today: TCP_NODELAY on every accepted socket and each
# response in one write (so no answer waits for a delayed ACK), keep-alive,
# no logging. The same three endpoints as the daemon's measured ones.
BARE_SERVER = r"""
import json, socket, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATUS = json.dumps({"iofog-daemon": "RUNNING", "memory-usage": "about 20.00 MiB"}).encode()
VERSION = json.dumps({"version": "x"}).encode()
CONFIGS = {sys.argv[2]: sys.argv[3].encode()}   # microservice id -> the config/get answer

class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    def get_request(self):
        sock, addr = self.socket.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, addr

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def reply(self, status, body):
        self.wfile.write(b"HTTP/1.1 %d OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                         % (status, len(body), body))
    def do_GET(self):
        self.reply(200, STATUS if self.path == "/v2/status" else VERSION)
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.reply(200, CONFIGS[body["id"]])
    def log_message(self, *args):
        pass

Server(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""

# The asyncio peer: aiohttp, the same endpoints (a bench-only dependency).
AIOHTTP_SERVER = r"""
import json, sys
from aiohttp import web

STATUS = json.dumps({"iofog-daemon": "RUNNING", "memory-usage": "about 20.00 MiB"})
VERSION = json.dumps({"version": "x"})
CONFIGS = {sys.argv[2]: sys.argv[3]}   # microservice id -> the config/get answer

async def status(request):
    return web.Response(text=STATUS, content_type="application/json")

async def version(request):
    return web.Response(text=VERSION, content_type="application/json")

async def config_get(request):
    body = json.loads(await request.read())
    return web.Response(text=CONFIGS[body["id"]], content_type="application/json")

app = web.Application()
app.add_routes([web.get("/v2/status", status), web.get("/v2/version", version),
                web.post("/v2/config/get", config_get)])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def start_bare(port: int, python: str = "") -> tuple[subprocess.Popen[bytes], float]:
    """The same start-to-ready measure for the bare server: the floor on this machine."""
    return start_script(python or PYTHON, BARE_SERVER, port)


def start_script(python: str, script: str, port: int, one_cpu: bool = False) -> tuple[subprocess.Popen[bytes], float]:
    t0 = time.perf_counter()
    # one_cpu: the whole process on CPU 0 (its threads inherit it), as iofogd
    # keeps its own threads by default (docs/host.md#cpu).
    pin = (lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})) if one_cpu else None
    proc = subprocess.Popen([python, "-c", script, str(port), MICROSERVICE_ID, CONFIG_GET_BODY],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=pin)
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/v2/version")
            if conn.getresponse().status == 200:
                return proc, time.perf_counter() - t0
        except (OSError, http.client.HTTPException):
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"{script.splitlines()[1]}...: exited during start-up")
        time.sleep(0.002)


def cpu_ms(pid: int) -> float:
    """CPU time of every live thread of ``pid`` so far (/proc/<pid>/task/*/schedstat, ns)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass   # a thread that ended meanwhile
    return total / 1e6


def rss_mib(pid: int) -> float:
    return status_kib(pid, "VmRSS") / 1024


# -- load: wrk ----------------------------------------------------------------------------

# wrk's done() hook prints one machine-readable line; non-2xx answers are
# counted apart, so an endpoint that errors cannot pass for a fast one.
WRK_SCRIPT = """
wrk.method = os.getenv("BENCH_METHOD")
wrk.body = os.getenv("BENCH_BODY") ~= "" and os.getenv("BENCH_BODY") or nil
wrk.headers["Content-Type"] = "application/json"
if os.getenv("BENCH_TOKEN") ~= "" then wrk.headers["Authorization"] = os.getenv("BENCH_TOKEN") end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d %.1f\\n", summary.requests, summary.duration,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout, 0, latency:percentile(99)))
end
"""


def ensure_wrk() -> str:
    """wrk, Debian's package, installed with apt-get when missing (as root)."""
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk is missing: apt-get install -y wrk", flush=True)
    apt = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(apt, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], stdout=subprocess.DEVNULL)
        subprocess.run(apt, check=True, stdout=subprocess.DEVNULL)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("bench_http: wrk could not be installed (apt-get install wrk)")
    return found


def ensure_aiohttp() -> None:
    """aiohttp for the asyncio peer: a bench-only dependency, pip-installed when missing."""
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        print("aiohttp is missing: pip install aiohttp (bench only)", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "aiohttp"], check=True)


class Endpoint:
    def __init__(self, name: str, method: str, path: str, body: str = "", admin: bool = True) -> None:
        self.name, self.method, self.path, self.body, self.admin = name, method, path, body, admin


ENDPOINTS = [
    Endpoint("GET /v2/status", "GET", "/v2/status"),
    Endpoint("GET /v2/version", "GET", "/v2/version"),
    # 200 with the microservice's config on all three, the same body bytes (the
    # daemon's from its offline cache: provision_offline). Errors are counted apart.
    Endpoint("POST /v2/config/get", "POST", "/v2/config/get", json.dumps({"id": MICROSERVICE_ID}), admin=False),
]


def wrk_run(wrk: str, script: str, port: int, endpoint: Endpoint, token: str, clients: int,
            seconds: float, pid: int) -> tuple[float, float, int, float]:
    """(requests/s, p99 ms, non-2xx or socket errors, server CPU us per request) of one wrk run.

    The CPU figure (every thread of the server, from /proc) is the one that
    stays put on a machine shared with other work; the wall-clock ones do not."""
    env = dict(os.environ, BENCH_METHOD=endpoint.method, BENCH_BODY=endpoint.body,
               BENCH_TOKEN=token if endpoint.admin else "")
    cpu_before = cpu_seconds(pid)
    out = subprocess.run([wrk, "-t2", f"-c{clients}", f"-d{seconds:g}s", "-s", script,
                          f"http://127.0.0.1:{port}{endpoint.path}"],
                         env=env, capture_output=True, text=True, timeout=seconds * 3 + 30)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            requests, duration_us, errors, _, p99_us = line.split()[1:]
            cpu_us = (cpu_seconds(pid) - cpu_before) * 1e6 / max(1, int(requests))
            return int(requests) / (int(duration_us) / 1e6), float(p99_us) / 1000, int(errors), cpu_us
    raise RuntimeError(f"wrk printed no result: {out.stdout} {out.stderr}")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def throughput(args: argparse.Namespace) -> None:
    wrk = ensure_wrk()
    ensure_aiohttp()
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT)
        script = f.name
    results: dict[str, dict[str, list[tuple[float, float, int, float]]]] = {}
    # The aims compare the first three. The last two say where the difference comes
    # from: iofogd with its threads free to move (--cpus all), and the bare server
    # held on one CPU as iofogd holds itself by default (docs/host.md#cpu).
    servers = ("iofogd", "bare ThreadingHTTPServer", "aiohttp", "iofogd --cpus all", "bare, one CPU")
    try:
        for server in servers:
            # Each server alone on the machine while it is measured.
            with tempfile.TemporaryDirectory() as root:
                port = free_port()
                token = ""
                if server.startswith("iofogd"):
                    provision_offline(root)
                    proc, _ = start_daemon(root, port, *server.split()[1:])
                    with open(os.path.join(root, "etc/iofog-agent/local-api")) as tf:
                        token = tf.read().strip()
                    running_after(port, token, time.perf_counter())   # every layer up before loading
                elif server == "aiohttp":
                    proc, _ = start_script(sys.executable, AIOHTTP_SERVER, port)
                else:
                    proc, _ = start_script(sys.executable, BARE_SERVER, port, one_cpu=server == "bare, one CPU")
                try:
                    config_get_answer(port)   # 200 and the same bytes on every server, or no figures
                    for endpoint in ENDPOINTS:
                        wrk_run(wrk, script, port, endpoint, token, args.clients, 1, proc.pid)   # warm-up
                        results.setdefault(endpoint.name, {})[server] = [
                            wrk_run(wrk, script, port, endpoint, token, args.clients, args.seconds, proc.pid)
                            for _ in range(args.runs)]
                finally:
                    proc.terminate()
                    proc.wait()
    finally:
        os.unlink(script)
    print(f"\nwrk -t2 -c{args.clients} -d{args.seconds:g}s, median of {args.runs} runs per figure, "
          "each server alone (figures on a shared machine are noisy):")
    print(f"  POST /v2/config/get answers 200 with {len(CONFIG_GET_BODY)} identical body bytes on all three: "
          f"{CONFIG_GET_BODY} (iofogd: from the offline cache of a provisioned node, Controller down)")
    for endpoint in ENDPOINTS:
        per = results[endpoint.name]
        rps = {name: median([r for r, _, _, _ in runs]) for name, runs in per.items()}
        p99 = {name: median([p for _, p, _, _ in runs]) for name, runs in per.items()}
        errors = {name: sum(e for _, _, e, _ in runs) for name, runs in per.items()}
        cpu = {name: median([c for _, _, _, c in runs]) for name, runs in per.items()}
        print(f"  {endpoint.name}:")
        for name in servers:
            note = f", {errors[name]} non-2xx/errors" if errors[name] else ""
            print(f"    {name:26} {rps[name]:8.0f} req/s  p99 {p99[name]:6.2f} ms  "
                  f"server CPU {cpu[name]:5.1f} us/request{note}")
        print(f"    ratio iofogd/bare {rps['iofogd'] / rps['bare ThreadingHTTPServer']:.2f} (aim >= 1.3), "
              f"iofogd/aiohttp {rps['iofogd'] / rps['aiohttp']:.2f} (aim >= 0.5), "
              f"iofogd p99 {p99['iofogd']:.2f} ms (aim <= 10)")


# -- start-up and idle RSS ---------------------------------------------------------------


def startup(args: argparse.Namespace, with_psutil: bool) -> None:
    global PYTHON, DAEMON
    layout = tempfile.TemporaryDirectory()
    if args.checkout:
        PYTHON, DAEMON = sys.executable, [sys.executable, "-m", "iofogd"]
    else:
        PYTHON = installed_python(layout.name, with_psutil)
        DAEMON = [console_script(PYTHON)]
    label = "with psutil" if with_psutil else "without psutil"
    print(f"\n[{label}] interpreter: {'development venv (checkout)' if args.checkout else 'installed layout'} "
          f"({PYTHON}); daemon: {' '.join(DAEMON)}")
    # The daemon and the bare server alternate, run by run, so that a noisy
    # moment on a shared machine hits both; the ratio is the median of the
    # per-run ratios. Beside the wall time, the CPU time the process had used
    # when it first answered (every thread's, from /proc: schedstat, in ns),
    # which another process's load does not stretch.
    first, ready, running, rss, cpu, threads = [], [], [], [], [], []
    bare_ready, bare_rss, bare_cpu = [], [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as root:
            proc, t = start_daemon(root, free_port())
            first.append(t * 1000)
            proc.terminate()
            proc.wait()
            port = free_port()
            t0 = time.perf_counter()
            proc, t = start_daemon(root, port)
            cpu.append(cpu_ms(proc.pid))
            ready.append(t * 1000)
            with open(os.path.join(root, "etc/iofog-agent/local-api")) as f:
                running.append(running_after(port, f.read().strip(), t0) * 1000)
            time.sleep(1.0)
            rss.append(rss_mib(proc.pid))
            threads.append(len(os.listdir(f"/proc/{proc.pid}/task")))
            proc.terminate()
            proc.wait()
        proc, t = start_bare(free_port())
        bare_cpu.append(cpu_ms(proc.pid))
        bare_ready.append(t * 1000)
        time.sleep(1.0)
        bare_rss.append(rss_mib(proc.pid))
        proc.terminate()
        proc.wait()
    layout.cleanup()
    bare = statistics.median(bare_ready)
    for name, times in (("start-to-ready, restart", ready), ("start-to-ready, first start", first)):
        ratio = statistics.median(x / b for x, b in zip(times, bare_ready))
        print(f"{name} (exec to first 200 on /v2/version): median {statistics.median(times):.1f} ms "
              f"(runs: {', '.join(f'{x:.0f}' for x in times)}); bare ThreadingHTTPServer: "
              f"{bare:.1f} ms (runs: {', '.join(f'{x:.0f}' for x in bare_ready)}); "
              f"ratio {ratio:.2f} (median of per-run ratios; aim <= 1.3)")
    print(f"CPU used by the first 200, restart: median {statistics.median(cpu):.1f} ms; bare ThreadingHTTPServer: "
          f"{statistics.median(bare_cpu):.1f} ms; ratio {statistics.median(cpu) / statistics.median(bare_cpu):.2f} "
          "(less sensitive to other load than the wall time)")
    print(f"start-to-running, restart (exec to a 200 on /v2/status saying RUNNING: every layer up): "
          f"median {statistics.median(running):.1f} ms (runs: {', '.join(f'{x:.0f}' for x in running)})")
    aim = 25 if with_psutil else 21
    print(f"idle RSS after 1 s: median {statistics.median(rss):.1f} MiB (aim <= {aim}; "
          f"{statistics.median(threads):.0f} threads); bare ThreadingHTTPServer: {statistics.median(bare_rss):.1f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--checkout", action="store_true",
                    help="run on this interpreter (the development venv) instead of an installed layout")
    ap.add_argument("--startup-only", action="store_true", help="skip the throughput runs")
    ap.add_argument("--throughput-only", action="store_true", help="skip the start-up and RSS runs")
    args = ap.parse_args()
    # An installed wheel or .deb has its bytecode compiled (pip and dh-python do
    # it); a checkout run with PYTHONDONTWRITEBYTECODE=1 would compile every
    # module at every start and measure the compiler instead.
    compileall.compile_dir(os.path.join(REPO, "iofogd"), quiet=1)
    if not args.throughput_only:
        startup(args, with_psutil=True)
        if not args.checkout:
            startup(args, with_psutil=False)
    if not args.startup_only:
        # The daemon on the development interpreter, the baselines too: the
        # same Python for all three.
        global PYTHON, DAEMON
        PYTHON, DAEMON = sys.executable, [sys.executable, "-m", "iofogd"]
        throughput(args)


if __name__ == "__main__":
    main()
