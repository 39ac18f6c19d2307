"""The WebSocket I/O adapter: runs a :class:`~iofogd.ws.protocol.Connection` on a socket.

Theory of operation
-------------------
The HTTP layer validates the upgrade (:mod:`iofogd.ws.handshake`), writes the
101 response and hands over the socket, the bytes it had already read past the
request (a client may send its first frame right behind the handshake:
:func:`read_buffered`), the path and the peer.  :meth:`WebSocketSession.run`
then reads until the connection is over and calls ``on_message`` for every
data message, in that thread.  Other threads (the control hub, shutdown) may
call ``send_*`` and ``close`` at any time: one lock serialises every write and
every change of the protocol state, and each drain of the protocol's outbox
leaves in ONE ``sendall`` (with TCP_NODELAY set by the server, no frame waits
for a delayed ACK).  The common read takes no lock: when the bytes of one
``recv`` are exactly one whole, final, masked text or binary frame and nothing
is pending, :meth:`~iofogd.ws.protocol.Connection.whole_message` decodes it
without changing any state, and its payload goes straight to ``on_message``;
every other read goes through the locked general path.  An echoed message
costs 4 Python calls (whole_message, the handler, send_binary,
send_binary_now) instead of the general path's 15, and reads no clock: the
loop counts reads for the keepalive, the kernel times writes (bench/bench_ws.py
prints the Python per message against a bare framer's: 1.0 vs 0.88 us).

The socket is blocking, with no timeout: one ``recv`` per read and one ``send``
per write, as a bare thread-per-connection framer does.  A socket timeout makes
CPython poll before every call, and the selector we used to wait in added one
more wait: each drops and retakes the GIL, and with 32 busy sessions those
hand-offs were what held clients back (measured with bench/bench_ws.py).  Time
is watched from outside instead: :class:`SessionRegistry` runs one watchdog
thread that calls :meth:`WebSocketSession.tick` for every session, and ends a
session by shutting its socket down, which wakes a blocked read or write.

- Keepalive: when nothing has been received for ``ping_interval`` seconds the
  watchdog sends a ping (``ping_payload``: the daemon uses 0x09, which every
  SDK answers, docs/websocket.md#ping); if nothing at all, a pong of any payload included,
  arrives within ``pong_timeout`` the peer is declared dead and the TCP
  connection dropped.  The Java agent never noticed a pulled cable (docs/websocket.md#close);
  we do.
- A write that makes no progress for ``write_timeout`` (a peer that stopped
  reading) fails in the kernel (SO_SNDTIMEO) and drops the connection, so no
  thread waits on it for ever.
- Closing: the server closes the TCP connection after the closing handshake
  (RFC 6455 section 7.1.1).  It half-closes, then reads and discards until the
  peer closes too (or ``close_timeout``), so the peer receives our close frame
  instead of a reset.  A close we start waits ``close_timeout`` for the echo.
- Paths and peers come from the client: they are logged with ``%r`` (escaped),
  never raw.
"""
from __future__ import annotations

import io
import logging
import socket
import threading
import time

from iofogd.errors import ConnectionClosed, ProtocolError
from iofogd.record import Record
from iofogd.sockettimeouts import set_timeout
from iofogd.ws.frames import Close, CloseCode
from iofogd.ws.protocol import Connection, Message, Pong, State

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Callable, Final, List, NoReturn, Optional, Set, Union

log = logging.getLogger(__name__)

_RECV_SIZE = 1 << 16
# What a read asks for while a session is quiet. sock.recv allocates its
# whole size before it blocks, and a session spends its life blocked in a
# read: 64 KiB each, from the glibc arena of its thread, whose pages each ping
# touched somewhere new (300 control sockets that ping grew the daemon by
# ~19 KiB a socket per ping round, bench/bench_ws.py --only load). 448 bytes
# plus the bytes object's header stay within pymalloc's small-object limit
# (512): shared pools, no per-thread arena. A read that fills it asks for
# _RECV_SIZE next, so a large message still comes in 64 KiB reads.
_IDLE_RECV_SIZE = 448
_MAX_WAIT = 1.0  # the watchdog looks at every session at least this often
_LINGER = 2.0  # at most this long for the peer's EOF once the connection is over


