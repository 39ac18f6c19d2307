"""The Local API's request handler: parse, bound, dispatch, map errors to JSON.

One wrapper (:meth:`LocalApiHandler._dispatch`) turns every error into the one
error shape ``{"status":"failed","error":...}`` with the right status code;
an unexpected exception is a logged 500 whose details never reach the client.
"""
from __future__ import annotations

import io
import logging
import socket
import time
import traceback
from email.utils import formatdate

from iofogd.errors import (
    BadRequest,
    ConfigError,
    ConfigValueError,
    ControllerError,
    DockerError,
    HandshakeError,
    HeaderTooLarge,
    IofogdError,
    LengthRequired,
    MethodNotAllowed,
    PayloadTooLarge,
    RequestError,
    RequestTimeout,
    Unauthorized,
    UriTooLong,
)
from iofogd.http.peerlog import printable
from iofogd.http.request import (
    MAX_HEADERS,
    Headers,
    Request,
    Response,
    error_response,
    parse_header_block,
    parse_header_lines,
    parse_request_line,
)
from iofogd.http.routes import CONTROL_SOCKET_PREFIX, MESSAGE_SOCKET_PREFIX, ROUTES, resolve
from iofogd.http.server import LocalApiServer
from iofogd.http.stdlib import BaseHTTPRequestHandler   # without OpenSSL: see there
from iofogd.sockettimeouts import set_timeout

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Any, Optional

log = logging.getLogger(__name__)


class _DeadlineSocketIO(socket.SocketIO):
    """The raw reader under ``rfile``, with an idle timeout and an optional deadline.

    The socket stays blocking (no Python timeout): CPython polls before every
    recv and send on a socket with a timeout, two more syscalls per request,
    each dropping and retaking the GIL, and with 32 busy connections those
    hand-offs were most of a request's cost (strace -c -f under wrk: 35
    futex calls a request, 14 in a bare server). The kernel keeps the time
    instead (SO_RCVTIMEO, SO_SNDTIMEO): a read or write that waits longer fails
    with EAGAIN, raised here as TimeoutError as a socket timeout was.

    A timeout bounds one read only, so a client that trickles its request a
    byte at a time (slowloris) would restart the idle timeout with every byte
    and hold its connection slot for ever. While ``deadline`` is set, each read
    waits only until then; reaching it raises TimeoutError.
    """

    def __init__(self, sock: socket.socket, idle_timeout: float) -> None:
        super().__init__(sock, "rb")
        self._conn = sock
        self._recv_into = sock.recv_into
        self._idle_timeout = idle_timeout
        self.deadline: Optional[float] = None
        self.head_limit: Optional[float] = None   # arm the deadline at the head's first byte
        self.received = False   # a byte came since the last arm(): the connection is not idle
        self._shortened = False
        sock.settimeout(None)
        set_kernel_timeouts(sock, idle_timeout)

    def readinto(self, b: Any) -> Optional[int]:
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("request not received in time")
            set_timeout(self._conn, socket.SO_RCVTIMEO, min(left, self._idle_timeout))
            self._shortened = True
        try:
            n = self._recv_into(b)
        except BlockingIOError:
            # SO_RCVTIMEO ran out (or read_buffered made the socket non-blocking).
            raise TimeoutError("timed out") from None
        if n:
            self.received = True
            if self.head_limit is not None and self.deadline is None:
                self.deadline = time.monotonic() + self.head_limit
        return n

    def arm(self, *, head: Optional[float] = None, now: Optional[float] = None) -> None:
        """``head=limit``: the request that starts with the next byte has ``limit``
        seconds; ``now=limit``: what is read from now on has ``limit`` seconds."""
        self.head_limit = head
        self.received = False
        self.deadline = None if now is None else time.monotonic() + now

    def disarm(self) -> None:
        self.head_limit = self.deadline = None
        if self._shortened:
            self._shortened = False
            set_timeout(self._conn, socket.SO_RCVTIMEO, self._idle_timeout)


def set_kernel_timeouts(sock: socket.socket, seconds: Optional[float]) -> None:
    """Bound each read and each write on the blocking ``sock`` by ``seconds``
    (None: no bound, for a connection that leaves HTTP)."""
    set_timeout(sock, socket.SO_RCVTIMEO, seconds)
    set_timeout(sock, socket.SO_SNDTIMEO, seconds)


