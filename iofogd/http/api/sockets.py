"""The WebSocket endpoints: the handler thread that accepted an upgrade runs
the session until it ends (spec 2.1, 2.5)."""
from __future__ import annotations

import logging
from http.server import BaseHTTPRequestHandler

from iofogd.errors import NotFound
from iofogd.ws.control import ControlHub, control_socket_id
from iofogd.ws.session import SessionLimits, SessionRegistry, accept

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Callable, Optional

log = logging.getLogger(__name__)


class SocketEndpoints:
    """Called by the HTTP handler with ``(handler, path)`` for an upgrade."""

    def __init__(self, hub: ControlHub, registry: SessionRegistry, limits: SessionLimits,
                 messages: Optional[Callable[[BaseHTTPRequestHandler, str], None]] = None) -> None:
        self.hub = hub
        self.registry = registry
        self.limits = limits
        self.messages = messages   # the message socket (iofogd.http.api.message_socket)

    def __call__(self, handler: BaseHTTPRequestHandler, path: str) -> None:
        if self.messages is not None and path.startswith("/v2/message/socket/"):
            self.messages(handler, path)
            return
        microservice_id = control_socket_id(path)
        if microservice_id is None:
            raise NotFound("A control socket needs a microservice id: /v2/control/socket/id/<id>")
        # Any id is accepted, as upstream does: a microservice may connect before
        # the Controller has told us about it, and gets its 0x0C when it arrives.
        session = accept(handler, limits=self.limits)  # HandshakeError: answered as HTTP
        self.registry.add(session)
        self.hub.register(microservice_id, session)
        try:
            session.run(self.hub.on_message)
        finally:
            self.hub.unregister(session)
            self.registry.discard(session)