class SessionLimits(Record):
    """Limits of one WebSocket session; the defaults are the daemon's production ones.

    A ``ping_interval`` of 0 disables the keepalive.
    """

    __slots__ = (
        "max_message_size", "max_frame_size", "max_fragments", "ping_interval", "pong_timeout",
        "close_timeout", "write_timeout",
    )
    max_message_size: Final[int]
    max_frame_size: Final[int]
    # Frames of one fragmented message. No SDK fragments at all (their control
    # messages are one byte); each fragment costs a parse while holding the
    # GIL, so a flood of tiny ones is cut off early.
    max_fragments: Final[int]
    ping_interval: Final[float]
    pong_timeout: Final[float]
    close_timeout: Final[float]
    write_timeout: Final[float]

    def __init__(
        self,
        max_message_size: int = 1 << 20,
        max_frame_size: int = 1 << 20,
        max_fragments: int = 128,
        ping_interval: float = 20.0,
        pong_timeout: float = 20.0,
        close_timeout: float = 10.0,
        write_timeout: float = 30.0,
    ) -> None:
        self.max_message_size = max_message_size
        self.max_frame_size = max_frame_size
        self.max_fragments = max_fragments
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.close_timeout = close_timeout
        self.write_timeout = write_timeout


if TYPE_CHECKING:
    # A data message's payload: str for a text message, bytes for a binary one.
    OnMessage = Callable[["WebSocketSession", Union[str, bytes]], None]


def read_buffered(rfile: io.BufferedIOBase, sock: socket.socket) -> bytes:
    """What an HTTP server's buffered ``rfile`` holds past the request, without blocking.

    ONE ``read1``: it returns the buffered bytes, or (buffer empty) what one
    non-blocking read brings.  A loop would go on reading the socket for as
    long as a client keeps sending, and hand the session megabytes that no
    limit has looked at yet.
    """
    timeout = sock.gettimeout()
    sock.settimeout(0.0)  # read1() then returns at once instead of waiting
    try:
        return rfile.read1(_RECV_SIZE) or b""
    except (BlockingIOError, OSError, ValueError):
        return b""
    finally:
        sock.settimeout(timeout)


