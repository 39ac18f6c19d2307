"""Where messages for receivers on other nodes go: the hook for the router.

The bus hands every published message whose route names receivers that are
not on this node to a :class:`RemoteDelivery`.  The ioFog router over AMQP 1.0
(the issue "Messages across nodes") plugs in here; until then the bus runs
with :class:`LocalOnly`, which counts such messages, says so once per receiver
in the log, and says so in the bus status.  The publisher gets no error, as
upstream's did not when its router was away.
"""
from __future__ import annotations

import logging
import threading

from iofogd.bus.message import IoMessage

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Dict, Protocol, Sequence

    class RemoteDelivery(Protocol):
        def deliver(self, message: IoMessage, receivers: Sequence[str]) -> None:
            """Carry a stored message to receivers on other nodes; must not block for long."""

        def status(self) -> str:
            """One line for the status report."""

log = logging.getLogger(__name__)


class LocalOnly:
    """No router: messages for other nodes are counted and logged, not carried."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.undelivered: Dict[str, int] = {}   # receiver -> messages not carried

    def deliver(self, message: IoMessage, receivers: Sequence[str]) -> None:
        with self._lock:
            for receiver in receivers:
                seen = receiver in self.undelivered
                self.undelivered[receiver] = self.undelivered.get(receiver, 0) + 1
                if not seen:
                    log.warning(
                        "bus: receiver %s is not on this node; its messages (from %s and others) are archived here "
                        "but not carried to it (no router yet: local only)", receiver, message.publisher,
                    )

    def status(self) -> str:
        with self._lock:
            total = sum(self.undelivered.values())
        return f"local only (no router): {total} messages for receivers on other nodes not carried"
