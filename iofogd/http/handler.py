"""The Local API's request handler: parse, bound, dispatch, map errors to JSON.

One wrapper (:meth:`LocalApiHandler._dispatch`) turns every error into the one
error shape ``{"status":"failed","error":...}`` with the right status code;
an unexpected exception is a logged 500 whose details never reach the client.
"""
from __future__ import annotations

import http.client
import io
import logging
import socket
import time
from http.server import BaseHTTPRequestHandler
from io import BufferedIOBase

from iofogd.errors import (
    BadRequest,
    ConfigError,
    ConfigValueError,
    ControllerError,
    DockerError,
    HandshakeError,
    IofogdError,
    LengthRequired,
    MethodNotAllowed,
    NotImplementedYet,
    PayloadTooLarge,
    RequestError,
    RequestTimeout,
    Unauthorized,
)
from iofogd.http.request import Request, Response, error_response
from iofogd.http.routes import CONTROL_SOCKET_PREFIX, MESSAGE_SOCKET_PREFIX, resolve
from iofogd.http.server import LocalApiServer

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Any, Optional

log = logging.getLogger(__name__)


class _HeaderBudget:
    """Wraps rfile while headers are parsed: more than ``limit`` bytes of header
    lines make http.client raise, which http.server answers with 431."""

    def __init__(self, raw: BufferedIOBase, limit: int) -> None:
        self._raw = raw
        self._left = limit

    def readline(self, size: int = -1) -> bytes:
        line = self._raw.readline(size)
        self._left -= len(line)
        if self._left < 0:
            raise http.client.LineTooLong("header block")
        return line


class _DeadlineSocketIO(socket.SocketIO):
    """The raw reader under ``rfile``, with an optional deadline.

    A socket timeout bounds one read only, so a client that trickles its
    request a byte at a time (slowloris) would restart the idle timeout with
    every byte and hold its connection slot for ever. While ``deadline`` is
    set, each read waits only until then; reaching it raises TimeoutError.
    """

    def __init__(self, sock: socket.socket, idle_timeout: float) -> None:
        super().__init__(sock, "rb")
        self._conn = sock
        self._idle_timeout = idle_timeout
        self.deadline: Optional[float] = None
        self.head_limit: Optional[float] = None   # arm the deadline at the head's first byte
        self._shortened = False

    def readinto(self, b: Any) -> Optional[int]:
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("request not received in time")
            self._conn.settimeout(min(left, self._idle_timeout))
            self._shortened = True
        n = super().readinto(b)
        if n and self.head_limit is not None and self.deadline is None:
            self.deadline = time.monotonic() + self.head_limit
        return n

    def arm(self, *, head: Optional[float] = None, now: Optional[float] = None) -> None:
        """``head=limit``: the request that starts with the next byte has ``limit``
        seconds; ``now=limit``: what is read from now on has ``limit`` seconds."""
        self.head_limit = head
        self.deadline = None if now is None else time.monotonic() + now

    def disarm(self) -> None:
        self.head_limit = self.deadline = None
        if self._shortened:
            self._shortened = False
            self._conn.settimeout(self._idle_timeout)


# socket.timeout is TimeoutError from Python 3.10 on; on 3.9 it is its own class.
_TIMEOUTS = (TimeoutError, socket.timeout)


def _status_of(exc: IofogdError) -> int:
    if isinstance(exc, RequestError):
        return exc.status
    if isinstance(exc, ConfigValueError):
        return 400
    if isinstance(exc, (DockerError, ControllerError)):
        return 503
    return 500


class LocalApiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive; every response carries Content-Length
    server_version = "iofogd"
    sys_version = ""
    server: LocalApiServer
    # TCP_NODELAY: the headers and the body go out in two writes, and Nagle held
    # the body until the client's delayed ACK of the headers (~40 ms a request on
    # keep-alive connections); WebSocket frames are small writes too.
    disable_nagle_algorithm = True

    idle = True

    def version_string(self) -> str:
        return self.server_version

    def setup(self) -> None:
        super().setup()
        # Bounds a silent client: a read that waits longer ends the connection.
        idle = self.server.limits.idle_timeout
        self.connection.settimeout(idle)
        # ... and a slow one: see _DeadlineSocketIO.
        self.rfile.close()
        self._clock = _DeadlineSocketIO(self.connection, idle)
        self.rfile = io.BufferedReader(self._clock)
        self.server.track(self)

    def finish(self) -> None:
        self.server.untrack(self)
        try:
            super().finish()
        except OSError:
            pass  # the peer is gone; nothing left to flush

    def handle_one_request(self) -> None:
        self.idle = True
        if self.server.stopping:
            self.close_connection = True
            return
        # The request line and headers must arrive within the idle timeout of
        # their first byte.
        self._clock.arm(head=self.server.limits.idle_timeout)
        try:
            super().handle_one_request()
        except _TIMEOUTS + (ConnectionError,) as exc:
            log.debug("connection from %s ended: %s", self.client_address, exc)
            self.close_connection = True
        finally:
            self._clock.disarm()

    def parse_request(self) -> bool:
        self.idle = False
        raw = self.rfile
        self.rfile = _HeaderBudget(raw, self.server.limits.max_header_bytes)  # type: ignore[assignment]
        try:
            if not super().parse_request():
                return False
        finally:
            self.rfile = raw
            self._clock.disarm()
        if self.request_version == "HTTP/0.9":
            # http.server would answer with a bare body (no status line, no
            # headers); no client of this API speaks HTTP/0.9 (RFC 9112 section 2.3).
            self.send_error(400, "HTTP/0.9 requests are not supported; send HTTP/1.1")
            return False
        if self.headers.defects or self.headers.get_payload():
            # The email parser stops at a line that is not "name: value" and
            # silently drops every header after it (a Content-Length among
            # them: the body would then be read as the next request). RFC 9112
            # section 5: such a request is invalid.
            self.send_error(400, "Malformed header line")
            return False
        return True

    # http.server calls send_error for what it rejects itself (400, 414, 431,
    # 501, 505): answer those in our JSON shape too.
    def send_error(self, code: int, message: Optional[str] = None, explain: Optional[str] = None) -> None:
        self.close_connection = True
        if self.request_version == "HTTP/0.9":
            # A request line rejected before its version was read still has
            # http.server's default HTTP/0.9, which would drop the status line
            # and headers: answer as HTTP/1.1 like every other error.
            self.request_version = "HTTP/1.0"
        self._write(error_response(code, message or self.responses.get(code, ("Error",))[0]))

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    # -- the one dispatch path -------------------------------------------------------

    def _dispatch(self) -> None:
        path, _, query = self.path.partition("?")
        if path.startswith((CONTROL_SOCKET_PREFIX, MESSAGE_SOCKET_PREFIX)) and self.command == "GET":
            self._upgrade(path)
            return
        try:
            response = self._handle(path, query)
        except IofogdError as exc:
            status = _status_of(exc)
            if status >= 500 and not isinstance(exc, RequestError):
                log.error("%s %s failed: %s", self.command, path, exc)
            headers: tuple[tuple[str, str], ...] = ()
            if isinstance(exc, MethodNotAllowed):
                headers = (("Allow", ", ".join(exc.allowed)),)
            message = exc.message if isinstance(exc, (RequestError, ConfigValueError)) else str(exc)
            response = error_response(status, message, headers)
        except Exception:
            log.exception("%s %s: unexpected error", self.command, path)
            response = error_response(500, "Internal server error")
        self._write(response)

    def _handle(self, path: str, query: str) -> Response:
        if path.startswith(MESSAGE_SOCKET_PREFIX):
            self._discard_body()
            raise MethodNotAllowed(self.command, ("GET",))   # a WebSocket upgrade is a GET
        try:
            route, handler = resolve(self.command, path)
        except RequestError:
            self._discard_body()
            raise
        body = self._read_body()
        app = self.server.app
        if route.auth and not app.token.matches(self.headers.get("Authorization", "")):
            raise Unauthorized("Incorrect access token")
        return handler(Request(self.command, path, query, self.headers, body), app)

    def _content_length(self) -> int:
        if self.headers.get("Transfer-Encoding"):
            # Chunked bodies are refused outright: they would need their own
            # bound, and no client of this API sends them.
            self.close_connection = True
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
            raise BadRequest(f"Invalid Content-Length: {value}")
        length = int(value)
        limit = self.server.limits.max_body_bytes
        if length > limit:
            self.close_connection = True  # the body stays unread
            raise PayloadTooLarge(length, limit)
        return length

    def _read_body(self) -> bytes:
        length = self._content_length()
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

    def _discard_body(self) -> None:
        try:
            self._read_body()
        except RequestError:
            self.close_connection = True

    def _upgrade(self, path: str) -> None:
        hook = self.server.websocket
        if hook is None:
            self._write(error_response(501, "WebSockets are not available in this build of iofogd"))
            return
        try:
            hook(self, path)
        except (HandshakeError, RequestError) as exc:
            # Refused before the 101: answer as HTTP (400, or 426 with
            # Sec-WebSocket-Version: 13, RFC 6455 section 4.4).
            self.close_connection = True
            status = exc.status
            extra = exc.headers if isinstance(exc, HandshakeError) else ()
            self._write(error_response(status, exc.message, extra))
        self.close_connection = True  # after a session the socket is done with HTTP

    # -- output --------------------------------------------------------------------

    def _write(self, response: Response) -> None:
        try:
            self.send_response(response.status)
            if response.content_type:
                self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers:
                self.send_header(name, value)
            if self.close_connection or self.server.stopping:
                self.close_connection = True
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)
        except OSError as exc:
            self.close_connection = True
            log.debug("could not answer %s: %s", self.client_address, exc)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)

    def log_error(self, format: str, *args: Any) -> None:
        log.info("%s - %s", self.address_string(), format % args)
