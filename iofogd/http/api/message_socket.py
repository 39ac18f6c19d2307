"""The message socket endpoint ``/v2/message/socket/id/<id>`` (spec 2.1, 2.6).

The handler thread that accepted the upgrade runs the session until it ends;
:class:`iofogd.bus.sockets.MessageSockets` does the ioFog part.
"""
from __future__ import annotations

from http.server import BaseHTTPRequestHandler

from iofogd.bus.sockets import MessageSockets, message_socket_id
from iofogd.errors import NotFound
from iofogd.ws.session import SessionLimits, SessionRegistry, accept


class MessageSocketEndpoint:
    def __init__(self, hub: MessageSockets, registry: SessionRegistry, limits: SessionLimits) -> None:
        self.hub = hub
        self.registry = registry
        self.limits = limits

    def __call__(self, handler: BaseHTTPRequestHandler, path: str) -> None:
        receiver = message_socket_id(path)
        if receiver is None:
            raise NotFound("A message socket needs a microservice id: /v2/message/socket/id/<id>")
        # Any id is accepted, as upstream: messages may wait for it already.
        session = accept(handler, limits=self.limits)  # HandshakeError: answered as HTTP
        self.registry.add(session)
        self.hub.register(receiver, session)
        try:
            session.run(self.hub.on_message)
        finally:
            self.hub.unregister(session)
            self.registry.discard(session)
