"""Request and Response as plain values, and the JSON rules of the Local API.

Handlers are plain functions ``(request, app) -> Response``; they never see a
socket. The HTTP handler builds the :class:`Request` and writes the
:class:`Response`.
"""
from __future__ import annotations

import json
from email.message import Message

from iofogd.errors import BadRequest
from iofogd.record import Record

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Any, Final, Mapping

JSON_TYPE = "application/json"


class Request(Record):
    __slots__ = ("method", "path", "query", "headers", "body", "params", "peer")
    method: Final[str]
    path: Final[str]  # without the query string
    query: Final[str]
    headers: Final[Message]  # case-insensitive, as http.server parses them
    body: Final[bytes]
    params: Final[Mapping[str, str]]  # from the route pattern
    peer: Final[str]  # the client's address (who is calling: iofogd.system.identity)

    def __init__(
        self,
        method: str,
        path: str,
        query: str,
        headers: Message,
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
        """Spec 1.5: the first ``;`` part of Content-Type must be application/json."""
        value = self.header("Content-Type")
        if value.split(";", 1)[0].strip().lower() != JSON_TYPE:
            raise BadRequest(f"Incorrect content type {value}".rstrip())

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object; anything else is a 400 with a clear message
        (upstream dropped the connection without an answer, spec 1.4)."""
        if not self.body.strip():
            raise BadRequest("Request body is empty; a JSON object is required")
        try:
            value = json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
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
    """The one error shape (compatibility.md): ``{"status":"failed","error":...}``."""
    body = json.dumps({"status": "failed", "error": message}, separators=(",", ":")).encode()
    return Response(status, body, JSON_TYPE, headers)
