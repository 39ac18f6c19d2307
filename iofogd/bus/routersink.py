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
    from typing import List, Optional, Tuple

# The link's status while it has no router to join (also when it is not built yet).
NO_ROUTER = "no router: local delivery only"


class RouterSink(abc.ABC):
    """What the router link needs from the bus (implemented by the bus)."""

    @abc.abstractmethod
    def deliver_local(self, receiver: str, iomessage_jsons: List[str]) -> List[Optional[str]]:
        """Store messages from another node for the local ``receiver``, in order, as one
        commit; return only once they are durable.  The answer says, for each message,
        ``None`` (stored) or why it can never be taken (malformed: it is rejected, the
        others are stored).  Any exception means "not now" for all of them (retried)."""

    def router_ready(self) -> None:
        """:meth:`RouterLink.offer` said no earlier and has room again (optional)."""


def router_address(provisioned: bool, host: str, port: int) -> Tuple[Optional[str], Optional[int]]:
    """The router to join, from the config the Controller gave (``routerHost``/``routerPort``):
    none (local delivery only) while unprovisioned or when either is missing."""
    if not provisioned or not host.strip() or not 0 < port < 65536:
        return None, None
    return host.strip(), port
