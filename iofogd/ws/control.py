"""The control socket hub: tells microservices that their configuration changed.

Theory of operation (docs/websocket.md#handshake, #opcodes, #control, docs/compatibility.md#websockets)
---------------------------------------------------------------------
Microservices open ``ws://HOST:54321/v2/control/socket/id/<id>``; the HTTP
handler registers the session under ``<id>`` (several sessions per id are
allowed: an SDK reconnecting after an outage opens a new socket before the old
one is noticed dead, Node's opens two).  When a microservice's configuration
changes, :meth:`ControlHub.signal_config` sends a binary message holding the one
byte 0x0C to every control socket of that id; when the edge resources change,
:meth:`ControlHub.signal_edge_resources` sends 0x0F to every control socket.

Each socket has at most one pending signal.  The client acknowledges with a
binary message of exactly the byte 0x0B, which clears it.  Unacknowledged
signals are sent again with the SAME opcode (the Java agent resent 0x0F as
0x0C, a bug we fix) ``first_retry_after`` seconds after the first send, then
every ``retry_every`` seconds, up to ``max_sends`` sends in all; when the last
one has gone unanswered for ``retry_every`` the socket is closed (1008) and
forgotten, instead of being left open and registered as the Java agent did.  A
newer signal replaces a pending one and starts the count again.

Node's SDK sends its ACKs on its newest socket, whichever socket the signal came
on (docs/websocket.md#sdk-node), so an ACK on a socket with nothing pending clears
the oldest pending signal of another socket of the same id.

Time is injected: ``clock`` stamps each send and :meth:`ControlHub.tick` takes
the current time, so tests drive the schedule without sleeping.
"""
from __future__ import annotations

import logging
import threading
import time

from iofogd.errors import ConnectionClosed
from iofogd.ws.envelope import CONTROL_SIGNAL, RESOURCE_SIGNAL, is_control_ack, signal
from iofogd.ws.frames import CloseCode
from iofogd.ws.paths import CONTROL_SOCKET_PREFIX, socket_id
from iofogd.ws.session import WebSocketSession

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Optional, Tuple, Union

log = logging.getLogger(__name__)

def control_socket_id(path: str) -> Optional[str]:
    """The microservice id of a control-socket URL path, or None (see :func:`socket_id`)."""
    return socket_id(CONTROL_SOCKET_PREFIX, path)


class _Pending:
    __slots__ = ("opcode", "sends", "last_sent")
    opcode: int
    sends: int
    last_sent: float

    def __init__(self, opcode: int, sends: int, last_sent: float) -> None:
        self.opcode = opcode
        self.sends = sends
        self.last_sent = last_sent


class ControlHub:
    """Control sockets by microservice id, with their pending signals."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        first_retry_after: float = 20.0,
        retry_every: float = 10.0,
        max_sends: int = 10,
    ) -> None:
        self._clock = clock
        self.first_retry_after = first_retry_after
        self.retry_every = retry_every
        self.max_sends = max_sends
        self._lock = threading.Lock()
        self._ids: Dict[WebSocketSession, str] = {}  # insertion order = age
        self._pending: Dict[WebSocketSession, _Pending] = {}

    # -- registration ----------------------------------------------------------------

    def register(self, microservice_id: str, session: WebSocketSession) -> None:
        with self._lock:
            self._ids[session] = microservice_id
        log.debug("control socket opened for %r", microservice_id)

    def unregister(self, session: WebSocketSession) -> None:
        with self._lock:
            self._ids.pop(session, None)
            self._pending.pop(session, None)

    def sessions(self, microservice_id: Optional[str] = None) -> List[WebSocketSession]:
        """The control sockets of one id, or all of them, oldest first."""
        with self._lock:
            return [s for s, i in self._ids.items() if microservice_id is None or i == microservice_id]

    def pending(self, session: WebSocketSession) -> Optional[Tuple[int, int]]:
        """``(opcode, sends so far)`` of the socket's unacknowledged signal, if any."""
        with self._lock:
            entry = self._pending.get(session)
            return None if entry is None else (entry.opcode, entry.sends)

    # -- signals ---------------------------------------------------------------------

    def signal_config(self, microservice_id: str) -> int:
        """Send 0x0C to every control socket of ``microservice_id``; how many got it."""
        return self._signal(self.sessions(microservice_id), CONTROL_SIGNAL)

    def signal_edge_resources(self) -> int:
        """Send 0x0F to every control socket; how many got it."""
        return self._signal(self.sessions(), RESOURCE_SIGNAL)

    def _signal(self, sessions: List[WebSocketSession], opcode: int) -> int:
        now = self._clock()
        with self._lock:
            for session in sessions:
                # Recorded before sending, so that a fast ACK finds it.
                self._pending[session] = _Pending(opcode, 1, now)
        return sum(self._send(session, opcode) for session in sessions)

    def _send(self, session: WebSocketSession, opcode: int) -> bool:
        try:
            session.send_binary(signal(opcode))
        except ConnectionClosed:
            self.unregister(session)
            return False
        return True

    def on_message(self, session: WebSocketSession, data: Union[str, bytes]) -> None:
        """The ``on_message`` of a control session: ACKs clear pending signals."""
        if isinstance(data, str) or not is_control_ack(data):
            log.debug("control socket: ignoring a %d-byte message", len(data))
            return
        with self._lock:
            if self._pending.pop(session, None) is not None:
                return
            owner = self._ids.get(session)
            for other in self._ids:
                if self._ids[other] == owner and other in self._pending:
                    del self._pending[other]
                    return

    # -- retries ---------------------------------------------------------------------

    def tick(self, now: Optional[float] = None) -> None:
        """Resend what is due at ``now``; close the sockets that used up their sends."""
        if now is None:
            now = self._clock()
        resend: List[Tuple[WebSocketSession, int]] = []
        give_up: List[WebSocketSession] = []
        with self._lock:
            for session, entry in list(self._pending.items()):
                wait = self.first_retry_after if entry.sends == 1 else self.retry_every
                if now - entry.last_sent < wait:
                    continue
                if entry.sends >= self.max_sends:
                    give_up.append(session)
                    del self._pending[session]
                    self._ids.pop(session, None)
                else:
                    entry.sends += 1
                    entry.last_sent = now
                    resend.append((session, entry.opcode))
        for session, opcode in resend:
            self._send(session, opcode)
        for session in give_up:
            log.info("control socket %r: %d signals unacknowledged; closing it", session.path, self.max_sends)
            session.close(CloseCode.POLICY_VIOLATION, "signal not acknowledged")

    def run(self, stop: threading.Event, interval: float = 2.0) -> None:
        """Call :meth:`tick` every ``interval`` seconds until ``stop`` is set."""
        while not stop.wait(interval):
            try:
                self.tick()
            except Exception:
                log.exception("control hub tick failed")
