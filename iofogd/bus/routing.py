"""Routes between microservices, from the Controller's microservice list. Pure.

Each item of ``GET agent/microservices`` (docs/controller-api.md#microservices) carries ``routes``, the
uuids of the microservices that receive what it publishes, and ``isConsumer``
(docs/iomessage.md#routing; the Controller 3.0.4 sets both from ``POST /api/v3/routes``).  The
list names the microservices of THIS node, so a receiver missing from it runs
elsewhere: its messages are the router's business (:mod:`iofogd.bus.remote`).
"""
from __future__ import annotations

from iofogd.record import Record

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Any, Final, Iterable, Mapping


class Routing(Record):
    __slots__ = ("routes", "local", "consumers", "log_sizes")
    routes: Final[Mapping[str, tuple[str, ...]]]   # publisher -> receivers, in the Controller's order
    local: Final[frozenset[str]]                  # microservices on this node
    consumers: Final[frozenset[str]]              # isConsumer: true
    log_sizes: Final[Mapping[str, float]]          # uuid -> logSize (MB), for /v2/log

    def __init__(
        self, routes: Mapping[str, tuple[str, ...]] | None = None, local: Iterable[str] = (),
        consumers: Iterable[str] = (), log_sizes: Mapping[str, float] | None = None,
    ) -> None:
        self.routes = {} if routes is None else routes
        self.local = frozenset(local)
        self.consumers = frozenset(consumers)
        self.log_sizes = {} if log_sizes is None else log_sizes

    def receivers(self, publisher: str) -> tuple[str, ...]:
        return self.routes.get(publisher, ())

    def split(self, publisher: str) -> tuple[list[str], list[str]]:
        """``(on this node, elsewhere)`` receivers of the publisher's messages."""
        here: list[str] = []
        away: list[str] = []
        for receiver in self.receivers(publisher):
            (here if receiver in self.local else away).append(receiver)
        return here, away

    def may_read(self, receiver: str, publisher: str) -> bool:
        """Upstream's query rule (docs/local-api.md#messages-query): a route from the publisher to the receiver."""
        return receiver in self.routes.get(publisher, ())


def routing_from_microservices(items: Iterable[Mapping[str, Any]]) -> Routing:
    """The routing of a ``GET agent/microservices`` list; malformed entries are skipped."""
    routes: dict[str, tuple[str, ...]] = {}
    local: list[str] = []
    consumers: list[str] = []
    log_sizes: dict[str, float] = {}
    for item in items:
        uuid = item.get("uuid")
        if not isinstance(uuid, str) or not uuid:
            continue
        local.append(uuid)
        receivers = item.get("routes")
        if isinstance(receivers, list):
            clean = tuple(dict.fromkeys(r for r in receivers if isinstance(r, str) and r))
            if clean:
                routes[uuid] = clean
        if item.get("isConsumer") is True:
            consumers.append(uuid)
        size = item.get("logSize")
        log_sizes[uuid] = float(size) if isinstance(size, (int, float)) and not isinstance(size, bool) else 1.0
    return Routing(routes, local, consumers, log_sizes)
