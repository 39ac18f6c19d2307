"""The WebSocket I/O adapter: runs a :class:`~iofogd.ws.protocol.Connection` on a socket.

Theory of operation
-------------------
The daemon's HTTP handler (a ``BaseHTTPRequestHandler`` on a
``ThreadingHTTPServer``) calls :func:`accept` for a WebSocket path.  It
validates the upgrade (:mod:`iofogd.ws.handshake`), writes the 101 response and
returns a :class:`WebSocketSession` bound to the handler's socket.  The
handler's thread then calls :meth:`WebSocketSession.run`, which reads until the
connection is over and calls ``on_message`` for every data message, in that
thread.  Other threads (the control hub, shutdown) may call ``send_*`` and
``close`` at any time: one lock serialises every write and every change of the
protocol state.

- Bytes may already sit in the handler's buffered ``rfile`` after the request
  (a client may send its first frame right behind the handshake); they are
  drained before the socket is read directly (house-style "http.server traps").
- Reads wait in a selector, never in a socket timeout, because a timed-out
  ``SocketIO`` refuses any further read.  The socket's own timeout bounds
  writes only (``write_timeout``): a peer that stops reading cannot hold the
  writer lock forever.
- Keepalive: when nothing has been received for ``ping_interval`` seconds the
  server sends a ping (payload 0x09, which every SDK answers, spec 2.3); if
  nothing at all, a pong of any payload included, arrives within
  ``pong_timeout`` the peer is declared dead and the TCP connection dropped.
  The Java agent never noticed a pulled cable (spec 2.4); we do.
- Closing: the server closes the TCP connection after the closing handshake
  (RFC 6455 section 7.1.1).  It half-closes, then reads and discards until the
  peer closes too (or ``close_timeout``), so the peer receives our close frame
  instead of a reset.  A close we start waits ``close_timeout`` for the echo.
"""
from __future__ import annotations

import io
import logging
import selectors
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler

from iofogd.errors import ConnectionClosed, HandshakeError
from iofogd.record import Record
from iofogd.ws.frames import CLOSE_ABNORMAL, CLOSE_GOING_AWAY, CLOSE_INTERNAL_ERROR, CLOSE_NORMAL
from iofogd.ws.handshake import validate_request
from iofogd.ws.protocol import SDK_PING, Close, Connection, Message, Pong, State

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Callable, Final, List, Optional, Set

log = logging.getLogger(__name__)

_RECV_SIZE = 1 << 16
_MAX_WAIT = 1.0  # upper bound of one selector wait, so a close() from another thread is noticed
_LINGER = 2.0  # at most this long for the peer's EOF once the connection is over


class SessionLimits(Record):
    """Limits of one WebSocket session; the defaults are the daemon's production ones.

    A ``ping_interval`` of 0 disables the keepalive.
    """

    __slots__ = (
        "max_message_size", "max_frame_size", "ping_interval", "pong_timeout", "close_timeout",
        "write_timeout",
    )
    max_message_size: Final[int]
    max_frame_size: Final[int]
    ping_interval: Final[float]
    pong_timeout: Final[float]
    close_timeout: Final[float]
    write_timeout: Final[float]

    def __init__(
        self,
        max_message_size: int = 1 << 20,
        max_frame_size: int = 1 << 20,
        ping_interval: float = 20.0,
        pong_timeout: float = 20.0,
        close_timeout: float = 10.0,
        write_timeout: float = 30.0,
    ) -> None:
        self.max_message_size = max_message_size
        self.max_frame_size = max_frame_size
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.close_timeout = close_timeout
        self.write_timeout = write_timeout


if TYPE_CHECKING:
    OnMessage = Callable[["WebSocketSession", Message], None]


def accept(handler: BaseHTTPRequestHandler, *, limits: SessionLimits = SessionLimits()) -> WebSocketSession:
    """Complete the opening handshake on ``handler``'s connection.

    Raises :class:`~iofogd.errors.HandshakeError` (nothing written) when the
    request is not a valid upgrade; the caller answers it as HTTP.
    """
    if handler.request_version != "HTTP/1.1":
        # RFC 6455 section 4.2.1: "An HTTP/1.1 or higher GET request".
        raise HandshakeError(400, "a WebSocket handshake needs HTTP/1.1")
    headers = validate_request(handler.command, handler.headers)
    # Written by hand rather than with send_response(): the status line must say
    # HTTP/1.1 whatever the handler's protocol_version, and no Content-Length.
    lines = ["HTTP/1.1 101 Switching Protocols"]
    lines += [f"{name}: {value}" for name, value in headers]
    handler.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    handler.wfile.flush()
    handler.log_request(101)
    handler.close_connection = True
    return WebSocketSession(
        handler.connection, handler.rfile, limits, path=handler.path, peer=str(handler.client_address)
    )


