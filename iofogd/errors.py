"""The exception tree of iofogd.

Every error the daemon raises on purpose derives from :class:`IofogdError` and
carries data, not just a string, so that each boundary (the HTTP handler, the
WebSocket session, the CLI) can decide how to present it::

    IofogdError
    ├── ConfigError                     config.xml, the token file, a bad option value
    │   ├── ConfigFileError(path, reason)
    │   └── ConfigValueError(flag, message)
    ├── RequestError(status, message)   answered as {"status":"failed","error":...}
    │   ├── BadRequest                  400
    │   ├── Unauthorized                401
    │   ├── Forbidden                   403 (a caller acting as another microservice)
    │   ├── NotFound                    404
    │   ├── MethodNotAllowed            405
    │   ├── RequestTimeout              408 (a request not received in time)
    │   ├── PayloadTooLarge(size, limit) 413
    │   ├── LengthRequired              411 (chunked bodies are refused)
    │   ├── UriTooLong                  414
    │   ├── HeaderTooLarge              431
    │   ├── ServiceUnavailable          503
    │   └── VersionNotSupported         505
    ├── WebSocketError
    │   ├── HandshakeError(status, message)
    │   ├── ProtocolError(code, reason) a frame or message broke RFC 6455;
    │   │   └── MessageTooBig(size, limit)  the code says which close code
    │   ├── ConnectionClosed(code, reason)  sending on a closing/closed session
    │   └── EnvelopeError(message)      a malformed ioFog 0x0D/0x0E payload
    ├── MessageError(message)           a malformed ioMessage (JSON or binary form)
    ├── ArchiveError(message)           the message archive cannot take a message
    │   └── ArchiveFull                 no space left (disk full or storage limit)
    ├── ControllerError(message, status)
    │   ├── ControllerUnreachable
    │   └── CertificateError
    ├── ProvisionError(message)
    ├── AmqpError                       the AMQP 1.0 client (iofogd/bus/amqp)
    │   ├── AmqpDecodeError(message)    a malformed encoding or frame from the peer
    │   ├── AmqpEncodeError(message)    a value no AMQP type carries (our bug)
    │   ├── AmqpProtocolError(condition, description)  the peer broke the protocol;
    │   │                                  we close the connection with ``condition``
    │   ├── AmqpAuthError(code)         SASL refused us (or offered no mechanism we speak)
    │   ├── AmqpRemoteError(condition, description, scope)  the peer closed a
    │   │                                  connection/session/link with an error
    │   └── AmqpConnectionLost(message) the TCP connection dropped or went silent
    └── DockerError(status, message)
        ├── EngineUnavailable
        └── EngineUnsupported           the engine's API version is outside ours

Pure layers raise; adapters decide. Translate foreign exceptions at each
boundary with ``raise X(...) from exc``.
"""
from __future__ import annotations


class IofogdError(Exception):
    """Root of every error iofogd raises on purpose."""


# -- configuration -----------------------------------------------------------


class ConfigError(IofogdError):
    """The configuration could not be read, written or changed."""


class ConfigFileError(ConfigError):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class ConfigValueError(ConfigError):
    """An option value failed validation; ``message`` is upstream's exact text."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(message)
        self.flag = flag
        self.message = message


# -- Local API requests --------------------------------------------------------


class RequestError(IofogdError):
    """A request the Local API refuses; ``status`` is the HTTP status code."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(RequestError):
    status = 400


class Unauthorized(RequestError):
    status = 401


class Forbidden(RequestError):
    status = 403


class NotFound(RequestError):
    status = 404


class MethodNotAllowed(RequestError):
    status = 405

    def __init__(self, method: str, allowed: tuple[str, ...] = ()) -> None:
        super().__init__(f"Method {method} is not allowed here")
        self.method = method
        self.allowed = allowed


class RequestTimeout(RequestError):
    status = 408


class PayloadTooLarge(RequestError):
    status = 413

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"Request body of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class LengthRequired(RequestError):
    status = 411


class UriTooLong(RequestError):
    status = 414


class HeaderTooLarge(RequestError):
    status = 431


class ServiceUnavailable(RequestError):
    status = 503


class VersionNotSupported(RequestError):
    status = 505


# -- WebSockets ------------------------------------------------------------------


class WebSocketError(IofogdError):
    """Base of the WebSocket layer's errors."""


class HandshakeError(WebSocketError):
    """The upgrade request was refused; answer it with ``status``."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


class ProtocolError(WebSocketError):
    """The peer broke RFC 6455; fail the connection with close ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{reason} (close code {code})")
        self.code = code
        self.reason = reason


class MessageTooBig(ProtocolError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(1009, f"message of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class ConnectionClosed(WebSocketError):
    """The session is closing or closed; nothing more can be sent on it."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection closed (close code {code}) {reason}".rstrip())
        self.code = code
        self.reason = reason


class EnvelopeError(WebSocketError):
    """A binary frame's ioFog envelope (0x0D message, 0x0E receipt) is malformed."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# -- the message bus --------------------------------------------------------------


class MessageError(IofogdError):
    """An ioMessage that cannot be decoded or encoded; ``message`` says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ArchiveError(IofogdError):
    """The message archive could not store a message (nothing half-written stays)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ArchiveFull(ArchiveError):
    """The disk is full: the publisher is told so (503), the archive stays whole."""


# -- Controller ----------------------------------------------------------------


class ControllerError(IofogdError):
    """The Controller refused a call or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class ControllerUnreachable(ControllerError):
    pass


class CertificateError(ControllerError):
    pass


class ProvisionError(IofogdError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# -- Docker ----------------------------------------------------------------------


class DockerError(IofogdError):
    """The Docker engine answered with an error; ``status`` is its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Docker engine error {status}: {message}")
        self.status = status
        self.message = message


class EngineUnavailable(DockerError):
    """No engine answers on ``docker_url``."""

    def __init__(self, message: str) -> None:
        super().__init__(0, message)


class EngineUnsupported(DockerError):
    """The engine answers, but its API version range does not meet ours."""

    def __init__(self, message: str) -> None:
        super().__init__(0, message)


# -- AMQP 1.0 ---------------------------------------------------------------------


class AmqpError(IofogdError):
    """Base of the AMQP 1.0 client's errors."""


class AmqpDecodeError(AmqpError):
    """Bytes from the peer are not a valid AMQP encoding or frame."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        # The condition a connection closes with when this reaches it.
        self.condition = "amqp:decode-error"


class AmqpEncodeError(AmqpError, ValueError):
    """A Python value that no AMQP type can carry (a programming error on our side)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AmqpProtocolError(AmqpError):
    """The peer broke the protocol; ``condition`` is the AMQP error we close with."""

    def __init__(self, condition: str, description: str) -> None:
        super().__init__(f"{description} ({condition})")
        self.condition = condition
        self.description = description


class AmqpAuthError(AmqpError):
    """SASL failed: ``code`` is the sasl-outcome code (1 auth, 2 sys, ...), 0 when we gave up."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class AmqpRemoteError(AmqpError):
    """The peer ended a ``scope`` ("connection", "session", "link") with an error."""

    def __init__(self, condition: str, description: str, scope: str) -> None:
        super().__init__(f"{scope} closed by the peer: {condition} {description}".rstrip())
        self.condition = condition
        self.description = description
        self.scope = scope


class AmqpConnectionLost(AmqpError):
    """The transport ended (EOF, reset, refused, or the peer went silent)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
