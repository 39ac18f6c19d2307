"""The opening handshake, server side (RFC 6455 section 4.2), sans I/O.

:func:`validate_request` checks an upgrade request and returns the headers of
the ``101 Switching Protocols`` response, or raises
:class:`iofogd.errors.HandshakeError` carrying the status to answer with: 400
for a malformed request, 426 with ``Sec-WebSocket-Version: 13`` for a version
we do not speak (section 4.4).  No sub-protocol and no extension is ever
negotiated: ioFog's Agent offers none (docs/websocket.md#handshake), so ``permessage-deflate``
offered by Node's ``ws`` is declined by leaving it out of the response.
"""
from __future__ import annotations

import base64
import binascii

try:
    # CPython's own SHA-1, what hashlib falls back to: hashlib would load
    # OpenSSL's _hashlib (~0.7 MiB of RSS) at the first WebSocket for one digest.
    from _sha1 import sha1  # type: ignore[import-not-found]
except ImportError:   # an interpreter built without it
    from hashlib import sha1

from iofogd.errors import HandshakeError

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import List, Optional, Protocol, Tuple

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # section 1.3
VERSION = "13"

if TYPE_CHECKING:
    HeaderList = Tuple[Tuple[str, str], ...]

    class Headers(Protocol):
        """What we need of ``http.server``'s ``self.headers`` (or a plain dict)."""

        def get(self, __name: str) -> Optional[str]: ...


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key`` (section 4.2.2 step 5)."""
    digest = sha1((key + GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def _values(headers: Headers, name: str) -> List[str]:
    """Every occurrence of a header, since e.g. ``Connection`` may be repeated."""
    get_all = getattr(headers, "get_all", None)
    if get_all is not None:
        found = get_all(name)
        return [str(v) for v in found] if found else []
    value = headers.get(name)
    return [] if value is None else [value]


def _tokens(headers: Headers, name: str) -> List[str]:
    return [t.strip().lower() for v in _values(headers, name) for t in v.split(",")]


def _single(headers: Headers, name: str) -> str:
    values = _values(headers, name)
    if len(values) != 1:
        raise HandshakeError(400, f"expected exactly one {name} header")
    return values[0].strip()


def validate_request(method: str, headers: Headers, version: str = "HTTP/1.1") -> HeaderList:
    """Check an upgrade request (section 4.2.1); return the 101 response headers.

    ``version`` is the request line's HTTP version.
    """
    if version != "HTTP/1.1":
        # Section 4.2.1: "An HTTP/1.1 or higher GET request".
        raise HandshakeError(400, "a WebSocket handshake needs HTTP/1.1")
    if method != "GET":
        raise HandshakeError(400, "a WebSocket handshake must be a GET request")
    if not _values(headers, "Host"):
        raise HandshakeError(400, "missing Host header")
    if "websocket" not in _tokens(headers, "Upgrade"):
        raise HandshakeError(400, "missing or invalid Upgrade header (expected websocket)")
    if "upgrade" not in _tokens(headers, "Connection"):
        raise HandshakeError(400, "missing or invalid Connection header (expected Upgrade)")
    key = _single(headers, "Sec-WebSocket-Key")
    try:
        raw = base64.b64decode(key.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raw = b""
    if len(raw) != 16:
        raise HandshakeError(400, "Sec-WebSocket-Key must be 16 bytes in base64")
    version = _single(headers, "Sec-WebSocket-Version")
    if version != VERSION:
        # Section 4.4: tell the client which version we speak.
        raise HandshakeError(
            426,
            f"unsupported WebSocket version {version!r}; this server speaks 13",
            headers=(("Sec-WebSocket-Version", VERSION),),
        )
    return (
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key(key)),
    )


def response(headers: HeaderList) -> bytes:
    """The whole ``101 Switching Protocols`` response, to be sent in one write.

    The status line says HTTP/1.1 whatever the server's default, and there is
    no Content-Length: the connection now speaks WebSocket.
    """
    lines = ["HTTP/1.1 101 Switching Protocols"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