class WebSocketSession:
    """One open WebSocket connection, server side."""

    def __init__(
        self,
        sock: socket.socket,
        rfile: Optional[io.BufferedIOBase],
        limits: SessionLimits,
        *,
        path: str = "",
        peer: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.path = path
        self.peer = peer
        self._sock = sock
        self._rfile = rfile
        self._clock = clock
        self._protocol = Connection(
            max_message_size=limits.max_message_size, max_frame_size=limits.max_frame_size
        )
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._close_deadline: Optional[float] = None
        self._last_rx = clock()
        self._ping_sent: Optional[float] = None
        sock.settimeout(limits.write_timeout)

    def __repr__(self) -> str:
        return f"<WebSocketSession {self.path} {self.peer} {self._protocol.state.value}>"

    # -- state -------------------------------------------------------------------

    @property
    def open(self) -> bool:
        return self._protocol.state is State.OPEN

    @property
    def close_code(self) -> Optional[int]:
        """The code the connection ended with (1006: dropped without a close frame)."""
        return self._protocol.close_code

    def wait_closed(self, timeout: Optional[float] = None) -> bool:
        """Block until :meth:`run` has returned; False on timeout."""
        return self._done.wait(timeout)

    # -- sending ------------------------------------------------------------------

    def send_binary(self, data: bytes) -> None:
        """Send one binary message; raises ConnectionClosed once closing has begun."""
        with self._lock:
            self._write(self._protocol.send_binary(data))

    def send_text(self, text: str) -> None:
        with self._lock:
            self._write(self._protocol.send_text(text))

    def ping(self, payload: bytes = SDK_PING) -> None:
        with self._lock:
            self._write(self._protocol.send_ping(payload))

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Start the closing handshake; :meth:`run` finishes it. Idempotent."""
        with self._lock:
            data = self._protocol.send_close(code, reason)
            if not data:
                return
            self._close_deadline = self._clock() + self.limits.close_timeout
            try:
                self._write(data)
            except ConnectionClosed:
                pass
        log.debug("ws %s: closing with %d", self.path, code)

    def _write(self, data: bytes) -> None:
        """Write under the lock; a failed write drops the connection."""
        if not data:
            return
        try:
            self._sock.sendall(data)
        except OSError as exc:
            self._protocol.receive_eof()
            self._shutdown(socket.SHUT_RDWR)
            raise ConnectionClosed(CLOSE_ABNORMAL, f"write failed: {exc}") from exc

    # -- the read loop ---------------------------------------------------------------

    def run(self, on_message: OnMessage) -> None:
        """Read and dispatch until the connection is closed; never raises for network errors."""
        sel = selectors.DefaultSelector()
        try:
            buffered = self._drain_rfile()
            if buffered:
                self._feed(buffered, on_message)
            sel.register(self._sock, selectors.EVENT_READ)
            while self._protocol.state is not State.CLOSED:
                wait = self._check_timers()
                if wait is None:
                    break
                if not sel.select(min(wait, _MAX_WAIT)):
                    continue
                try:
                    data = self._sock.recv(_RECV_SIZE)
                except OSError:
                    data = b""
                if not data:
                    with self._lock:
                        self._protocol.receive_eof()
                    break
                self._last_rx = self._clock()
                self._ping_sent = None
                self._feed(data, on_message)
        finally:
            sel.close()
            self._finish()
            self._done.set()
            log.debug("ws %s: closed (%s)", self.path, self.close_code)

    def _drain_rfile(self) -> bytes:
        """Bytes that arrived behind the handshake and sit in ``rfile``'s buffer."""
        rfile = self._rfile
        if rfile is None:
            return b""
        chunks: List[bytes] = []
        self._sock.settimeout(0.0)  # read1() then returns b"" instead of waiting
        try:
            while True:
                chunk = rfile.read1(_RECV_SIZE)
                if not chunk:
                    break
                chunks.append(chunk)
        except (BlockingIOError, OSError, ValueError):
            pass
        finally:
            self._sock.settimeout(self.limits.write_timeout)
        return b"".join(chunks)

    def _feed(self, data: bytes, on_message: OnMessage) -> None:
        protocol = self._protocol
        with self._lock:
            protocol.receive_data(data)
        while True:
            with self._lock:
                event = protocol.next_event()
                try:
                    self._write(protocol.data_to_send())
                except ConnectionClosed:
                    return
            if event is None:
                if protocol.failure is not None:
                    log.info("ws %s: failed: %s", self.path, protocol.failure)
                return
            if isinstance(event, Message):
                if protocol.state is State.OPEN:
                    self._dispatch(on_message, event)
            elif isinstance(event, Pong):
                self._ping_sent = None
            elif isinstance(event, Close):
                log.debug("ws %s: peer closed with %d", self.path, event.code)

    def _dispatch(self, on_message: OnMessage, message: Message) -> None:
        try:
            on_message(self, message)
        except ConnectionClosed:
            pass
        except Exception:
            # Our fault, not the peer's: 1011, details only in our log (RFC 6455 7.4.1).
            log.exception("ws %s: message handler failed", self.path)
            self.close(CLOSE_INTERNAL_ERROR, "internal error")

    def _check_timers(self) -> Optional[float]:
        """Run the keepalive and the close timeout; the seconds to wait, None to stop."""
        now = self._clock()
        limits = self.limits
        deadlines: List[float] = []
        if self._close_deadline is not None:
            if now >= self._close_deadline:
                log.info("ws %s: no close frame from the peer in %.1fs", self.path, limits.close_timeout)
                self._drop()
                return None
            deadlines.append(self._close_deadline)
        elif limits.ping_interval > 0:
            if self._ping_sent is not None:
                if now - self._ping_sent >= limits.pong_timeout:
                    log.info("ws %s: no pong in %.1fs; dropping the peer", self.path, limits.pong_timeout)
                    self._drop()
                    return None
                deadlines.append(self._ping_sent + limits.pong_timeout)
            elif now - self._last_rx >= limits.ping_interval:
                self._ping_sent = now
                try:
                    self.ping()
                except ConnectionClosed:
                    return 0.0  # closing began meanwhile, or the write failed: look again
                deadlines.append(now + limits.pong_timeout)
            else:
                deadlines.append(self._last_rx + limits.ping_interval)
        return max(0.0, min(deadlines) - now) if deadlines else _MAX_WAIT

    def _drop(self) -> None:
        """Abandon a peer that does not answer: no more waiting, just close TCP."""
        self._shutdown(socket.SHUT_RDWR)  # first: it wakes a writer stuck holding the lock
        with self._lock:
            self._protocol.receive_eof()

    def _finish(self) -> None:
        """Flush what is owed, close our side first, then wait for the peer's EOF."""
        with self._lock:
            try:
                self._write(self._protocol.data_to_send())
            except ConnectionClosed:
                pass
        if self._protocol.close_code == CLOSE_ABNORMAL:
            self._shutdown(socket.SHUT_RDWR)
            return
        self._shutdown(socket.SHUT_WR)
        # Reading to EOF keeps unread bytes from turning our close into a reset.
        # Bounded: a client that never closes its end must not hold the thread.
        deadline = self._clock() + min(self.limits.close_timeout, _LINGER)
        try:
            while True:
                left = deadline - self._clock()
                if left <= 0:
                    break
                self._sock.settimeout(left)
                if not self._sock.recv(_RECV_SIZE):
                    break
        except OSError:
            pass

    def _shutdown(self, how: int) -> None:
        try:
            self._sock.shutdown(how)
        except OSError:
            pass


class SessionRegistry:
    """The open sessions, so that shutdown can close them (``daemon_threads`` will not wait)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: Set[WebSocketSession] = set()

    def add(self, session: WebSocketSession) -> None:
        with self._lock:
            self._sessions.add(session)

    def discard(self, session: WebSocketSession) -> None:
        with self._lock:
            self._sessions.discard(session)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def sessions(self) -> List[WebSocketSession]:
        with self._lock:
            return list(self._sessions)

    def close_all(
        self, code: int = CLOSE_GOING_AWAY, reason: str = "going away", wait: Optional[float] = None
    ) -> None:
        """Close every session with ``code``; with ``wait``, give their handshakes that long."""
        sessions = self.sessions()
        for session in sessions:
            session.close(code, reason)
        if wait is not None:
            deadline = time.monotonic() + wait
            for session in sessions:
                session.wait_closed(max(0.0, deadline - time.monotonic()))
