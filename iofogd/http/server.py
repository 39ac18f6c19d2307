"""The Local API server: a ThreadingHTTPServer with the limits http.server lacks.

CPython's server caps neither the number of connections nor their idle time
(Lib/socketserver.py), so a slow or hostile client could tie the daemon up.
Here every accepted socket gets TCP_NODELAY (each response leaves in one
write, see the handler, so nothing waits for a delayed ACK) and a timeout,
and connections are admitted into two pools of slots:

- the general pool (``max_connections``), which microservices and admins
  share, at most ``max_per_peer`` slots per peer address;
- the admin reserve (``admin_connections``), for a connection that finds no
  general slot: it is admitted on probation and keeps its slot only if its
  first request carries the admin token; a slot whose connection has not
  shown the token within ``probation`` seconds may be taken by a newer
  arrival. A peer holds at most a quarter of the reserve on probation. So no
  amount of microservice traffic shuts the admin out.

When the general pool is full an idle keep-alive connection (no byte of a
next request received) gives up its slot to a newcomer (RFC 9112 section
9.5 lets a server close an idle connection at any time): the oldest of the
busiest peer, if that peer holds at least two slots more than the newcomer's.
A connection that finds no slot is answered 503 and closed, without a thread.
A WebSocket session gives its slot up as it starts (:meth:`release_slot`).

Stopping: :meth:`close_idle_connections` closes idle connections at once,
busy ones get until the grace period ends to finish their response, then
:meth:`close_all_connections` closes every socket left (a client still
sending gets its connection closed) and :meth:`server_close` joins the
handler threads for a bounded time.
"""
from __future__ import annotations

import logging
import socket
import socketserver
import threading
import time

from iofogd.app import App
from iofogd.http.peerlog import PeerLog
from iofogd.http.stdlib import ThreadingHTTPServer   # without OpenSSL: see there
from iofogd.record import Record

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Any, Final, Optional

    from iofogd.http.handler import LocalApiHandler

log = logging.getLogger(__name__)


class HttpLimits(Record):
    __slots__ = ("max_body_bytes", "max_header_bytes", "max_connections", "max_per_peer",
                 "admin_connections", "probation", "idle_timeout", "shutdown_grace")
    max_body_bytes: Final[int]
    max_header_bytes: Final[int]
    max_connections: Final[int]     # the general pool
    max_per_peer: Final[int]        # general slots one peer address may hold
    admin_connections: Final[int]   # the admin reserve (a peer may hold a quarter of it on probation)
    probation: Final[float]         # seconds a reserve slot is kept for its connection to show the token
    idle_timeout: Final[float]      # seconds a connection may sit without a request
    shutdown_grace: Final[float]    # seconds busy connections get to finish when stopping

    def __init__(
        self,
        max_body_bytes: int = 1024 * 1024,
        max_header_bytes: int = 16 * 1024,
        max_connections: int = 64,
        max_per_peer: int = 32,
        admin_connections: int = 8,
        probation: float = 0.25,
        idle_timeout: float = 30.0,
        shutdown_grace: float = 2.0,
    ) -> None:
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.max_connections = max_connections
        self.max_per_peer = max_per_peer
        self.admin_connections = admin_connections
        self.probation = probation
        self.idle_timeout = idle_timeout
        self.shutdown_grace = shutdown_grace


_BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Connection: close\r\nContent-Length: 62\r\n\r\n"
    b'{"status":"failed","error":"Too many connections, try again"}\n'
)

GENERAL = "general"
ADMIN = "admin"


class Slot:
    """One accepted connection and the pool slot it holds (``pool`` None: released)."""

    __slots__ = ("sock", "peer", "pool", "order", "since", "handler", "thread", "admin")

    def __init__(self, sock: socket.socket, peer: str, pool: str, order: int) -> None:
        self.sock = sock
        self.peer = peer
        self.pool: Optional[str] = pool
        self.order = order                      # accept order: the oldest goes first
        self.since = time.monotonic()
        self.handler: Optional[LocalApiHandler] = None
        self.thread: Optional[threading.Thread] = None
        self.admin = False                      # a request with the admin token was served

    def idle(self) -> bool:
        # Before the handler exists the connection has sent nothing we read yet.
        return self.handler is None or self.handler.idle

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)   # the handler's read ends at once
        except OSError:
            pass