# socket.timeout is TimeoutError from Python 3.10 on; on 3.9 it is its own class.
_TIMEOUTS = (TimeoutError, socket.timeout)
# What a refused body may still send us after the answer (see _linger_close).
_LINGER_SECONDS = 2.0
_LINGER_BYTES = 8 << 20


def _status_of(exc: IofogdError) -> int:
    if isinstance(exc, RequestError):
        return exc.status
    if isinstance(exc, ConfigValueError):
        return 400
    if isinstance(exc, (DockerError, ControllerError)):
        return 503
    return 500


class LocalApiHandler(BaseHTTPRequestHandler):
    """One connection: requests in turn until it closes.

    The request line and headers are read and parsed here (see
    :mod:`iofogd.http.request`), not by http.server's ``parse_request``:
    http.client's header parser (the email package) was most of the cost of a
    request, and it read HTTP/0.9 and ``HTTP/1.1000`` as requests. Every
    response, error or not, leaves in one write.
    """

    protocol_version = "HTTP/1.1"   # keep-alive; every response carries Content-Length
    server_version = "iofogd"
    sys_version = ""
    server: LocalApiServer
    headers: Headers   # type: ignore[assignment]

    _waiting = True   # between requests, until the next request line is read
    _linger = False   # a refused body may still be arriving: see _linger_close

    @property
    def idle(self) -> bool:
        """No byte of a next request has arrived: the connection may be closed
        to free its slot (RFC 9112 section 9.5)."""
        return self._waiting and not self._clock.received

    def version_string(self) -> str:
        return self.server_version

    def setup(self) -> None:
        super().setup()
        # Bounds a silent client (a read or write that waits longer ends the
        # connection) and a slow one: see _DeadlineSocketIO.
        idle = self.server.limits.idle_timeout
        self.rfile.close()
        self._clock = _DeadlineSocketIO(self.connection, idle)
        self._reader = io.BufferedReader(self._clock)
        self.rfile = self._reader
        self.request_version = "HTTP/1.1"
        self.command = ""
        self.path = ""
        self.requestline = ""
        self.server.track(self)

    def finish(self) -> None:
        self.server.untrack(self)
        try:
            super().finish()
        except OSError:
            pass  # the peer is gone; nothing left to flush
        if self._linger:
            self._linger_close()

    def _linger_close(self) -> None:
        """After an answer that refused a body we did not read (413, 411).

        The client may still be sending that body; closing at once would make
        our kernel answer its data with a reset, which can discard the answer
        before the client reads it (RFC 9112 section 9.6): an SDK posting an
        oversized message would see a broken pipe instead of the 413. So stop
        sending, then read and drop what still arrives, bounded in bytes and
        time so that a client cannot hold the slot with it.
        """
        sock = self.connection
        deadline = time.monotonic() + _LINGER_SECONDS
        left = _LINGER_BYTES
        try:
            sock.shutdown(socket.SHUT_WR)
            while left > 0:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    break
                sock.settimeout(wait)
                chunk = sock.recv(min(left, 65536))
                if not chunk:
                    break
                left -= len(chunk)
        except (OSError,) + _TIMEOUTS:
            pass

    def handle_one_request(self) -> None:
        self._waiting = True
        self.close_connection = True
        if self.server.stopping:
            return
        # The request line and headers must arrive within the idle timeout of
        # their first byte.
        self._clock.arm(head=self.server.limits.idle_timeout)
        try:
            try:
                if not self._read_head():
                    return
            except RequestError as exc:
                self.close_connection = True
                self._write(error_response(exc.status, exc.message))
                return
            finally:
                self._clock.disarm()
            self._dispatch()
        except _TIMEOUTS + (ConnectionError,) as exc:
            log.debug("connection from %s ended: %s", self.client_address, exc)
            self.close_connection = True

    def _read_head(self) -> bool:
        """Read and parse the next request head into command, path,
        request_version and headers; False when the connection ended cleanly
        before one began. RequestError for what is malformed or too large."""
        readline = self.rfile.readline
        budget = self.server.limits.max_header_bytes
        line = readline(_MAX_REQUEST_LINE + 1)
        empty = 0
        while line in (b"\r\n", b"\n"):
            # RFC 9112 section 2.2: ignore empty lines before a request line
            # (a client's stray CRLF after a body), within the header budget.
            empty += 1
            if empty * 2 > budget:
                raise HeaderTooLarge("Too many empty lines before the request line")
            line = readline(_MAX_REQUEST_LINE + 1)
        self._waiting = False
        if not line:
            return False
        if len(line) > _MAX_REQUEST_LINE:
            raise UriTooLong("Request line too long")
        if not line.endswith(b"\n"):
            raise BadRequest("Request line not terminated")   # the peer half-closed mid-line
        request_line = line.rstrip(b"\r\n")
        self.requestline = request_line.decode("latin-1")   # escaped when logged
        self.request_version = "HTTP/1.1"   # errors before the version is known are answered so
        method, target, version = parse_request_line(request_line)
        self.command, self.path, self.request_version = method, target, version
        # Fast path: the whole head is in the read buffer already (one recv
        # brought it, as it does for almost every request): take it in one read.
        buffered = self._reader.peek()
        if buffered[:2] == b"\r\n":
            self.rfile.read(2)
            self.headers = parse_header_block(b"")
        else:
            end = buffered.find(b"\r\n\r\n", 0, budget)
            if end >= 0 and buffered.count(b"\n", 0, end) == buffered.count(b"\r\n", 0, end):
                self.headers = parse_header_block(self.rfile.read(end + 4)[:end])
            else:
                self.headers = self._read_header_lines(budget)
        connection = (self.headers.get("Connection") or "").lower()
        if version == "HTTP/1.1":
            self.close_connection = "close" in connection
        else:   # HTTP/1.0: only when asked (RFC 9112 section 9.3)
            self.close_connection = "keep-alive" not in connection
        if self.server.stopping:
            self.close_connection = True
        return True

    def _read_header_lines(self, budget: int) -> Headers:
        """The header lines one at a time, for a head that came in pieces."""
        readline = self.rfile.readline
        lines: list[bytes] = []
        while True:
            line = readline(budget + 1)
            budget -= len(line)
            if budget < 0:
                raise HeaderTooLarge("Request header fields too large")
            if line in (b"\r\n", b"\n"):
                return parse_header_lines(lines)
            if not line.endswith(b"\n"):
                raise BadRequest("Request head ended before an empty line")
            lines.append(line.rstrip(b"\r\n"))
            if len(lines) > _MAX_HEADERS:
                raise HeaderTooLarge(f"More than {_MAX_HEADERS} header fields")

    # http.server calls send_error from its own helpers; answer in our JSON shape.
    def send_error(self, code: int, message: Optional[str] = None, explain: Optional[str] = None) -> None:
        self.close_connection = True
        self._write(error_response(code, message or self.responses.get(code, ("Error",))[0]))

    # -- the one dispatch path -------------------------------------------------------

    def _dispatch(self) -> None:
        path, _, query = self.path.partition("?")
        if self.server.on_probation(self) and not self._is_admin(path):
            # An admin-reserve slot: only a request with the token may use it.
            peer = self.client_address[0]
            self.server.peer_log.warning(peer, "busy", "refusing a request from %s: every general slot is "
                                         "busy and the admin reserve needs the token", peer)
            self.close_connection = True
            self._write(error_response(503, "Too many connections, try again"))
            return
        if path.startswith((CONTROL_SOCKET_PREFIX, MESSAGE_SOCKET_PREFIX)) and self.command == "GET":
            self._upgrade(path)
            return
        if self.command not in _METHODS:
            # A method no route has (RFC 9110 section 9.1: 501); the body, if
            # any, is left unread.
            self.close_connection = True
            self._write(error_response(501, f"Unsupported method ({printable(self.command)!r})"))
            return
        try:
            response = self._handle(path, query)
        except IofogdError as exc:
            status = _status_of(exc)
            if status >= 500 and not isinstance(exc, RequestError):
                self.server.peer_log.log(logging.ERROR, self.client_address[0], "failed",
                                         "%s %s failed: %s", self.command, path, str(exc))
            headers: tuple[tuple[str, str], ...] = ()
            if isinstance(exc, MethodNotAllowed):
                headers = (("Allow", ", ".join(exc.allowed)),)
            message = exc.message if isinstance(exc, (RequestError, ConfigValueError)) else str(exc)
            response = error_response(status, message, headers)
        except Exception as exc:
            # One line, never a traceback: a request must not be able to fill the disk.
            frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
            where = f" at {frame.filename}:{frame.lineno}" if frame else ""
            self.server.peer_log.log(logging.ERROR, self.client_address[0], "unexpected",
                                     "%s %s: unexpected error %s%s", self.command, path, repr(exc), where)
            response = error_response(500, "Internal server error")
        self._write(response)

    def _is_admin(self, path: str) -> bool:
        route = ROUTES.get(path)
        return route is not None and route.auth and self._authorized()

    def _authorized(self) -> bool:
        """The admin token, presented once (RFC 9110 section 11.6.2: one
        Authorization field; two are refused, not guessed between)."""
        values = self.headers.get_all("Authorization")
        if values is not None and len(values) > 1:
            self.close_connection = True
            raise BadRequest("More than one Authorization header")
        ok = self.server.app.token.matches(values[0] if values else "")
        if ok:
            self.server.admin_served(self)
        return ok

    def _handle(self, path: str, query: str) -> Response:
        if path.startswith(MESSAGE_SOCKET_PREFIX):
            self._discard_body()
            raise MethodNotAllowed(self.command, ("GET",))   # a WebSocket upgrade is a GET
        try:
            route, handler = resolve(self.command, path)
        except RequestError:
            self._discard_body()
            raise
        app = self.server.app
        length = self._content_length()   # the framing first: 411, 400, 413
        if route.auth and not self._authorized():
            # The token before the body: a refused client is not told to go on
            # (100 Continue) nor has its body parsed.
            self._discard_body(length)
            raise Unauthorized("Incorrect access token")
        body = self._read_body(length)
        return handler(Request(self.command, path, query, self.headers, body, peer=self.client_address[0]), app)

    def _expects_continue(self) -> bool:
        expect = self.headers.get("Expect")
        return expect is not None and expect.lower() == "100-continue" and self.request_version == "HTTP/1.1"

    def _content_length(self) -> int:
        if self.headers.get("Transfer-Encoding"):
            # Chunked bodies are refused outright: they would need their own
            # bound, and no client of this API sends them.
            self.close_connection = True
            self._linger = True
            raise LengthRequired("Chunked request bodies are not accepted; send Content-Length")
        values = self.headers.get_all("Content-Length") or []
        if not values:
            return 0
        value = values[0]
        if any(v != value for v in values[1:]):
            # RFC 9112 section 6.3 (5): differing lengths are an unrecoverable error.
            self.close_connection = True
            raise BadRequest("Conflicting Content-Length headers")
        value = value.strip()
        if not (value.isdigit() and value.isascii()):
            # RFC 9110 section 8.6: 1*DIGIT. int() would also take "+5", "1_0"
            # and "-1", which another parser on the path may read differently.
            self.close_connection = True
            raise BadRequest(f"Invalid Content-Length: {printable(value)}")
        length = int(value)
        limit = self.server.limits.max_body_bytes
        if length > limit:
            self.close_connection = True  # the body stays unread
            self._linger = not self._expects_continue()   # no body comes before a 100
            raise PayloadTooLarge(length, limit)
        return length

    def _read_body(self, length: int) -> bytes:
        if self._expects_continue():
            # Only now, with the route, the token and the length accepted
            # (RFC 9110 section 10.1.1). An interim response: its own write.
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if not length:
            return b""
        # The whole body within the idle timeout, however it is trickled.
        self._clock.arm(now=self.server.limits.idle_timeout)
        try:
            body = self.rfile.read(length)
        except _TIMEOUTS as exc:
            self.close_connection = True
            raise RequestTimeout("Request body not received in time") from exc
        except OSError as exc:
            self.close_connection = True
            raise BadRequest("Connection failed during the request body") from exc
        finally:
            self._clock.disarm()
        if len(body) != length:
            self.close_connection = True
            raise BadRequest("Request body ended before Content-Length bytes")
        return body

    def _discard_body(self, length: Optional[int] = None) -> None:
        """Read and drop the body of a refused request, so that the connection
        can go on (and no unread body turns our close into a reset)."""
        if self._expects_continue():
            self.close_connection = True   # refused before the body was asked for
            return
        try:
            length = self._content_length() if length is None else length
            if length:
                self._clock.arm(now=self.server.limits.idle_timeout)
                try:
                    if len(self.rfile.read(length)) != length:
                        self.close_connection = True
                finally:
                    self._clock.disarm()
        except RequestError:
            self.close_connection = True
        except (OSError,) + _TIMEOUTS:
            self.close_connection = True

    def _upgrade(self, path: str) -> None:
        """A WebSocket upgrade: validated and admitted here, then handed to the WebSocket layer.

        Every refusal is plain HTTP before any 101: 400 or 426 for the handshake
        (RFC 6455 section 4.4), 404 for a path without a session, 503 over the
        session bounds or while start-up phase 2 is still building the layer.
        The 101 leaves in one write; the session then holds no HTTP slot.
        """
        # Imported here, not at the top: start-up phase 1 does not load the WebSocket layer.
        from iofogd.ws.handshake import response as handshake_response
        from iofogd.ws.handshake import validate_request
        from iofogd.ws.session import read_buffered

        self.close_connection = True   # after a session, or a refusal, the socket is done with HTTP
        peer = f"{self.client_address[0]}:{self.client_address[1]}"
        app = self.server.app
        try:
            headers = validate_request(self.command, self.headers, self.request_version)
            # During start-up phase 2 this waits for the layer (503 if it failed).
            endpoints = app.phase2("the WebSocket layer").sockets
            seat = endpoints.admit(path, peer)
        except (HandshakeError, RequestError) as exc:
            extra = exc.headers if isinstance(exc, HandshakeError) else ()
            self._write(error_response(exc.status, exc.message, extra))
            return
        # The seat is a place under the session bounds: serve() gives it back at
        # the session's end, the finally here if the upgrade fails before that.
        try:
            # A container of ours may open sockets only for its own id (403).
            try:
                app.identity.check(self.client_address[0], seat.microservice_id, admin=self._authorized())
            except RequestError as exc:
                self._write(error_response(exc.status, exc.message))
                return
            sock = self.connection
            try:
                sock.sendall(handshake_response(headers))
            except OSError as exc:
                log.debug("upgrade for %s failed: %s", peer, exc)
                return
            log.debug("%s upgraded %r to WebSocket", peer, path)
            buffered = read_buffered(self.rfile, sock)
            self.server.release_slot(self)
            endpoints.serve(sock, buffered, seat, peer)
        finally:
            seat.release()

    # -- output --------------------------------------------------------------------

    def _write(self, response: Response) -> None:
        """The whole response in one write: status line, headers and body."""
        body = response.body
        if self.close_connection or self.server.stopping:
            self.close_connection = True
        head = [
            _STATUS_LINES.get(response.status) or _status_line(response.status),
            _date_header(),
        ]
        if response.content_type:
            head.append(f"Content-Type: {response.content_type}\r\n")
        head.append(f"Content-Length: {len(body)}\r\n")
        for name, value in response.headers:
            head.append(f"{name}: {value}\r\n")
        if self.close_connection:
            head.append("Connection: close\r\n")
        head.append("\r\n")
        data = "".join(head).encode("latin-1")
        if self.command != "HEAD":
            data += body
        try:
            self.wfile.write(data)
        except OSError as exc:
            self.close_connection = True
            log.debug("could not answer %s: %s", self.client_address, exc)
        if _debug_enabled():
            self.log_request(response.status, len(body))

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), printable(format % args))

    def log_error(self, format: str, *args: Any) -> None:
        log.info("%s - %s", self.address_string(), printable(format % args))


_METHODS = frozenset(("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"))
_MAX_REQUEST_LINE = 65536   # http.server's bound, answered 414
_MAX_HEADERS = MAX_HEADERS


def _status_line(status: int) -> str:
    phrase = BaseHTTPRequestHandler.responses.get(status, ("",))[0]
    return f"HTTP/1.1 {status} {phrase}\r\nServer: {LocalApiHandler.server_version}\r\n"


_STATUS_LINES = {status: _status_line(status) for status in (200, 400, 401, 404, 405, 503)}

_date_cache: list[Any] = [0, ""]


def _date_header() -> str:
    """The Date header (RFC 9110 section 6.6.1), formatted once a second."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[1] = f"Date: {formatdate(now, usegmt=True)}\r\n"
        _date_cache[0] = now
    return str(_date_cache[1])


def _debug_enabled() -> bool:
    return log.isEnabledFor(logging.DEBUG)
