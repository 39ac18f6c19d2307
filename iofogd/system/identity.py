"""Which microservice a Local API caller is, told by its source address (issue 12).

Theory of operation
-------------------
The microservice endpoints carry no token (the SDKs send none): a caller names
its microservice id in the body (``POST /v2/config/get``) or the path
(``/v2/control/socket/id/<id>``, the message socket), or both (``/v2/messages/*``,
``/v2/log``). Upstream believed any id, so one container could
read another's configuration and take its control signals.

The agent knows its containers' addresses from the engine. The reconciler
(:mod:`iofogd.system.microservices`) hands :class:`ContainerAddresses` the
addresses of this node's running containers at the end of every pass, from the
container list that pass fetches anyway, and those of a container it has just
started, from the inspect it makes anyway: no engine call is ever made for a
request. :meth:`MicroserviceIdentity.check` is then a dictionary lookup:

- a caller whose address belongs to one of our containers may use only that
  container's microservice id (403 otherwise);
- any other caller (the host itself, a container of another engine or node,
  a microservice with ``rootHostAccess``, which shares the host's addresses) keeps
  upstream's behaviour, unless the admin turned on ``strict_microservice_identity``
  (``iofog-agent config -smi on``): then it is refused (403);
- a request carrying the admin token is the admin's, and is never refused here.

Known window: a container that stops and whose address the engine gives to a
container that is not ours is taken for the old microservice until the next
reconciler pass (10 s) drops it; removals by the reconciler drop at once.
"""
from __future__ import annotations

import threading

from iofogd.errors import Forbidden

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

    from iofogd.config.store import ConfigStore


def normalise_address(address: str) -> str:
    """The form the engine reports: no brackets, no zone, IPv4-mapped IPv6 as IPv4."""
    address = address.strip().strip("[]").split("%", 1)[0].lower()
    if address.startswith("::ffff:") and "." in address:
        return address[len("::ffff:"):]
    return address


def addresses_of(container: Mapping[str, Any]) -> list[str]:
    """Every address of a container, from a ``GET /containers/json`` item or an inspect."""
    networks = (container.get("NetworkSettings") or {}).get("Networks") or {}
    found = []
    for net in networks.values():
        for key in ("IPAddress", "GlobalIPv6Address"):
            value = (net or {}).get(key)
            if isinstance(value, str) and value:
                found.append(normalise_address(value))
    return found


class ContainerAddresses:
    """address -> (microservice uuid, container id) of this agent's running containers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_address: Dict[str, Tuple[str, str]] = {}

    def replace(self, containers: Iterable[Tuple[str, str, Iterable[str]]]) -> None:
        """The whole map from ``(uuid, container id, addresses)`` (a reconciler pass)."""
        fresh = {address: (uuid, cid) for uuid, cid, addresses in containers for address in addresses}
        with self._lock:
            self._by_address = fresh

    def learn(self, uuid: str, container_id: str, addresses: Iterable[str]) -> None:
        """A container just started: its addresses now, its microservice's older ones gone."""
        with self._lock:
            fresh = {a: owner for a, owner in self._by_address.items() if owner[0] != uuid}
            fresh.update((address, (uuid, container_id)) for address in addresses)
            self._by_address = fresh

    def forget(self, container_id: str) -> None:
        """A container removed: its addresses may go to another container."""
        with self._lock:
            self._by_address = {a: owner for a, owner in self._by_address.items() if owner[1] != container_id}

    def owner(self, address: str) -> Optional[str]:
        """The microservice uuid of the container at ``address``, or None."""
        found = self._by_address.get(normalise_address(address))   # one atomic read
        return found[0] if found is not None else None

    def snapshot(self) -> Dict[str, str]:
        return {address: owner[0] for address, owner in self._by_address.items()}


class MicroserviceIdentity:
    """The one check every unauthenticated microservice endpoint makes."""

    def __init__(self, addresses: ContainerAddresses, config: ConfigStore) -> None:
        self.addresses = addresses
        self.config = config   # strict mode is read at each check: a change applies at once

    def check(self, peer: str, claimed: str, *, admin: bool = False) -> None:
        """Forbidden (403) unless the caller at ``peer`` may act as microservice ``claimed``."""
        if admin:
            return
        owner = self.addresses.owner(peer)
        if owner is not None:
            if owner != claimed:
                raise Forbidden(f"This caller is microservice {owner}: it may use only its own id, "
                                f"not {_shown(claimed)}")
            return
        if self.config.current.strict_microservice_identity:
            raise Forbidden(f"Strict microservice identity is on: {_shown(peer)} is not a container of "
                            f"this agent, so it may not act as microservice {_shown(claimed)}")


def _shown(text: str, limit: int = 80) -> str:
    """An id as given by a client, quoted and bounded for a message."""
    return repr(text if len(text) <= limit else text[:limit] + "...")
