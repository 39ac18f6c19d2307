"""The AMQP 1.0 I/O adapter: runs a :class:`~iofogd.bus.amqp.protocol.Connection` on a socket.

Theory of operation
-------------------
:meth:`Client.connect` opens the TCP connection (TLS through the ssl module
when the URL is ``amqps://``; ssl, and so OpenSSL, is imported only then:
docs/host.md#memory), starts one I/O thread and waits until the
connection is open and its one session has begun.  The I/O thread alone
touches the socket: it reads, feeds the protocol, writes what the protocol
queued, and runs the protocol's timers (heartbeats, our idle timeout).  Other
threads call :meth:`Client.sender`, :meth:`Client.receiver`,
:meth:`Client.send`, :meth:`Client.settle` and :meth:`Client.flow`; those
change the protocol state under one lock and wake the I/O thread through a
pipe, so one thread writes and TLS is never read and written at once.

Callbacks (``on_message`` or ``on_messages`` of a receiver, ``on_outcome`` of
a send, ``on_closed``) run in the I/O thread, outside the lock; they may call
back into the client.  While a callback runs nothing is read: a slow consumer
holds the connection back, and link credit bounds what it can be sent meanwhile.
A receiver made with ``on_messages`` gets, in one call, every delivery that
one round of reading brought for it (all that the socket had), so that its
consumer can handle them as one batch (the router link stores them with one
fsync) and settle them together with :meth:`Client.settle_many`.

The socket is non-blocking; reads and writes wait in a selector, so a peer
that stops reading cannot block the I/O thread (its writes wait, its reads
go on).  When the connection ends (the peer closes, the TCP connection
drops, a protocol violation, our idle timeout) ``on_closed`` runs once with
the error (``None`` for a close we asked for) and every waiting call raises.
"""
from __future__ import annotations

import logging
import os
import selectors
import socket
import threading
import time
import urllib.parse
import uuid

from iofogd.bus.amqp import protocol as p
from iofogd.errors import AmqpConnectionLost, AmqpError, AmqpRemoteError

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    import ssl
    from typing import Any, Callable, Dict, List, Optional, Tuple, Type

    OnMessage = Callable[["Receiver", p.Delivery], None]
    OnMessages = Callable[["Receiver", List[p.Delivery]], None]
    OnOutcome = Callable[[p.Delivery], None]
    OnClosed = Callable[[Optional[AmqpError]], None]

log = logging.getLogger(__name__)

_RECV_SIZE = 1 << 16
# What one round of reading takes before the deliveries it completed are handed over: the
# rest waits in the socket (the kernel's buffer, then the peer), so our memory does not
# grow with the credit we gave.
_READ_ROUND = 1 << 20
_MAX_WAIT = 1.0


class Endpoint:
    """Where to connect, parsed from ``amqp[s]://[user:password@]host[:port]``."""

    __slots__ = ("host", "port", "tls", "username", "password")

    def __init__(self, host: str, port: int, tls: bool = False, username: Optional[str] = None,
                 password: Optional[str] = None) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.username = username
        self.password = password

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("amqp", "amqps"):
            raise ValueError(f"not an AMQP URL: {url!r}")
        if not parts.hostname:
            raise ValueError(f"no host in {url!r}")
        tls = parts.scheme == "amqps"
        port = parts.port or (5671 if tls else 5672)
        user = urllib.parse.unquote(parts.username) if parts.username else None
        password = urllib.parse.unquote(parts.password) if parts.password else None
        return cls(parts.hostname, port, tls, user, password)

    def __repr__(self) -> str:
        scheme = "amqps" if self.tls else "amqp"
        return f"{scheme}://{self.host}:{self.port}"


class Sender:
    """A sender link; ``credit`` and ``queued`` say whether the peer keeps up."""

    def __init__(self, client: Client, link: p.Link) -> None:
        self.client = client
        self.link = link

    @property
    def address(self) -> str:
        return self.link.address

    @property
    def credit(self) -> int:
        return self.link.credit

    @property
    def queued(self) -> int:
        return self.link.queued

    @property
    def unsettled(self) -> int:
        return len(self.link.unsettled)


