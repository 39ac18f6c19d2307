"""Hostile WebSocket clients against the real daemon (issue 12): bounded, loopback only.

Properties, not timings: the daemon's peak RSS (VmHWM), every /v2/version
answered, and the close codes the attackers get. bench/bench_ws.py prints the
latency figures of the same loads.
"""
from __future__ import annotations

import base64
import os
import socket
import struct
import threading
import time
from typing import List

from tests.daemon_process import RunningDaemon


def handshake(port: int, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16))
    sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, "closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 "), head[:40]
    return sock


def wait_for_sockets(daemon: RunningDaemon, timeout: float = 20.0) -> None:
    """Until start-up phase 2 has built the WebSocket layer (503 before)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            handshake(daemon.port, "/v2/control/socket/id/probe").close()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def fragment(opcode: int, payload: bytes) -> bytes:
    """A masked, non-final frame (mask 0: the payload goes as it is)."""
    return bytes((opcode, 0x80 | len(payload))) + b"\x00\x00\x00\x00" + payload


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_sixty_never_ending_fragmented_messages_stay_bounded(daemon: RunningDaemon) -> None:
    # Each attacker sends a ~1 MB binary message in 2-byte fragments and never
    # ends it. The daemon keeps one buffer per message and cuts it off at the
    # fragment bound (1009), long before the megabyte.
    wait_for_sockets(daemon)
    codes: List[int] = []
    reasons: List[str] = []
    lock = threading.Lock()

    def attack(i: int) -> None:
        sock = handshake(daemon.port, f"/v2/control/socket/id/attacker-{i}")
        burst = fragment(0x0, b"cd") * 512
        total = 0
        try:
            sock.sendall(fragment(0x2, b"ab"))
            while total < 1 << 20:
                sock.sendall(burst)
                total += 1024
        except OSError:
            pass   # cut off: the close frame is in the receive buffer
        data = b""
        try:
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        sock.close()
        with lock:
            if data[:1] == b"\x88":
                codes.append(struct.unpack("!H", data[2:4])[0])
                reasons.append(data[4 : 2 + data[1]].decode())

    threads = [threading.Thread(target=attack, args=(i,)) for i in range(60)]
    for t in threads:
        t.start()
    versions = []
    while any(t.is_alive() for t in threads):
        versions.append(daemon.request("GET", "/v2/version")[0])
    for t in threads:
        t.join(60)
    assert codes == [1009] * 60
    assert set(reasons) == {"message in more than 128 fragments"}
    assert versions and all(status == 200 for status in versions)
    assert daemon.proc is not None
    assert peak_rss_mib(daemon.proc.pid) < 64


def test_three_hundred_sockets_for_one_id_do_not_take_the_api_down(daemon: RunningDaemon) -> None:
    wait_for_sockets(daemon)
    socks: List[socket.socket] = []
    refused = 0
    try:
        for _ in range(300):
            try:
                socks.append(handshake(daemon.port, "/v2/control/socket/id/greedy"))
            except AssertionError:
                refused += 1
        # The place is taken at admission, before the 101: exactly 16 upgrades
        # succeed, and none of them is closed afterwards (no 1013 for a 101 that
        # raced past the bound, the way it was before iofogd/ws/endpoints.py's seats).
        assert len(socks) == 16 and refused == 284   # the per-id bound
        time.sleep(0.5)
        for s in socks:
            s.settimeout(0.2)
            try:
                first = s.recv(4)
            except OSError:   # nothing came: a session that stays
                continue
            raise AssertionError(f"a kept socket got {first!r}")
        assert daemon.request("GET", "/v2/version")[0] == 200
    finally:
        for s in socks:
            s.close()
