"""The Local API server: a ThreadingHTTPServer with the limits http.server lacks.

CPython's server caps neither the number of connections nor their idle time
(Lib/socketserver.py), so a slow or hostile client could tie the daemon up.
Here every accepted socket gets a timeout, connections beyond
``max_connections`` get an immediate 503 and are closed, and shutdown closes
idle keep-alive connections at once while in-flight requests finish (handler
threads are not daemonic, so ``server_close()`` joins them).
"""
from __future__ import annotations

import logging
import socket
import socketserver
import threading
from http.server import ThreadingHTTPServer

from iofogd.app import App
from iofogd.record import Record

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Any, Final, Optional, Protocol

    from iofogd.http.handler import LocalApiHandler

    class WebSocketEndpoints(Protocol):
        """What the handler needs of the WebSocket layer (iofogd.ws.endpoints.SocketEndpoints)."""

        def admit(self, path: str, peer: str) -> None: ...

        def serve(self, sock: socket.socket, buffered: bytes, path: str, peer: str) -> None: ...

log = logging.getLogger(__name__)


class HttpLimits(Record):
    __slots__ = ("max_body_bytes", "max_header_bytes", "max_connections", "idle_timeout")
    max_body_bytes: Final[int]
    max_header_bytes: Final[int]
    max_connections: Final[int]
    idle_timeout: Final[float]  # seconds a connection may sit without a request

    def __init__(
        self,
        max_body_bytes: int = 1024 * 1024,
        max_header_bytes: int = 16 * 1024,
        max_connections: int = 64,
        idle_timeout: float = 30.0,
    ) -> None:
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout


_BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Connection: close\r\nContent-Length: 62\r\n\r\n"
    b'{"status":"failed","error":"Too many connections, try again"}\n'
)


class LocalApiServer(ThreadingHTTPServer):
    daemon_threads = False          # shutdown waits for in-flight requests
    block_on_close = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(
        self,
        address: tuple[str, int],
        handler_class: type[LocalApiHandler],
        app: App,
        limits: HttpLimits,
        websocket: Optional[WebSocketEndpoints] = None,
    ) -> None:
        self.app = app
        self.limits = limits
        # The WebSocket layer; None until start-up phase 2 has built it (the
        # handler then answers 503).
        self.websocket = websocket
        self.stopping = False
        self._slots = threading.BoundedSemaphore(limits.max_connections)
        self._released: set[Any] = set()   # sockets whose slot was given back early
        self._handlers: set[LocalApiHandler] = set()
        self._handlers_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler_class)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the bound address with socket.getfqdn
        # (a reverse DNS lookup) for a server_name nothing here uses; on a
        # gateway whose resolver is unreachable that lookup holds start-up for
        # the resolver's timeout.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    # -- connection cap ----------------------------------------------------------

    def process_request(self, request: Any, client_address: Any) -> None:
        # Every response leaves in one write; without TCP_NODELAY a write that
        # follows another could still wait for the peer's delayed ACK.
        try:
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass   # not TCP (a test's socketpair)
        if not self._slots.acquire(blocking=False):
            log.warning("refusing %s: %d connections open", client_address, self.limits.max_connections)
            try:
                request.settimeout(1.0)
                request.sendall(_BUSY_RESPONSE)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._handlers_lock:
                released = request in self._released
                self._released.discard(request)
            if not released:
                self._slots.release()

    def release_slot(self, handler: LocalApiHandler) -> None:
        """Give back ``handler``'s connection slot now: its connection has left HTTP
        (a WebSocket session, bounded by the WebSocket layer's own limits)."""
        with self._handlers_lock:
            if handler.request in self._released:
                return
            self._released.add(handler.request)
            self._handlers.discard(handler)
        self._slots.release()

    # -- tracking for shutdown ---------------------------------------------------

    def track(self, handler: LocalApiHandler) -> None:
        with self._handlers_lock:
            self._handlers.add(handler)

    def untrack(self, handler: LocalApiHandler) -> None:
        with self._handlers_lock:
            self._handlers.discard(handler)

    def close_idle_connections(self) -> None:
        """Stop serving: idle keep-alive connections are closed now, busy ones
        after their current response."""
        self.stopping = True
        with self._handlers_lock:
            handlers = list(self._handlers)
        for h in handlers:
            if h.idle:
                try:
                    h.connection.shutdown(socket.SHUT_RD)
                except OSError:
                    pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("unhandled error serving %s", client_address)
