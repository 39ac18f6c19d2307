"""The URL paths of the Local API's WebSocket endpoints (docs/websocket.md#handshake), in one place.

Pure and import-free, so that the HTTP route table can name them without
loading the WebSocket layer at start-up.
"""
from __future__ import annotations

CONTROL_SOCKET_PREFIX = "/v2/control/socket/id/"
MESSAGE_SOCKET_PREFIX = "/v2/message/socket/id/"


def socket_id(prefix: str, path: str) -> str | None:
    """The microservice id of a socket URL path under ``prefix``, or None if it is not one.

    Upstream takes the fifth ``/``-separated token and keeps a query string in
    the id (docs/websocket.md#handshake); we drop the query and refuse an empty id, and an id with
    a control or other unprintable character (no microservice has one, and it
    would reach logs and terminals).
    """
    from urllib.parse import unquote   # only when a socket is opened: this module stays import-free

    path = path.split("?", 1)[0]
    if not path.startswith(prefix):
        return None
    token = unquote(path[len(prefix) :].split("/", 1)[0]).strip()
    return token if token and token.isprintable() else None
