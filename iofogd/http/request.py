"""Request and Response as plain values, and the JSON rules of the Local API.

Handlers are plain functions ``(request, app) -> Response``; they never see a
socket. The HTTP handler builds the :class:`Request` and writes the
:class:`Response`. The request head is parsed here too, by pure functions
(:func:`parse_request_line`, :func:`parse_header_lines`) that follow RFC 9112
strictly: what is malformed is a :class:`BadRequest`, never a guess.
"""
from __future__ import annotations

import json

from iofogd.errors import BadRequest, HeaderTooLarge, VersionNotSupported
from iofogd.record import Record

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Any, Final, Iterator, Mapping, Optional

JSON_TYPE = "application/json"
MAX_HEADERS = 100   # http.client's bound, answered 431

# No request body of this API nests deeper than 3; 32 leaves room and keeps
# the JSON parser (recursive in C) far from the interpreter's recursion limit.
MAX_JSON_DEPTH = 32

# RFC 9110 section 5.6.2: tchar. bytes.translate(None, _TCHAR) leaves what is not one.
_TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Bytes a field value may not hold (RFC 9110 section 5.5): NUL, CR and LF; the
# other controls are allowed by obs-text/VCHAR rules only in part, refused too.
_VALUE_CONTROLS = bytes(c for c in range(0x20) if c != 0x09) + b"\x7f"
# Bytes a request-target may not hold (RFC 9112 section 3.2: no whitespace or controls).
_TARGET_CONTROLS = bytes(range(0x21)) + b"\x7f"


class Headers:
    """A request's header fields in order, looked up case-insensitively.

    What the handlers and the WebSocket handshake use of http.server's
    ``email.message.Message`` (``get``, ``get_all``, ``in``, ``items``),
    without the email parser's cost or its habit of dropping lines it cannot read.
    """

    __slots__ = ("_fields", "_index")

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        self._fields = fields
        index: dict[str, list[str]] = {}
        for name, value in fields:
            index.setdefault(name.lower(), []).append(value)
        self._index = index

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        values = self._index.get(name.lower())
        return values[0] if values else default

    def get_all(self, name: str, default: Optional[list[str]] = None) -> Optional[list[str]]:
        values = self._index.get(name.lower())
        return list(values) if values else default

    def __getitem__(self, name: str) -> Optional[str]:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def items(self) -> list[tuple[str, str]]:
        return list(self._fields)

    def __repr__(self) -> str:
        return f"Headers({self._fields!r})"


def parse_request_line(line: bytes) -> tuple[str, str, str]:
    """``method SP request-target SP HTTP-version`` (RFC 9112 section 3), without its line end.

    Returns (method, target, version); BadRequest for what is malformed,
    VersionNotSupported (505) for a well-formed version other than HTTP/1.x.
    """
    parts = line.split(b" ")
    if len(parts) == 2 and parts[0] and parts[1]:
        # http.server would answer HTTP/0.9 with a bare body after reading
        # "headers" that never come; nobody speaks it (RFC 9112 section 2.3).
        raise BadRequest("HTTP/0.9 requests are not supported; send HTTP/1.1")
    if len(parts) != 3:
        raise BadRequest("Malformed request line")
    method, target, version = parts
    if not method or method.translate(None, _TCHAR):
        raise BadRequest("Malformed request method")
    if not target or len(target.translate(None, _TARGET_CONTROLS)) != len(target):
        raise BadRequest("Malformed request target")
    # HTTP-version = "HTTP/" DIGIT "." DIGIT, exactly (section 2.3): no "HTTP/1.1000".
    if (len(version) != 8 or not version.startswith(b"HTTP/") or version[6] != 0x2E
            or not (0x30 <= version[5] <= 0x39 and 0x30 <= version[7] <= 0x39)):
        raise BadRequest("Malformed HTTP version")
    if version[5] != 0x31:
        raise VersionNotSupported(f"HTTP version {version.decode()} is not supported; send HTTP/1.1")
    return method.decode("ascii"), target.decode("latin-1"), version.decode("ascii")


