"""The Local API's WebSocket endpoints: admission, then a session run to its end (docs/websocket.md#handshake, #control).

The HTTP layer (``LocalApiHandler._upgrade``) validates the handshake and asks
:meth:`SocketEndpoints.admit` for a :class:`Seat` BEFORE it answers 101 (an
unknown path is a 404, too many sessions a 503, both as plain HTTP), writes the
101, gives up its HTTP connection slot and calls :meth:`SocketEndpoints.serve`
with the socket, the bytes it had read past the request, the seat and the peer.
``serve`` runs the session in that thread until it ends.

Sessions are bounded per microservice id and in total: each one holds a thread,
and 300 sockets opened for one id must not starve everyone else.  ``admit``
takes the place under the lock, so a client that opens its next socket at once
is refused with a 503 instead of being sent a 101 it could not keep.  The seat
is the place: ``serve`` gives it back when the session ends, and the HTTP layer
gives it back if the upgrade fails before ``serve`` (403 from the identity
check, a peer gone before the 101 left).  Giving it back twice is harmless.

Two kinds of socket share this door, told apart by the path's prefix
(iofogd/ws/paths.py): the control sockets (:class:`ControlHub`) and the message
sockets (the message bus's hub, iofogd/bus/sockets.py, given when the bus
runs).  Both hubs have the same shape (:class:`Hub`): a session is registered
under its id, its messages go to ``on_message``, it is unregistered at its end.
The bounds count sessions per kind and id.
"""
from __future__ import annotations

import threading

from iofogd.errors import NotFound, ServiceUnavailable
from iofogd.ws.paths import CONTROL_SOCKET_PREFIX, MESSAGE_SOCKET_PREFIX, socket_id
from iofogd.ws.envelope import SDK_PING, sdk_pong
from iofogd.ws.session import SessionLimits, SessionRegistry, WebSocketSession

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    import socket
    from typing import Dict, Optional, Protocol, Tuple, Union

    class Hub(Protocol):
        """What a kind of socket does with its sessions (ControlHub, the bus's MessageSockets)."""

        def register(self, microservice_id: str, session: WebSocketSession) -> None: ...
        def unregister(self, session: WebSocketSession) -> None: ...
        def on_message(self, session: WebSocketSession, data: Union[str, bytes]) -> None: ...


MAX_SESSIONS = 512
MAX_SESSIONS_PER_ID = 16   # an SDK that reconnects opens a new socket before the old one is seen dead


class SocketEndpoints:
    """The control sockets and, when the message bus runs, the message sockets."""

    def __init__(
        self,
        hub: Hub,
        registry: SessionRegistry,
        limits: SessionLimits,
        max_sessions: int = MAX_SESSIONS,
        max_per_id: int = MAX_SESSIONS_PER_ID,
        messages: Optional[Hub] = None,
    ) -> None:
        self.hub = hub
        self.messages = messages   # None: the message bus is not running (404 for its path)
        self.registry = registry
        self.limits = limits
        self.max_sessions = max_sessions
        self.max_per_id = max_per_id
        self._lock = threading.Lock()
        self._total = 0
        self._per_id: Dict[Tuple[str, str], int] = {}

    def admit(self, path: str, peer: str) -> Seat:
        """A place for a session on ``path``; NotFound (404) or ServiceUnavailable
        (503) if it may not have one now.  The caller passes it to :meth:`serve`,
        or releases it if the upgrade does not get that far."""
        kind, microservice_id, hub = self._route(path)
        key = (kind, microservice_id)
        with self._lock:
            self._check(kind, microservice_id)
            self._total += 1
            self._per_id[key] = self._per_id.get(key, 0) + 1
        return Seat(self, key, path, hub)

    def serve(self, sock: socket.socket, buffered: bytes, seat: Seat, peer: str) -> None:
        """Run a session on an upgraded socket until it ends (the caller's thread),
        then give its seat back."""
        try:
            session = WebSocketSession(
                sock, self.limits, path=seat.path, peer=peer, ping_payload=SDK_PING, pong_payload=sdk_pong
            )
            # Any id is accepted, as upstream does: a microservice may connect before
            # the Controller has told us about it, and gets its 0x0C when it arrives;
            # messages may wait for a receiver before its first socket.
            self.registry.add(session)
            seat.hub.register(seat.microservice_id, session)
            try:
                session.run(seat.hub.on_message, buffered)
            finally:
                seat.hub.unregister(session)
                self.registry.discard(session)
        finally:
            seat.release()

    def _give_back(self, key: Tuple[str, str]) -> None:
        """Under the lock: one place for ``key`` is free again."""
        self._total -= 1
        left = self._per_id[key] - 1
        if left:
            self._per_id[key] = left
        else:
            del self._per_id[key]

    def _route(self, path: str) -> Tuple[str, str, Hub]:
        """The kind of socket, its microservice id and its hub; NotFound (404) if none."""
        if path.startswith(MESSAGE_SOCKET_PREFIX):
            microservice_id = socket_id(MESSAGE_SOCKET_PREFIX, path)
            if self.messages is None:
                raise ServiceUnavailable("The message bus is not running: no message socket")
            if microservice_id is None:
                raise NotFound("A message socket needs a microservice id: /v2/message/socket/id/<id>")
            return "message", microservice_id, self.messages
        microservice_id = socket_id(CONTROL_SOCKET_PREFIX, path)
        if microservice_id is None:
            raise NotFound("A control socket needs a microservice id: /v2/control/socket/id/<id>")
        return "control", microservice_id, self.hub

    def _check(self, kind: str, microservice_id: str) -> None:
        """Under the lock: the bounds."""
        if self._total >= self.max_sessions:
            raise ServiceUnavailable(f"Too many WebSocket sessions ({self.max_sessions}), try again")
        if self._per_id.get((kind, microservice_id), 0) >= self.max_per_id:
            raise ServiceUnavailable(
                f"Too many {kind} sockets for this microservice ({self.max_per_id}), try again"
            )


class Seat:
    """One session's place under the bounds, from :meth:`SocketEndpoints.admit` until released."""

    __slots__ = ("_endpoints", "_key", "path", "hub", "_held")

    def __init__(self, endpoints: SocketEndpoints, key: Tuple[str, str], path: str, hub: Hub) -> None:
        self._endpoints = endpoints
        self._key = key
        self.path = path
        self.hub = hub
        self._held = True

    @property
    def microservice_id(self) -> str:
        return self._key[1]

    def release(self) -> None:
        """Give the place back; a second call does nothing."""
        with self._endpoints._lock:
            if self._held:
                self._held = False
                self._endpoints._give_back(self._key)
