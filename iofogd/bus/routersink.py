"""What the router link needs from the bus, and where the router is: no AMQP here.

Apart from iofogd/bus/router.py so that the bus (iofogd/bus/remote.py) and the
daemon can name them without importing the AMQP client: a node with no router
address (un-provisioned, or no router in its config) never loads it
(iofogd/daemon.py ``RouterSwitch``).
"""
from __future__ import annotations

import abc

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Optional, Tuple

# The link's status while it has no router to join (also when it is not built yet).
NO_ROUTER = "no router: local delivery only"


class RouterSink(abc.ABC):
    """What the router link needs from the bus (implemented by the bus)."""

    @abc.abstractmethod
    def deliver_local(self, receiver: str, iomessage_json: str) -> None:
        """Store a message from another node for the local ``receiver``; return only
        once it is durable.  Raise ValueError for a message that can never be taken
        (malformed: it is rejected); any other exception means "not now" (retried)."""

    def router_ready(self) -> None:
        """:meth:`RouterLink.offer` said no earlier and has room again (optional)."""


def router_address(provisioned: bool, host: str, port: int) -> Tuple[Optional[str], Optional[int]]:
    """The router to join, from the config the Controller gave (``routerHost``/``routerPort``):
    none (local delivery only) while unprovisioned or when either is missing."""
    if not provisioned or not host.strip() or not 0 < port < 65536:
        return None, None
    return host.strip(), port
