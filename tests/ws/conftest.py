"""Live WebSocket servers on 127.0.0.1 and a raw client that can misbehave."""
from __future__ import annotations

import base64
import os
import socket
import time
from typing import Callable, Iterator, List, Optional, Tuple

import pytest

from iofogd.ws.control import ControlHub
from iofogd.ws.frames import Frame, Opcode, parse_frame, serialize_frame
from iofogd.ws.session import SessionLimits
from iofogd.ws.echo import ECHO_LIMITS, EchoServer, serve, stop

ServerFactory = Callable[..., EchoServer]


@pytest.fixture
def make_server() -> Iterator[ServerFactory]:
    """``make_server(limits=..., hub=...)`` starts an echo server on a free port."""
    servers: List[EchoServer] = []

    def factory(limits: SessionLimits = ECHO_LIMITS, hub: Optional[ControlHub] = None) -> EchoServer:
        server, _ = serve(0, limits=limits, hub=hub)
        servers.append(server)
        return server

    yield factory
    for server in servers:
        stop(server)


@pytest.fixture
def server(make_server: ServerFactory) -> EchoServer:
    return make_server()


def url(server: EchoServer, path: str = "/echo") -> str:
    return f"ws://127.0.0.1:{server.server_address[1]}{path}"


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``condition`` (another thread's work) until true or ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


class RawClient:
    """A hand-driven RFC 6455 client over a plain socket, for what real clients refuse to do."""

    def __init__(self, server: EchoServer, path: str = "/echo", after_request: bytes = b"", version: str = "13") -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n\r\n"
        )
        # ``after_request`` goes out in the same segment: it lands in the server's rfile buffer.
        self.sock.sendall(request.encode() + after_request)
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            assert chunk, "connection closed during the handshake"
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.status_line = head.split(b"\r\n")[0].decode()

    def send(self, opcode: int, payload: bytes = b"", *, masked: bool = True, fin: bool = True) -> None:
        self.sock.sendall(frame_bytes(opcode, payload, masked=masked, fin=fin))

    def recv_frame(self, timeout: float = 5.0) -> Optional[Frame]:
        """The next frame from the server; None when it closed the connection."""
        self.sock.settimeout(timeout)
        while True:
            parsed = parse_frame(self.buf, masked=False, max_size=1 << 26)
            if parsed is not None:
                frame, used = parsed
                self.buf = self.buf[used:]
                return frame
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return None
            self.buf += chunk

    def recv_close(self, timeout: float = 5.0) -> Tuple[int, str]:
        """Skip to the server's close frame and return its code and reason."""
        while True:
            frame = self.recv_frame(timeout)
            assert frame is not None, "no close frame before EOF"
            if frame.opcode is Opcode.CLOSE:
                return int.from_bytes(frame.payload[:2], "big"), frame.payload[2:].decode()

    def close(self) -> None:
        self.sock.close()


def frame_bytes(opcode: int, payload: bytes = b"", *, masked: bool = True, fin: bool = True) -> bytes:
    return serialize_frame(Frame(Opcode(opcode), payload, fin), mask=os.urandom(4) if masked else None)