class LocalApiServer(ThreadingHTTPServer):
    daemon_threads = True           # server_close joins them, for a bounded time
    block_on_close = False          # we track the threads ourselves (Slot.thread)
    allow_reuse_address = True
    # A burst of connections (hundreds, from a hostile client) must not fill
    # the kernel's accept queue: a SYN dropped there costs the next client a
    # 1 s retransmit.
    request_queue_size = 1024

    def __init__(
        self,
        address: tuple[str, int],
        handler_class: type[LocalApiHandler],
        app: App,
        limits: HttpLimits,
    ) -> None:
        self.app = app
        self.limits = limits
        self.stopping = False
        self._stop_deadline: Optional[float] = None
        self._lock = threading.Lock()
        self._slots: dict[socket.socket, Slot] = {}       # every open connection
        self._held = {GENERAL: 0, ADMIN: 0}              # slots in use per pool
        self._per_peer: dict[str, int] = {}              # general slots per peer
        self._accepted = 0
        self.peer_log = PeerLog(log)
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

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = self.socket.accept()
        # Responses leave in one write; without this the kernel would still
        # hold a small one back for the client's delayed ACK (Nagle).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, address

    # -- admission -----------------------------------------------------------------

    def process_request(self, request: Any, client_address: Any) -> None:
        peer = str(client_address[0])
        with self._lock:
            slot = self._admit(request, peer)
        if slot is None and self._shows_token(request):
            with self._lock:
                slot = self._take(request, peer, ADMIN)
                slot.admin = True
        if slot is None:
            self.peer_log.warning(peer, "busy", "refusing a connection from %s: every slot is busy "
                                  "(%d general, %d admin)", peer, self.limits.max_connections,
                                  self.limits.admin_connections)
            try:
                request.settimeout(1.0)
                request.sendall(_BUSY_RESPONSE)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        thread = threading.Thread(target=self.process_request_thread, args=(request, client_address),
                                  name=f"http-{peer}", daemon=True)
        slot.thread = thread
        try:
            thread.start()
        except BaseException:
            self._forget(request)
            self.shutdown_request(request)
            raise

    def _admit(self, sock: socket.socket, peer: str) -> Optional[Slot]:
        """A slot for a new connection from ``peer``, or None: answer 503. Holds the lock.

        Closing a connection for a newcomer must not feed a loop in which the
        closed client reconnects and closes another (each turn a thread): a
        peer at its share never takes a general slot from anyone, and takes
        a general slot only from a peer holding at least two more than it.
        """
        self._accepted += 1
        held = self._per_peer.get(peer, 0)
        if held < self.limits.max_per_peer and (
                self._held[GENERAL] < self.limits.max_connections or self._evict_general(held)):
            return self._take(sock, peer, GENERAL)
        if self._reserve_room(peer):
            return self._take(sock, peer, ADMIN)
        return None

    def _evict_general(self, newcomer_holds: int) -> bool:
        """Close the oldest idle connection of the busiest peer, if that peer
        holds at least two general slots more than the newcomer's peer."""
        candidates = [s for s in self._slots.values()
                      if s.pool == GENERAL and self._per_peer.get(s.peer, 0) > newcomer_holds + 1 and s.idle()]
        if not candidates:
            return False
        self._close_for_room(min(candidates, key=lambda s: (-self._per_peer.get(s.peer, 0), s.order)))
        return True

    def _reserve_room(self, peer: str) -> bool:
        """Room in the admin reserve for a connection from ``peer``: a free slot
        within the peer's share, or one whose holder has not shown the token
        within the probation (of this peer if it is at its share, else of the
        peer holding most)."""
        on_probation = [s for s in self._slots.values() if s.pool == ADMIN and not s.admin]
        mine = sum(s.peer == peer for s in on_probation)
        share = max(1, self.limits.admin_connections // 4)
        if self._held[ADMIN] < self.limits.admin_connections and mine < share:
            return True
        expired = time.monotonic() - self.limits.probation
        candidates = [s for s in on_probation if s.since <= expired and (mine < share or s.peer == peer)]
        if not candidates:
            return False
        counts: dict[str, int] = {}
        for s in on_probation:
            counts[s.peer] = counts.get(s.peer, 0) + 1
        self._close_for_room(min(candidates, key=lambda s: (-counts[s.peer], s.order)))
        return True

    def _shows_token(self, sock: socket.socket) -> bool:
        """Whether the request already waiting on ``sock`` carries the admin
        token: an admin whose address an attacker shares (loopback) is let in
        at the door, beyond the reserve, with no thread spent on anyone else.
        Only what has arrived is looked at (a peek that does not wait)."""
        if self._held[ADMIN] >= 2 * self.limits.admin_connections:
            return False   # bounded even so
        try:
            data = sock.recv(self.limits.max_header_bytes, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except OSError:
            return False
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return False
        from iofogd.errors import RequestError
        from iofogd.http.request import parse_header_block

        try:
            headers = parse_header_block(data[:end].partition(b"\r\n")[2])
        except RequestError:
            return False
        values = headers.get_all("Authorization") or []
        return len(values) == 1 and self.app.token.matches(values[0])

    def _take(self, sock: socket.socket, peer: str, pool: str) -> Slot:
        slot = Slot(sock, peer, pool, self._accepted)
        self._slots[sock] = slot
        self._held[pool] += 1
        if pool == GENERAL:
            self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
        return slot

    def _give_up(self, slot: Slot) -> None:
        """Free ``slot``'s pool slot (the connection may live on). Holds the lock."""
        pool = slot.pool
        if pool is None:
            return
        slot.pool = None
        self._held[pool] -= 1
        if pool == GENERAL:
            left = self._per_peer[slot.peer] - 1
            if left:
                self._per_peer[slot.peer] = left
            else:
                del self._per_peer[slot.peer]

    def _close_for_room(self, victim: Slot) -> None:
        self._give_up(victim)
        victim.close()
        log.debug("closed a connection from %s to make room", victim.peer)

    def _forget(self, sock: socket.socket) -> None:
        with self._lock:
            slot = self._slots.pop(sock, None)
            if slot is not None:
                self._give_up(slot)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget(request)

    # -- what the handler tells the server -------------------------------------------

    def track(self, handler: LocalApiHandler) -> None:
        with self._lock:
            slot = self._slots.get(handler.connection)
            if slot is not None:
                slot.handler = handler
        if self.stopping:
            handler.close_connection = True

    def untrack(self, handler: LocalApiHandler) -> None:
        with self._lock:
            slot = self._slots.get(handler.connection)
            if slot is not None:
                slot.handler = None

    def on_probation(self, handler: LocalApiHandler) -> bool:
        """Whether ``handler``'s connection holds an admin-reserve slot that no
        request with the admin token has claimed yet."""
        slot = self._slots.get(handler.connection)
        return slot is not None and slot.pool == ADMIN and not slot.admin

    def admin_served(self, handler: LocalApiHandler) -> None:
        """A request with the admin token came on this connection: its slot stays."""
        slot = self._slots.get(handler.connection)
        if slot is not None:
            slot.admin = True

    def release_slot(self, handler: LocalApiHandler) -> None:
        """Give up ``handler``'s slot, for a connection that leaves HTTP (a
        WebSocket session, bounded by its own layer). Idempotent; the
        connection stays tracked so that stopping still closes it."""
        with self._lock:
            slot = self._slots.get(handler.connection)
            if slot is not None:
                self._give_up(slot)

    def slots_held(self) -> dict[str, int]:
        """Slots in use per pool (for tests and the bench)."""
        with self._lock:
            return dict(self._held)

    def open_connections(self) -> list[socket.socket]:
        with self._lock:
            return list(self._slots)

    # -- stopping ------------------------------------------------------------------

    def close_idle_connections(self) -> None:
        """Stop serving: idle keep-alive connections are closed now, busy ones
        after their current response, or by :meth:`close_all_connections` when
        the grace period (``limits.shutdown_grace``) ends."""
        self.stopping = True
        if self._stop_deadline is None:
            self._stop_deadline = time.monotonic() + self.limits.shutdown_grace
        with self._lock:
            idle = [s for s in self._slots.values() if s.pool is not None and s.idle()]
        for slot in idle:
            try:
                slot.sock.shutdown(socket.SHUT_RD)   # the next read sees the end; a response in flight still leaves
            except OSError:
                pass

    def close_all_connections(self, deadline: float) -> None:
        """Wait until ``deadline`` (time.monotonic) for the connections in HTTP
        to finish, then close every connection left, whatever its client is
        doing (trickling a body, holding a WebSocket)."""
        self.close_idle_connections()
        while time.monotonic() < deadline:
            with self._lock:
                if not any(s.pool is not None for s in self._slots.values()):
                    break
            time.sleep(0.02)
        with self._lock:
            left = list(self._slots.values())
        for slot in left:
            slot.close()
        if left:
            log.info("closed %d connection(s) still open at shutdown", len(left))

    def server_close(self) -> None:
        """Close the listening socket, every connection (after the grace period)
        and join the handler threads, within about grace + 1 s in all."""
        super().server_close()
        self.close_idle_connections()
        assert self._stop_deadline is not None
        self.close_all_connections(self._stop_deadline)
        with self._lock:
            threads = [s.thread for s in self._slots.values() if s.thread is not None]
        join_until = time.monotonic() + 1.0
        for thread in threads:
            thread.join(max(0.0, join_until - time.monotonic()))
        stuck = sum(t.is_alive() for t in threads)
        if stuck:
            log.warning("%d request thread(s) still busy at shutdown; not waiting for them", stuck)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # No traceback for something a client caused (it could fill the log):
        # one rate-limited line naming the error and where it happened.
        import sys
        import traceback

        exc = sys.exc_info()[1]
        where = ""
        if exc is not None and exc.__traceback__ is not None:
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            where = f" at {frame.filename}:{frame.lineno}"
        self.peer_log.log(logging.ERROR, str(client_address[0]), "error",
                          "unhandled error serving %s: %s%s", str(client_address[0]), repr(exc), where)