class Receiver:
    """A receiver link.  With ``prefetch`` set, credit is topped up as deliveries are
    settled, so that credit plus unsettled deliveries never exceed ``prefetch``
    (twice that with RabbitMQ 3.x, which overdraws by what was in flight when
    credit was topped up): a consumer that settles slowly holds the peer back.
    0 leaves credit to :meth:`Client.flow`.  ``max_bytes`` (0: none) bounds the
    window in bytes too: it shrinks to ``max_bytes`` over the size of the largest
    message of the last settled batch (at least 1), so big messages get less credit."""

    def __init__(self, client: Client, link: p.Link, on_message: Optional[OnMessage],
                 on_messages: Optional[OnMessages], prefetch: int, max_bytes: int = 0) -> None:
        self.client = client
        self.link = link
        self.on_message = on_message
        self.on_messages = on_messages
        self.prefetch = prefetch
        self.max_bytes = max_bytes
        self.largest = 0   # bytes: the largest message of the last batch settled

    @property
    def window(self) -> int:
        """How much credit plus unsettled deliveries we allow now."""
        if self.max_bytes and self.largest:
            return max(1, min(self.prefetch, self.max_bytes // self.largest))
        return self.prefetch

    @property
    def address(self) -> str:
        return self.link.address


class Client:
    """One AMQP connection with one session (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        container_id: Optional[str] = None,
        idle_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        ssl_context: Optional[ssl.SSLContext] = None,
        max_frame_size: int = 1 << 16,
        max_message_size: int = 1 << 24,
        on_closed: Optional[OnClosed] = None,
    ) -> None:
        self.endpoint = Endpoint.parse(url)
        self.container_id = container_id or f"iofogd-{uuid.uuid4().hex}"
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.ssl_context = ssl_context
        self.on_closed = on_closed
        e = self.endpoint
        sasl: p.Mechanism = p.SaslPlain(e.username, e.password or "") if e.username else p.SaslAnonymous()
        self.protocol = p.Connection(container_id=self.container_id, hostname=e.host, sasl=sasl,
                                     max_frame_size=max_frame_size, idle_timeout=idle_timeout,
                                     max_message_size=max_message_size, now=time.monotonic())
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._sock: Optional[socket.socket] = None
        # What a non-blocking send or recv raises when it would block; TLS adds its own two.
        self._would_block: Tuple[Type[OSError], ...] = (BlockingIOError,)
        self._tls: Optional[ssl.SSLSocket] = None
        self._wake_r, self._wake_w = os.pipe()
        self._woken = False   # a byte is in the pipe that the I/O thread has not read yet
        self._thread: Optional[threading.Thread] = None
        self._session: Optional[p.Session] = None
        self._opened = False
        self._closing = False
        self.closed = threading.Event()
        self.error: Optional[AmqpError] = None
        self._receivers: Dict[int, Receiver] = {}  # by our handle
        self._outcomes: Dict[int, OnOutcome] = {}  # by id(delivery)
        self._attached: Dict[int, Optional[AmqpError]] = {}  # handle -> None attached / error

    # -- connecting -------------------------------------------------------------------

    def connect(self) -> None:
        """Open the connection and its session; raises an AmqpError subclass on failure."""
        e = self.endpoint
        try:
            sock = socket.create_connection((e.host, e.port), timeout=self.connect_timeout)
        except OSError as exc:
            self._release_pipe()
            raise AmqpConnectionLost(f"cannot connect to {e!r}: {exc}") from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if e.tls:
                import ssl

                context = self.ssl_context or ssl.create_default_context()
                sock = self._tls = context.wrap_socket(sock, server_hostname=e.host)
                self._would_block = (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError)
        except OSError as exc:   # ssl.SSLError is one
            sock.close()
            self._release_pipe()
            raise AmqpConnectionLost(f"TLS handshake with {e!r} failed: {exc}") from exc
        sock.setblocking(False)
        self._sock = sock
        with self._lock:
            self.protocol.initiate(time.monotonic())
            self._session = self.protocol.begin()
        self._thread = threading.Thread(target=self._run, name=f"amqp {e!r}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.connect_timeout
        with self._changed:
            while not (self._opened and self._session.remote_begun):
                if self.closed.is_set():
                    raise self.error or AmqpConnectionLost("connection closed while opening")
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
        if not (self._opened and self._session.remote_begun):
            self.close(timeout=1.0)
            raise AmqpConnectionLost(f"no open from {e!r} within {self.connect_timeout:g} s")

    def _release_pipe(self) -> None:
        fds = (self._wake_r, self._wake_w)
        self._wake_r = self._wake_w = -1  # first, so that _wake() never writes to a reused fd
        for fd in fds:
            if fd >= 0:
                os.close(fd)

    # -- links ----------------------------------------------------------------------------

    def _wait_attached(self, link: p.Link, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while link.handle not in self._attached:
                if self.closed.is_set() or self.error is not None:
                    raise self.error or AmqpConnectionLost("connection closed")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AmqpConnectionLost(f"no attach for {link.address!r} within {timeout:g} s")
                self._changed.wait(left)
            error = self._attached[link.handle]
        if error is not None:
            raise error

    def sender(self, address: str, *, name: Optional[str] = None, timeout: float = 10.0,
               durable: int = 0) -> Sender:
        """Attach a sender to ``address`` and wait for the peer's attach."""
        with self._lock:
            self._check_open()
            assert self._session is not None
            link = self.protocol.attach_sender(self._session, name or f"{address}-sender-{uuid.uuid4().hex[:8]}",
                                               address, durable)
        self._wake()
        self._wait_attached(link, timeout)
        return Sender(self, link)

    def receiver(self, address: str, on_message: Optional[OnMessage] = None, *,
                 on_messages: Optional[OnMessages] = None, credit: int = 100, prefetch: bool = True,
                 max_bytes: int = 0, name: Optional[str] = None, timeout: float = 10.0,
                 durable: int = 0) -> Receiver:
        """Attach a receiver to ``address`` granting ``credit``; ``on_message`` gets every delivery
        (or ``on_messages`` every batch of them, in order: what one read brought), which stays
        unsettled until :meth:`settle`.  ``prefetch``: keep ``credit`` topped up as deliveries
        are settled, within ``max_bytes`` (see :class:`Receiver`)."""
        if (on_message is None) == (on_messages is None):
            raise ValueError("a receiver needs on_message or on_messages (one of them)")
        with self._lock:
            self._check_open()
            assert self._session is not None
            link = self.protocol.attach_receiver(
                self._session, name or f"{address}-receiver-{uuid.uuid4().hex[:8]}", address, credit, durable)
            receiver = Receiver(self, link, on_message, on_messages, credit if prefetch else 0, max_bytes)
            self._receivers[link.handle] = receiver
        self._wake()
        self._wait_attached(link, timeout)
        return receiver

    def detach(self, link: p.Link) -> None:
        with self._lock:
            self.protocol.detach(link)
        self._wake()

    def send(self, sender: Sender, payload: bytes, on_outcome: Optional[OnOutcome] = None,
             *, settled: bool = False, context: Any = None) -> p.Delivery:
        """Queue an encoded message; ``on_outcome`` runs when the peer settles it
        (``delivery.state``: Accepted, Rejected, Released, Modified)."""
        with self._lock:
            self._check_open()
            delivery = self.protocol.send(sender.link, payload, settled=settled, context=context)
            if on_outcome is not None:
                self._outcomes[id(delivery)] = on_outcome
        self._wake()
        return delivery

    def settle(self, delivery: p.Delivery, state: Any = None) -> None:
        """Settle a received delivery (accepted unless ``state`` says otherwise)."""
        self.settle_many([delivery], state)

    def settle_many(self, deliveries: List[p.Delivery], state: Any = None) -> None:
        """Settle received deliveries with one outcome (accepted unless ``state`` says
        otherwise): one disposition frame per run of consecutive ids, one credit top-up."""
        with self._lock:
            self.protocol.settle_many(deliveries, state)
            largest: Dict[int, int] = {}   # by handle
            for d in deliveries:
                largest[d.link.handle] = max(largest.get(d.link.handle, 0), len(d.payload))
            for handle, size in largest.items():
                receiver = self._receivers.get(handle)
                if receiver is not None and receiver.prefetch and not self.closed.is_set():
                    receiver.largest = size
                    link = receiver.link
                    window = receiver.window
                    want = max(0, window - len(link.unsettled))
                    # Top up in batches (half the window) rather than one flow frame per message;
                    # cut credit at once when big messages shrank the window.
                    if not link.detached and (want - link.credit >= max(1, window // 2) or link.credit > want):
                        self.protocol.flow(link, want)
        self._wake()

    def flow(self, receiver: Receiver, credit: int) -> None:
        with self._lock:
            self._check_open()
            self.protocol.flow(receiver.link, credit)
        self._wake()

    def _check_open(self) -> None:
        if self.closed.is_set() or self._closing:
            raise self.error or AmqpConnectionLost("the connection is closed")

    # -- closing ---------------------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> None:
        """Close the connection and wait (up to ``timeout``) for the peer's close."""
        with self._lock:
            self._closing = True
            if not self.closed.is_set():
                self.protocol.close()
        self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self.closed.wait(timeout)
            if not self.closed.is_set():
                self._shutdown(None)
            self._thread.join(timeout)

    def _wake(self) -> None:
        # One byte in the pipe is enough.  The I/O thread drains the pipe, then clears the
        # flag, then reads the protocol state: a change made before a check that found the
        # flag set is seen, and the flag is never left set over an empty pipe.
        # (A write per send cost a system call per message on a busy sender.)
        if self._woken:
            return
        self._woken = True
        try:
            os.write(self._wake_w, b"\0")
        except (OSError, ValueError):
            pass  # the pipe is full (the thread will run anyway) or closed

    # -- the I/O thread -----------------------------------------------------------------------

    def _run(self) -> None:
        sock = self._sock
        assert sock is not None
        selector = selectors.DefaultSelector()
        selector.register(self._wake_r, selectors.EVENT_READ)
        selector.register(sock, selectors.EVENT_READ)
        pending = bytearray()
        error: Optional[AmqpError] = None
        writing = False
        try:
            while not self.closed.is_set():  # set by close() when the peer never answered
                now = time.monotonic()
                with self._lock:
                    pending += self.protocol.data_to_send()
                    deadline = self.protocol.tick(now)
                    pending += self.protocol.data_to_send()
                    over = self.protocol.state is p.CLOSED
                if pending:
                    try:
                        sent = sock.send(pending)
                        del pending[:sent]
                    except self._would_block:
                        pass
                if over and not pending:
                    break
                want = selectors.EVENT_READ | (selectors.EVENT_WRITE if pending else 0)
                if bool(pending) != writing:
                    selector.modify(sock, want)
                    writing = bool(pending)
                wait = _MAX_WAIT if deadline is None else max(0.0, min(_MAX_WAIT, deadline - now))
                for key, _ in selector.select(wait):
                    if key.fileobj == self._wake_r:
                        os.read(self._wake_r, 4096)
                        self._woken = False   # after the read: a byte written since stays
                        continue
                    self._read(sock)
                self._dispatch()
        except OSError as exc:
            if not self.closed.is_set():
                error = AmqpConnectionLost(f"connection to {self.endpoint!r} failed: {exc}")
        except Exception as exc:  # a bug of ours or a callback's: end the connection, say why
            log.exception("AMQP I/O thread failed")
            error = AmqpConnectionLost(f"AMQP client failed: {exc!r}")
        finally:
            selector.close()
            self._shutdown(error)

    def _read(self, sock: socket.socket) -> None:
        taken = 0
        while True:
            try:
                data = sock.recv(_RECV_SIZE)
            except self._would_block:
                return
            with self._lock:
                if not data:
                    self.protocol.receive_eof()
                    return
                self.protocol.receive_data(data, time.monotonic())
            taken += len(data)
            # TLS bytes already decrypted would not wake the selector: those are always taken.
            if not (self._tls is not None and self._tls.pending()) and (
                    len(data) < _RECV_SIZE or taken >= _READ_ROUND):
                return

    def _dispatch(self) -> None:
        """Handle the protocol's events: bookkeeping under the lock, callbacks outside it."""
        calls: List[Tuple[Callable[..., None], Tuple[Any, ...]]] = []
        batches: Dict[int, List[p.Delivery]] = {}   # by handle: one on_messages call each
        with self._changed:
            while True:
                event = self.protocol.next_event()
                if event is None:
                    break
                if isinstance(event, p.ConnectionOpened):
                    self._opened = True
                elif isinstance(event, p.LinkAttached):
                    link = event.link
                    terminus = link.remote_target if link.is_sender else link.remote_source
                    if terminus is not None:
                        self._attached[link.handle] = None
                elif isinstance(event, p.LinkDetached):
                    link = event.link
                    self._attached.setdefault(link.handle, event.error or AmqpRemoteError(
                        "amqp:not-found", f"the peer refused a link to {link.address!r}", "link"))
                    self._receivers.pop(link.handle, None)
                    if event.error is not None:
                        log.warning("AMQP link %r detached: %s", link.address, event.error)
                elif isinstance(event, p.MessageReceived):
                    receiver = self._receivers.get(event.delivery.link.handle)
                    if receiver is not None and receiver.on_messages is not None:
                        batch = batches.get(receiver.link.handle)
                        if batch is None:   # called where its first delivery came
                            batch = batches[receiver.link.handle] = []
                            calls.append((receiver.on_messages, (receiver, batch)))
                        batch.append(event.delivery)
                    elif receiver is not None and receiver.on_message is not None:
                        calls.append((receiver.on_message, (receiver, event.delivery)))
                elif isinstance(event, p.DeliveryUpdated):
                    d = event.delivery
                    if d.remote_settled or d.settled:
                        callback = self._outcomes.pop(id(d), None)
                        if callback is not None:
                            calls.append((callback, (d,)))
                elif isinstance(event, p.SessionEnded):
                    # Our one session is gone (RabbitMQ ends it to refuse an address): the
                    # connection is of no more use; close it with the peer's reason.
                    if self.error is None:
                        self.error = event.error or AmqpConnectionLost("the peer ended the session")
                    self.protocol.close()
                elif isinstance(event, p.ConnectionClosed):
                    if event.error is not None:
                        self.error = event.error
                self._changed.notify_all()
        for func, args in calls:
            func(*args)

    def _shutdown(self, error: Optional[AmqpError]) -> None:
        with self._changed:
            if self.closed.is_set():
                return
            if error is not None and self.error is None:
                self.error = error
            if self.error is None and not self._closing:
                self.error = self.protocol.failure or AmqpConnectionLost("the connection ended")
            self.closed.set()
            self._changed.notify_all()
            sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        self._release_pipe()
        if self.on_closed is not None:
            try:
                self.on_closed(self.error)
            except Exception:
                log.exception("AMQP on_closed callback failed")