class LogThrottle:
    """At most ``burst`` lines per ``period`` seconds for what clients can trigger at will.

    A client that fails its connections in a loop must not fill the disk through
    our log (each line is one INFO): past the burst, lines are counted, and the
    count is logged with the next line let through.
    """

    def __init__(self, burst: int = 20, period: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = burst
        self.period = period
        self._clock = clock
        self._lock = threading.Lock()
        self._window_start = -period
        self._count = 0
        self._suppressed = 0

    def info(self, msg: str, *args: object) -> None:
        with self._lock:
            now = self._clock()
            if now - self._window_start >= self.period:
                self._window_start, self._count = now, 0
            self._count += 1
            if self._count > self.burst:
                self._suppressed += 1
                return
            suppressed, self._suppressed = self._suppressed, 0
        if suppressed:
            log.info("ws: %d similar lines suppressed", suppressed)
        log.info(msg, *args)


client_log = LogThrottle()   # the ws layer's lines about what a client did


def _echo(payload: bytes) -> bytes:
    return payload


def _nothing() -> None:
    pass


class WebSocketSession:
    """One open WebSocket connection, server side."""

    def __init__(
        self,
        sock: socket.socket,
        limits: SessionLimits,
        *,
        path: str = "",
        peer: str = "",
        ping_payload: bytes = b"",
        pong_payload: Callable[[bytes], bytes] = _echo,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.path = path
        self.peer = peer
        self.ping_payload = ping_payload
        self._sock = sock
        self._clock = clock
        self._protocol = Connection(
            max_message_size=limits.max_message_size, max_frame_size=limits.max_frame_size,
            max_fragments=limits.max_fragments, pong_payload=pong_payload,
        )
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._close_deadline: Optional[float] = None
        self._last_rx = clock()   # as the watchdog last saw it: see tick()
        self._rx = 0   # reads so far; the read loop's only bookkeeping per message
        self._rx_seen = 0
        self._ping_sent: Optional[float] = None
        self._dropped = False
        self.wake: Callable[[], None] = _nothing   # set by the registry: "look at my deadlines"
        sock.settimeout(None)
        # The HTTP layer bounds its reads and writes in the kernel; a session is
        # quiet for as long as it likes (the watchdog's keepalive finds a dead
        # peer), and a write that makes no progress for write_timeout fails.
        set_timeout(sock, socket.SO_RCVTIMEO, None)
        set_timeout(sock, socket.SO_SNDTIMEO, limits.write_timeout)

    def __repr__(self) -> str:
        return f"<WebSocketSession {self.path!r} {self.peer!r} {self._protocol.state.value}>"

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
        # The path of every echo and every hub message: acquire and release
        # instead of ``with`` (~100 ns less on CPython 3.11).
        lock = self._lock
        lock.acquire()
        try:
            frame = self._protocol.send_binary_now(data)
            try:   # _send, inlined
                self._sock.sendall(frame)
            except OSError as exc:
                self._write_failed(exc)
        finally:
            lock.release()

    def send_text(self, text: str) -> None:
        with self._lock:
            self._protocol.send_text(text)
            self._flush()

    def ping(self, payload: Optional[bytes] = None) -> None:
        with self._lock:
            self._protocol.send_ping(self.ping_payload if payload is None else payload)
            self._flush()

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake; :meth:`run` finishes it. Idempotent."""
        with self._lock:
            if not self._protocol.send_close(code, reason):
                return
            self._close_deadline = self._clock() + self.limits.close_timeout
            try:
                self._flush()
            except ConnectionClosed:
                pass
        self.wake()
        log.debug("ws %r: closing with %d", self.path, code)

    def _flush(self) -> None:
        """Write the protocol's outbox in one ``sendall``; called under the lock.

        A failed write drops the connection (ConnectionClosed).
        """
        data = self._protocol.data_to_send()
        if data:
            self._send(data)

    def _send(self, data: bytes) -> None:
        """One ``sendall`` of what the protocol queued; called under the lock.

        A peer that stops reading makes it fail after ``write_timeout`` without
        progress (SO_SNDTIMEO: EAGAIN), and the connection is dropped.
        """
        try:
            self._sock.sendall(data)
        except OSError as exc:
            self._write_failed(exc)

    def _write_failed(self, exc: OSError) -> NoReturn:
        """A write failed: the connection is dropped (ConnectionClosed); called under the lock."""
        if isinstance(exc, BlockingIOError):
            client_log.info("ws %r: a write made no progress in %.1fs; dropping the peer",
                            self.path, self.limits.write_timeout)
        self._protocol.receive_eof()
        self._shutdown(socket.SHUT_RDWR)
        raise ConnectionClosed(CloseCode.ABNORMAL_CLOSURE, f"write failed: {exc}") from exc

    # -- the read loop ---------------------------------------------------------------

    def run(self, on_message: OnMessage, buffered: bytes = b"") -> None:
        """Read and dispatch until the connection is closed; never raises for network errors.

        ``buffered``: the bytes the HTTP layer had read past the handshake request.
        """
        protocol = self._protocol
        whole_message = protocol.whole_message
        sock = self._sock
        closed = State.CLOSED   # a local: State.CLOSED is an enum lookup (~60 ns on 3.11)
        try:
            if buffered:
                self._feed(buffered, on_message)
            size = _IDLE_RECV_SIZE
            while protocol.state is not closed:
                try:
                    data = sock.recv(size)
                except OSError:
                    data = b""
                if not data or self._dropped:
                    with self._lock:
                        protocol.receive_eof()
                    break
                # The common read: one whole data frame, decoded without the lock
                # (whole_message changes nothing); anything else, _feed.
                payload = whole_message(data)
                if payload is None:
                    self._feed(data, on_message)
                else:
                    try:   # _dispatch, inlined
                        on_message(self, payload)
                    except ConnectionClosed:
                        pass
                    except Exception:
                        self._handler_failed()
                # After the reply (an echo leaves a little sooner):
                self._rx += 1   # the peer is alive: the watchdog notices (no clock read here)
                size = _RECV_SIZE if len(data) == size else _IDLE_RECV_SIZE
        finally:
            self._finish()
            self._done.set()
            log.debug("ws %r: closed (%s)", self.path, self.close_code)

    def _feed(self, data: bytes, on_message: OnMessage) -> None:
        protocol = self._protocol
        while True:
            # One event at a time, so that the reply to a message leaves before
            # the echo of a close frame that followed it in the same segment.
            with self._lock:
                if data:
                    protocol.receive_data(data)
                    data = b""
                event = protocol.next_event()
                out = protocol.data_to_send()   # a pong, a close echo; mostly nothing
                if out:
                    try:
                        self._send(out)
                    except ConnectionClosed:
                        return
            if event is None:
                failure = protocol.failure
                if isinstance(failure, ProtocolError):
                    client_log.info("ws %r from %s: failed: %s", self.path, self.peer, failure)
                elif failure is not None:
                    log.error("ws %r: closed with 1011 after an internal error", self.path, exc_info=failure)
                return
            if isinstance(event, Message):
                if protocol.state is State.OPEN:
                    self._dispatch(on_message, event.data)
            elif isinstance(event, Pong):
                self._ping_sent = None
            elif isinstance(event, Close):
                log.debug("ws %r: peer closed with %d", self.path, event.code)
            if not protocol.has_input():
                # One event per read, nothing left to parse (a ping whose pong
                # has just left, a message): no second round under the lock.
                return

    def _dispatch(self, on_message: OnMessage, payload: Union[str, bytes]) -> None:
        try:
            on_message(self, payload)
        except ConnectionClosed:
            pass
        except Exception:
            self._handler_failed()

    def _handler_failed(self) -> None:
        """Our fault, not the peer's: 1011, details only in our log (RFC 6455 7.4.1).

        Called from an ``except`` block: the log carries the handler's traceback.
        """
        log.exception("ws %r: message handler failed", self.path)
        self.close(CloseCode.INTERNAL_ERROR, "internal error")

    # -- time (called by the registry's watchdog thread) -------------------------------

    def tick(self, now: float) -> Optional[float]:
        """Run the write timeout, the close timeout and the keepalive at ``now``.

        Returns when this session next needs a look, ``None`` once it is over.
        Never blocks: a ping is only sent when no write is in progress, and a
        ping that does not fit the socket buffer at once means a peer that
        neither sends nor reads; it is dropped.
        """
        if self._done.is_set() or self._dropped:
            return None
        limits = self.limits
        rx = self._rx
        if rx != self._rx_seen:
            # Bytes arrived since the last look: the peer is alive. The read loop
            # only counts its reads, so the time of the last one is known to the
            # watchdog's precision (it looks at least every _MAX_WAIT seconds, and
            # at each session's own deadline): a keepalive ping may leave up to
            # that much later than ping_interval after the last read.
            self._rx_seen = rx
            self._last_rx = now
            self._ping_sent = None
        if self._close_deadline is not None:
            if now >= self._close_deadline:
                client_log.info("ws %r: no close frame from the peer in %.1fs", self.path, limits.close_timeout)
                self._drop()
                return None
            return self._close_deadline
        if limits.ping_interval <= 0:
            return now + _MAX_WAIT
        ping_sent = self._ping_sent
        if ping_sent is not None:
            if now - ping_sent >= limits.pong_timeout:
                client_log.info("ws %r: no pong in %.1fs; dropping the peer", self.path, limits.pong_timeout)
                self._drop()
                return None
            return ping_sent + limits.pong_timeout
        if now - self._last_rx < limits.ping_interval:
            return self._last_rx + limits.ping_interval
        if not self._lock.acquire(blocking=False):
            return now + 0.05   # a write is in progress: look again soon
        try:
            if self._protocol.state is not State.OPEN:
                return now + _MAX_WAIT
            self._protocol.send_ping(self.ping_payload)
            data = self._protocol.data_to_send()
            try:
                sent = self._sock.send(data, socket.MSG_DONTWAIT)
            except OSError:
                sent = -1
        finally:
            self._lock.release()
        if sent != len(data):
            client_log.info("ws %r: neither sends nor reads; dropping the peer", self.path)
            self._drop()
            return None
        self._ping_sent = now
        return now + limits.pong_timeout

    def abort(self) -> None:
        """Drop the connection now, without a closing handshake."""
        self._drop()

    def _drop(self) -> None:
        """Abandon a peer: no more waiting. Shutting the socket down wakes a blocked read or write."""
        self._dropped = True
        self._shutdown(socket.SHUT_RDWR)

    def _finish(self) -> None:
        """Flush what is owed, close our side first, then wait for the peer's EOF."""
        with self._lock:
            try:
                self._flush()
            except ConnectionClosed:
                pass
        if self._dropped or self._protocol.close_code == CloseCode.ABNORMAL_CLOSURE:
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
    """The open sessions, so that shutdown can close them, and their watchdog.

    The watchdog is one thread for all sessions (see the module docstring); it
    starts with the first session and ends when the last one has gone.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: Set[WebSocketSession] = set()
        self._wake = threading.Event()
        self._watchdog: Optional[threading.Thread] = None

    def add(self, session: WebSocketSession) -> None:
        session.wake = self._wake.set
        with self._lock:
            self._sessions.add(session)
            if self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch, name="ws-watchdog", daemon=True)
                self._watchdog.start()
        self._wake.set()

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
        self, code: int = CloseCode.GOING_AWAY, reason: str = "going away", wait: Optional[float] = None
    ) -> None:
        """Close every session with ``code``; with ``wait``, give their handshakes that long
        and then drop the peers that have not finished (shutdown is bounded, whatever
        the clients do)."""
        sessions = self.sessions()
        for session in sessions:
            session.close(code, reason)
        if wait is not None:
            deadline = time.monotonic() + wait
            for session in sessions:
                if not session.wait_closed(max(0.0, deadline - time.monotonic())):
                    session.abort()

    def _watch(self) -> None:
        while True:
            with self._lock:
                if not self._sessions:
                    self._watchdog = None
                    return
                sessions = list(self._sessions)
            self._wake.clear()
            now = self._clock()
            wake_at = now + _MAX_WAIT
            for session in sessions:
                try:
                    at = session.tick(now)
                except Exception:   # a bug here must not stop every other session's keepalive
                    log.exception("ws watchdog failed on %r", session)
                    at = None
                if at is not None and at < wake_at:
                    wake_at = at
            self._wake.wait(max(0.0, wake_at - self._clock()))
