"""The admin gets through whatever one client does (issue 12), against a real
daemon: each load of the issue's table runs from a separate process while
/v2/version with the token is sampled and ``iofog-agent status`` is run.

Bounded: a few hundred loopback sockets for a few seconds each. The samples'
latencies are printed (``pytest -s``); the test asserts that every sample is
answered 200 and none waits a second: a denial of service shows as 503s or
waits of seconds, and the 100 ms figure of the issue is read from the print
on a quiet machine, not asserted on a shared one.
"""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Iterator, List

import pytest

from tests.daemon_process import RunningDaemon

# mode: "idle" (connect and hold), "reconnect" (hold; reconnect when the daemon
# closes one), "busy" (begin a request head, never finish it; reconnect when closed).
ATTACKER = r"""
import selectors, socket, sys, time
mode, count, source, port, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
sel = selectors.DefaultSelector()
opened = closed = 0
def open_one():
    global opened
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=2, source_address=(source, 0))
    except OSError:
        return
    if mode == "busy":
        try:
            s.sendall(b"GET /v2/version HTTP/1.1\r\nX-Slow: ")
        except OSError:
            s.close()
            return
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
    opened += 1
for _ in range(count):
    open_one()
print("ready", opened, flush=True)
end = time.monotonic() + seconds
while time.monotonic() < end:
    for key, _ in sel.select(0.1):
        s = key.fileobj
        try:
            data = s.recv(4096)
        except OSError:
            data = b""
        if not data:
            sel.unregister(s)
            s.close()
            closed += 1
            if mode != "idle":
                open_one()
print("done", opened, closed, flush=True)
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    d = RunningDaemon(str(tmp_path_factory.mktemp("load") / "root")).start()
    try:
        yield d
    finally:
        assert d.stop() == 0
    assert "Traceback" not in d.log()


def sample_version(d: RunningDaemon, seconds: float, every: float = 0.05) -> List[float]:
    """Latencies (s) of /v2/version with the token, each on a new connection as the CLI makes."""
    token = d.token.encode()
    request = b"GET /v2/version HTTP/1.1\r\nHost: x\r\nAuthorization: " + token + b"\r\nConnection: close\r\n\r\n"
    latencies = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
            s.sendall(request)
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        latencies.append(time.monotonic() - started)
        assert data.startswith(b"HTTP/1.1 200 "), data[:200]
        time.sleep(every)
    return latencies


@pytest.mark.parametrize("mode,count,source", [
    ("idle", 500, "127.0.0.2"),        # 500 idle TCP connections
    ("reconnect", 70, "127.0.0.2"),    # 70 that reconnect as slots free
    ("idle", 300, "127.0.0.1"),        # many sockets from the admin's own address
    ("busy", 200, "127.0.0.3"),        # many sockets from one peer, each mid-request
    # Not here: busy sockets reconnecting flat out from the admin's own
    # address. The admin then gets in only if its request has arrived when
    # its connection is accepted (the token is read at the door), which a
    # flood can outrun. Containers do not share the admin's address.
])
def test_the_admin_gets_through(daemon: RunningDaemon, mode: str, count: int, source: str) -> None:
    attacker = subprocess.Popen([sys.executable, "-c", ATTACKER, mode, str(count), source, str(daemon.port), "6"],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert attacker.stdout is not None
        assert attacker.stdout.readline().startswith("ready")
        if source == "127.0.0.1":
            # From the admin's own address the attack holds that address's
            # share of the admin reserve; a newcomer may take a slot over once
            # its probation (0.25 s) has passed. Before that the admin gets in
            # only if its request is already there when it is accepted.
            time.sleep(0.5)
        latencies = sample_version(daemon, 3.0)
        out = daemon.cli("status", timeout=30)
        assert out.returncode == 0 and "RUNNING" in out.stdout, out
    finally:
        attacker.terminate()
        attacker.wait(10)
    latencies.sort()
    print(f"\n{mode} x{count} from {source}: {len(latencies)} samples of /v2/version, "
          f"median {latencies[len(latencies) // 2] * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms")
    assert latencies[-1] < 1.0


def test_sigterm_ends_the_daemon_within_5_s_whatever_clients_do(tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = RunningDaemon(str(tmp_path / "root")).start()
    stop = threading.Event()
    token = d.token
    socks = []

    def trickle() -> None:
        s = socket.create_connection(("127.0.0.1", d.port))
        socks.append(s)
        s.sendall(f"POST /v2/config HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n"
                  "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n".encode())
        while not stop.wait(0.2):   # a byte at a time, each well within the idle timeout
            try:
                s.send(b" ")
            except OSError:
                return

    sender = threading.Thread(target=trickle)
    sender.start()
    try:
        head = socket.create_connection(("127.0.0.1", d.port))     # a head begun and never finished
        head.sendall(b"GET /v2/version HTTP/1.1\r\nX-Slow: ")
        idle = socket.create_connection(("127.0.0.1", d.port))     # an idle one
        socks += [head, idle]
        time.sleep(0.5)
        assert d.proc is not None
        started = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        d.proc.wait(timeout=10)
        took = time.monotonic() - started
    finally:
        stop.set()
        sender.join(5)
        for s in socks:
            s.close()
        d.stop()
    print(f"\nSIGTERM to exit with a trickling client: {took:.2f} s")
    assert d.proc.returncode == 0 and took < 5.0, (took, d.log()[-2000:])
    assert "Traceback" not in d.log()
