"""A real iofogd process for tests: started on a free loopback port with its
files under a temporary root, talked to over real sockets."""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Mapping, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RunningDaemon:
    def __init__(self, root: str, port: Optional[int] = None, env: Optional[Mapping[str, str]] = None,
                 extra_args: tuple[str, ...] = (), host: str = "127.0.0.1") -> None:
        self.root = root
        self.host = host   # the listening address, and where requests go
        self.port = port or free_port()
        self.env = dict(os.environ, **(env or {}))
        self.env["PYTHONPATH"] = REPO + os.pathsep + self.env.get("PYTHONPATH", "")
        self.extra_args = extra_args
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.stderr_path = os.path.join(root, "daemon.stderr")

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> RunningDaemon:
        os.makedirs(self.root, exist_ok=True)
        self._stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "iofogd", "--root", self.root, "--address", self.host,
             "--port", str(self.port), *self.extra_args],
            env=self.env, stdout=self._stderr, stderr=self._stderr, cwd=REPO,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"iofogd exited with {self.proc.returncode}: {self.log()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"iofogd did not listen within {timeout}s: {self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()
        return self.proc.returncode

    def log(self) -> str:
        try:
            with open(self.stderr_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def wait_log(self, text: str, timeout: float = 10.0) -> bool:
        """Whether ``text`` appears in the log within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    # -- requests ----------------------------------------------------------------------
    @property
    def token(self) -> str:
        with open(os.path.join(self.root, "etc/iofog-agent/local-api")) as f:
            return f.read().strip()

    def connection(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method: str, path: str, body: Any = None, *, token: Optional[str] = "",
                headers: Optional[Mapping[str, str]] = None,
                raw_body: Optional[bytes] = None) -> tuple[int, Mapping[str, str], Any]:
        """One request; ``token=""`` means the right admin token, None none at all."""
        hdrs = dict(headers or {})
        if token == "":
            hdrs.setdefault("Authorization", self.token)
        elif token is not None:
            hdrs.setdefault("Authorization", token)
        data = raw_body
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        conn = self.connection()
        try:
            conn.request(method, path, data, hdrs)
            resp = conn.getresponse()
            raw = resp.read()
            headers_out = {k.lower(): v for k, v in resp.getheaders()}
        finally:
            conn.close()
        try:
            parsed: Any = json.loads(raw)
        except ValueError:
            parsed = raw
        return resp.status, headers_out, parsed

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", "import sys; from iofogd.cli import main; sys.exit(main())",
             "--root", self.root, "--port", str(self.port), *args],
            env=self.env, capture_output=True, text=True, timeout=timeout, cwd=REPO,
        )
