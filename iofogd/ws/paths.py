"""The URL paths of the Local API's WebSocket endpoints (spec 2.1), in one place.

Pure and import-free, so that the HTTP route table can name them without
loading the WebSocket layer at start-up.
"""
from __future__ import annotations

CONTROL_SOCKET_PREFIX = "/v2/control/socket/id/"
MESSAGE_SOCKET_PREFIX = "/v2/message/socket/id/"
