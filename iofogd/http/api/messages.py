"""POST /v2/messages/new, /next, /query (docs/local-api.md#messages-next, #messages-new, #messages-query), no token, as the SDKs expect.

The validation messages are upstream's, word for word (double spaces and
trailing spaces included): microservice code may match on them.  What we fix
(docs/compatibility.md): every refusal is a JSON 400 with that text, never a
dropped connection (malformed JSON, wrong types, an empty query window).
"""
from __future__ import annotations

import json
import re

from iofogd.app import App
from iofogd.bus.message import from_json, to_json
from iofogd.errors import ArchiveError, BadRequest, MessageError, ServiceUnavailable
from iofogd.http.api.microservice import check_caller
from iofogd.http.request import Request, Response

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Any

_REQUIRED = ("publisher", "version", "infotype", "infoformat", "contentdata")
_NON_BLANK = ("publisher", "infotype", "infoformat")
_OPTIONAL_COUNTS = (
    ("sequencenumber", "sequence number "), ("sequencetotal", "sequence total "),
    ("priority", "priority "), ("chainposition", "chain position "),
)
_INTEGER_LITERAL = re.compile(r"[0-9]+")
_DIFFICULTY = re.compile(r"[0-9]*.?[0-9]*")   # upstream's, the dot a wildcard


def _is_integer_literal(value: Any) -> bool:
    """Upstream matched ``[0-9]+`` on the JSON text of the value: 4 passes, "4", -1 and 4.0 do not."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _validation(text: str) -> BadRequest:
    return BadRequest(f"Validation Error, {text}")


def validate_new(obj: dict[str, Any]) -> None:
    """Upstream's checks of a published message, in its order (docs/local-api.md#messages-new)."""
    for key in _REQUIRED:
        if key not in obj:
            raise _validation(f"Error: Missing input field {key} ")
    for key in _NON_BLANK:
        value = obj[key]
        if not isinstance(value, str):
            raise _validation(f"Error: field {key} must be a string")
        if not value.strip():
            raise _validation(f"Error: Missing input field value {key} ")
    if not _is_integer_literal(obj["version"]):
        raise _validation("Error: Invalid  value for version")
    for key, label in _OPTIONAL_COUNTS:
        if key in obj and not _is_integer_literal(obj[key]):
            raise _validation(f"Error: Invalid  value for field {label}")
    if "difficultytarget" in obj:
        value = obj["difficultytarget"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not _DIFFICULTY.fullmatch(
            json.dumps(value)
        ):
            raise _validation("Error: Invalid  value for field difficulty target ")


def new(request: Request, app: App) -> Response:
    request.require_json_type()
    obj = request.json_object()
    validate_new(obj)
    check_caller(request, app, obj["publisher"])   # a container publishes only as itself
    if isinstance(obj.get("difficultytarget"), float):
        obj = dict(obj, difficultytarget=int(obj["difficultytarget"]))   # Java's getInt
    try:
        message = from_json(obj)
    except MessageError as exc:
        raise BadRequest(f" Message Parsing Error, {exc.message}") from exc
    try:
        published = app.bus().publish(message)
    except ArchiveError as exc:   # ArchiveFull: the disk is full; the archive stays whole
        raise ServiceUnavailable(f"Message not stored: {exc.message}") from exc
    except MessageError as exc:   # a field too long for the binary form
        raise BadRequest(f" Message Parsing Error, {exc.message}") from exc
    return Response.json({"status": "okay", "timestamp": published.timestamp, "id": published.id})


def next_messages(request: Request, app: App) -> Response:
    request.require_json_type()
    receiver = request.json_object().get("id")
    if receiver is None or (isinstance(receiver, str) and not receiver.strip()):
        raise BadRequest("Incorrect content/data Id value not found ")
    if not isinstance(receiver, str):
        raise BadRequest("Incorrect content/data: field id must be a string")
    check_caller(request, app, receiver)   # a container reads only its own messages
    messages = app.bus().next_messages(receiver)
    return Response.json({"status": "okay", "count": len(messages), "messages": [to_json(m) for m in messages]})


def _query_error(text: str) -> BadRequest:
    return BadRequest(f"Incorrect input content/data {text}")


def query(request: Request, app: App) -> Response:
    request.require_json_type()
    obj = request.json_object()
    if "id" not in obj:
        raise _query_error("Error: Missing input field id")
    if "timeframestart" not in obj or "timeframeend" not in obj:
        raise _query_error("Error: Missing input field timeframe start or end")
    if "publishers" not in obj:
        raise _query_error("Error: Missing input field publishers")
    start, end = obj["timeframestart"], obj["timeframeend"]
    if not _is_integer_literal(start):
        raise _query_error("Error: Invalid value of timeframestart")
    if not _is_integer_literal(end):
        raise _query_error("Error: Invalid value of timeframeend")
    receiver = obj["id"]
    if not isinstance(receiver, str) or not receiver.strip():
        raise _query_error("Error: Missing input field value id")
    publishers = obj["publishers"]
    if not isinstance(publishers, list) or not all(isinstance(p, str) for p in publishers):
        raise _query_error("Error: publishers must be an array of microservice ids")
    check_caller(request, app, receiver)   # the route rule below is about the caller: it must be who it says
    messages, last = app.bus().query(receiver, publishers, start, end)
    return Response.json({
        "status": "okay", "count": len(messages), "timeframestart": start, "timeframeend": last,
        "messages": [to_json(m) for m in messages],
    })
