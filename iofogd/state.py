"""AgentState: what the daemon knows right now, behind one lock.

Writers are the daemon's threads (start-up, Controller sync, the microservice
reconciler); readers (request handlers) get a frozen :class:`StateSnapshot` and
never hold the lock while they format an answer.
"""
from __future__ import annotations

import threading
import time

from iofogd.record import Record

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Any, Callable, Final

# Upstream's ModulesStatus and ControllerStatus (docs/host.md#states), as the CLI shows them.
STARTING = "STARTING"
RUNNING = "RUNNING"
STOPPED = "STOPPED"

CONTROLLER_OK = "ok"
CONTROLLER_NOT_PROVISIONED = "not provisioned"
CONTROLLER_BROKEN_CERTIFICATE = "broken certificate"
CONTROLLER_NOT_CONNECTED = "not connected"


class StateSnapshot(Record):
    __slots__ = (
        "daemon_status", "started_at", "controller_status", "microservice_configs", "edge_resources",
        "messages_processed",
    )
    daemon_status: Final[str]
    started_at: Final[float]
    controller_status: Final[str]
    # Microservice uuid -> its config string exactly as the Controller sent it (docs/local-api.md#config-get).
    microservice_configs: Final[dict[str, str]]
    edge_resources: Final[tuple[Any, ...]]
    messages_processed: Final[int]

    def __init__(
        self,
        daemon_status: str = STARTING,
        started_at: float = 0.0,
        controller_status: str = CONTROLLER_NOT_CONNECTED,
        microservice_configs: dict[str, str] | None = None,
        edge_resources: tuple[Any, ...] = (),
        messages_processed: int = 0,
    ) -> None:
        self.daemon_status = daemon_status
        self.started_at = started_at
        self.controller_status = controller_status
        self.microservice_configs = {} if microservice_configs is None else microservice_configs
        self.edge_resources = edge_resources
        self.messages_processed = messages_processed


class AgentState:
    """The one mutable record of the daemon's state."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._snapshot = StateSnapshot(started_at=clock())

    def snapshot(self) -> StateSnapshot:
        with self._lock:
            return self._snapshot

    def update(self, **changes: Any) -> StateSnapshot:
        with self._lock:
            self._snapshot = self._snapshot.replace(**changes)
            return self._snapshot

    def set_microservice_configs(self, configs: dict[str, str]) -> list[str]:
        """Replace the microservice configs; the ids whose config is new or changed.

        The one call through which microservice configurations enter the
        daemon (agent.py ``ControllerPort.apply_microservices``, which signals
        the changed ones to their control sockets).
        """
        with self._lock:
            old = self._snapshot.microservice_configs
            changed = [mid for mid, cfg in configs.items() if old.get(mid) != cfg]
            self._snapshot = self._snapshot.replace(microservice_configs=dict(configs))
        return changed

    def set_edge_resources(self, resources: list[Any]) -> bool:
        """Replace the edge resources; whether they changed."""
        with self._lock:
            new = tuple(resources)
            if new == self._snapshot.edge_resources:
                return False
            self._snapshot = self._snapshot.replace(edge_resources=new)
        return True

    def count_message(self, n: int = 1) -> None:
        with self._lock:
            self._snapshot = self._snapshot.replace(
                messages_processed=self._snapshot.messages_processed + n
            )
