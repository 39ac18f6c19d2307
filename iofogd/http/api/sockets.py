"""The WebSocket endpoints: the handler thread that accepted an upgrade runs
the session until it ends (spec 2.1, 2.5)."""
from __future__ import annotations

import logging
from http.server import BaseHTTPRequestHandler

from iofogd.admintoken import TokenFile
from iofogd.errors import NotFound
from iofogd.system.identity import MicroserviceIdentity
from iofogd.ws.control import ControlHub, control_socket_id
from iofogd.ws.session import SessionLimits, SessionRegistry, accept

log = logging.getLogger(__name__)


class SocketEndpoints:
    """Called by the HTTP handler with ``(handler, path)`` for an upgrade."""

    def __init__(self, hub: ControlHub, registry: SessionRegistry, limits: SessionLimits, *,
                 identity: MicroserviceIdentity, token: TokenFile) -> None:
        self.hub = hub
        self.registry = registry
        self.limits = limits
        self.identity = identity
        self.token = token

    def __call__(self, handler: BaseHTTPRequestHandler, path: str) -> None:
        microservice_id = control_socket_id(path)
        if microservice_id is None:
            raise NotFound("A control socket needs a microservice id: /v2/control/socket/id/<id>")
        # Any id is accepted, as upstream does: a microservice may connect before
        # the Controller has told us about it, and gets its 0x0C when it arrives.
        # But a container of ours only with its own id (issue 12): Forbidden is a 403.
        self.identity.check(handler.client_address[0], microservice_id,
                            admin=self.token.matches(handler.headers.get("Authorization", "")))
        session = accept(handler, limits=self.limits)  # HandshakeError: answered as HTTP
        self.registry.add(session)
        self.hub.register(microservice_id, session)
        try:
            session.run(self.hub.on_message)
        finally:
            self.hub.unregister(session)
            self.registry.discard(session)
