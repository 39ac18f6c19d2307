"""Peers a bench daemon talks to: a minimal Controller double and a real iofogd process.

``ControllerDouble`` answers exactly the agent API calls iofogd makes, in the
Controller's shapes (the keys of its JSON answers; anything else is a 404), so
a bench can give a node N microservices with routes between them and the
router's address.  ``Daemon`` is one iofogd subprocess on a free loopback port
with its files under its own root.  Benches only: nothing here is a test aid.
"""
from __future__ import annotations

import http.client
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from typing import Any, Callable, Dict, List, Tuple

from bench import procfs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What the Controller answers in agent/config for a fog whose routerMode is "none": the default
# router's address (it answers one even when no router listens there).
DEFAULT_ROUTER = ("127.0.0.1", 5672)


# -- a minimal Controller: provisioning, the router's address, microservices and their routes ---


class ControllerDouble:
    """Answers the agent API calls iofogd makes (modelled on the test suite's stand-in, far
    smaller): GET status, POST agent/provision, GET/PATCH agent/config, GET/PATCH
    agent/config/changes (never a flag: the first cycle reads everything), PUT agent/status,
    GET agent/microservices, agent/registries, agent/edgeResources.  Anything else: 404."""

    def __init__(self) -> None:
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

    def add_fog(self, microservices: List[Dict[str, Any]], router: Tuple[str, int] = DEFAULT_ROUTER) -> str:
        """A node with these microservices (see :func:`microservice`) whose router is at ``router``;
        returns its provisioning key."""
        key = uuid.uuid4().hex[:8]
        self.fogs[key] = {"uuid": uuid.uuid4().hex, "token": uuid.uuid4().hex, "microservices": microservices,
                          "router": router}
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
            "agent/config": {"routerHost": fog["router"][0], "routerPort": fog["router"][1]},
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

    def __enter__(self) -> ControllerDouble:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def microservice(ms_uuid: str, routes: List[str], consumer: bool) -> Dict[str, Any]:
    """One element of GET agent/microservices (the Controller's keys): ``routes`` are the uuids
    of the receivers its messages go to; ``consumer`` says whether some route ends at it."""
    return {"uuid": ms_uuid, "imageId": "busybox:latest", "config": "{}", "rebuild": False,
            "rootHostAccess": False, "logSize": 50, "registryId": 1, "portMappings": [], "volumeMappings": [],
            "imageSnapshot": "", "delete": False, "deleteWithCleanup": False, "env": [], "extraHosts": [],
            "cmd": [], "routes": routes, "isConsumer": consumer}


# -- a daemon (an iofogd subprocess) ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    """One iofogd subprocess on a free loopback port, its files and its log (daemon.log) under
    ``root``; it listens when the constructor returns."""

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

    def provision(self, controller: ControllerDouble, key: str, status_frequency: int = 1) -> None:
        status, answer = self.request("POST", "/v2/config", {
            "controller-url": controller.url, "status-frequency": str(status_frequency),
            "changes-frequency": "1"})
        assert status == 200, answer
        status, answer = self.request("POST", "/v2/provision", {"provisioning-key": key})
        assert status == 200, answer

    def router_connected(self) -> bool:
        status, body = self.request("GET", "/v2/status")
        return status == 200 and str(body.get("router", "")).startswith("connected")

    def cpu_seconds(self) -> float:
        """user + system CPU time of the daemon so far."""
        return procfs.cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log_file.close()


def wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)