def parse_header_lines(lines: list[bytes]) -> Headers:
    """``field-name ":" OWS field-value OWS`` lines, without their line ends (RFC 9112 section 5).

    A line that is not one is a 400, as is obsolete line folding (section
    5.2): the email parser used to stop at such a line and drop the rest, a
    Content-Length among them.
    """
    fields: list[tuple[str, str]] = []
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not name or name.translate(None, _TCHAR):
            if line[:1] in (b" ", b"\t"):
                raise BadRequest("Obsolete line folding in a header is not accepted")
            raise BadRequest("Malformed header line")
        value = value.strip(b" \t")
        if len(value.translate(None, _VALUE_CONTROLS)) != len(value):
            raise BadRequest("Control character in a header value")
        fields.append((name.decode("ascii"), value.decode("latin-1")))
    return Headers(fields)


def parse_header_block(block: bytes) -> Headers:
    """The header lines of a head joined by CRLF (without the final empty
    line), as :func:`parse_header_lines` reads them; the caller has checked
    that every line ends in CRLF."""
    if not block:
        return Headers([])
    lines = block.split(b"\r\n")
    if len(lines) > MAX_HEADERS:
        raise HeaderTooLarge(f"More than {MAX_HEADERS} header fields")
    return parse_header_lines(lines)


def json_depth_exceeds(text: str, limit: int) -> bool:
    """Whether the JSON ``text`` nests arrays and objects deeper than ``limit``.

    Linear in the text, without recursion: brackets inside strings do not
    count (strings are skipped with json's own C scanner). Malformed JSON is
    left to the parser to report.
    """
    if text.count("[") + text.count("{") <= limit:
        return False    # every body a client of this API sends
    import re
    from json.decoder import scanstring  # type: ignore[attr-defined]  # C, not in typeshed

    depth = 0
    pos = 0
    find = re.compile(r'["\[\]{}]').search
    while True:
        m = find(text, pos)
        if m is None:
            return False
        c = m.group()
        pos = m.end()
        if c == '"':
            try:
                pos = scanstring(text, pos)[1]
            except ValueError:
                return False    # an unterminated string: the parser says so
        elif c in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1


class Request(Record):
    __slots__ = ("method", "path", "query", "headers", "body", "params", "peer")
    method: Final[str]
    path: Final[str]  # without the query string
    query: Final[str]
    headers: Final[Headers]
    body: Final[bytes]
    params: Final[Mapping[str, str]]  # from the route pattern
    peer: Final[str]  # the client's address (who is calling: iofogd.system.identity)

    def __init__(
        self,
        method: str,
        path: str,
        query: str,
        headers: Headers,
        body: bytes = b"",
        params: Mapping[str, str] | None = None,
        peer: str = "",
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.params = {} if params is None else params
        self.peer = peer

    def header(self, name: str) -> str:
        value = self.headers.get(name)
        return "" if value is None else str(value)

    def require_json_type(self) -> None:
        """docs/local-api.md#checks: the first ``;`` part of Content-Type must be application/json."""
        value = self.header("Content-Type")
        if value.split(";", 1)[0].strip().lower() != JSON_TYPE:
            raise BadRequest(f"Incorrect content type {value}".rstrip())

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object; anything else is a 400 with a clear message
        (upstream dropped the connection without an answer, docs/local-api.md#errors)."""
        if not self.body.strip():
            raise BadRequest("Request body is empty; a JSON object is required")
        try:
            # What json.loads does with bytes (UTF-8, -16 or -32, by the first bytes).
            text = self.body.decode(json.detect_encoding(self.body), "surrogatepass")
        except UnicodeDecodeError as exc:
            raise BadRequest(f"Malformed JSON: {exc}") from exc
        if json_depth_exceeds(text, MAX_JSON_DEPTH):
            raise BadRequest(f"Malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels")
        try:
            value = json.loads(text)
        except (ValueError, RecursionError) as exc:   # RecursionError: a second line of defence
            raise BadRequest(f"Malformed JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise BadRequest("Request body must be a JSON object")
        return value


class Response(Record):
    __slots__ = ("status", "body", "content_type", "headers")
    status: Final[int]
    body: Final[bytes]
    content_type: Final[str | None]
    headers: Final[tuple[tuple[str, str], ...]]

    def __init__(
        self,
        status: int,
        body: bytes,
        content_type: str | None = JSON_TYPE,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers

    @classmethod
    def json(cls, value: Any, status: int = 200) -> Response:
        # Compact separators, as upstream's Jackson and javax.json produce.
        return cls(status, json.dumps(value, separators=(",", ":")).encode())


def error_response(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    """The one error shape (docs/compatibility.md): ``{"status":"failed","error":...}``."""
    body = json.dumps({"status": "failed", "error": message}, separators=(",", ":")).encode()
    return Response(status, body, JSON_TYPE, headers)
