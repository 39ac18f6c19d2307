"""The App: every service a request handler may use, built by daemon.py.

Handlers receive the App as an argument and never build anything themselves.
The parts that start-up phase 1 builds are plain fields; the parts of phase 2
(the Docker, Controller and WebSocket layers, see iofogd/daemon.py) are one
:class:`Phase2` object reached through :meth:`App.phase2`, which waits for
them (:class:`StartGate`). Every field is a class: following a request from its
handler never ends in a lambda.
"""
from __future__ import annotations

import threading
from datetime import datetime

from iofogd.admintoken import TokenFile
from iofogd.config.gps import GpsUpdates
from iofogd.config.store import ConfigStore
from iofogd.errors import ServiceUnavailable
from iofogd.paths import Paths
from iofogd.reports import EngineInfo, Report, status_report
from iofogd.state import AgentState
from iofogd.system.identity import MicroserviceIdentity
from iofogd.system.network import NetworkWatcher
from iofogd.system.status import ResourceSampler

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:  # phase 2 imports these modules (iofogd/daemon.py); the App only names them
    from typing import Optional

    from iofogd.agent import Provisioning
    from iofogd.bus.service import MessageBus
    from iofogd.ws.endpoints import SocketEndpoints
    from iofogd.system.microservices import Microservices

STARTUP_WAIT = 30.0   # seconds a request waits for start-up phase 2


class Phase2:
    """The parts built by start-up phase 2 (daemon.py ``Daemon._build_phase2``)."""

    __slots__ = ("microservices", "provisioning", "sockets", "bus", "bus_failure")

    def __init__(self, microservices: Microservices, provisioning: Provisioning,
                 sockets: SocketEndpoints, bus: Optional[MessageBus] = None,
                 bus_failure: str = "it was not built") -> None:
        self.microservices = microservices   # the Docker engine client and reconciler
        self.provisioning = provisioning     # provision <key>, deprovision (docs/controller-api.md#provisioning, #deprovisioning)
        self.sockets = sockets               # the WebSocket endpoints (control and message sockets)
        # The message bus (issue 13); None when it could not open its files: the rest
        # of the daemon runs and the bus's endpoints answer 503 with bus_failure.
        self.bus = bus
        self.bus_failure = bus_failure


class StartGate:
    """Start-up phase 2, done or failed: requests that need its parts wait here.

    Phase 2 takes a fraction of a second after the API is up; a request that
    arrives meanwhile is answered late rather than from a half-built daemon,
    and with 503 only when phase 2 failed or took longer than STARTUP_WAIT.
    """

    def __init__(self) -> None:
        self._done = threading.Event()
        self._failed: Optional[str] = None
        self._parts: Optional[Phase2] = None

    def open(self, parts: Phase2) -> None:
        self._parts = parts
        self._done.set()

    def fail(self, reason: str) -> None:
        self._failed = reason
        self._done.set()

    def is_open(self) -> bool:
        return self._done.is_set() and self._failed is None

    def wait(self, what: str) -> Phase2:
        """The phase-2 parts; ServiceUnavailable (503) naming ``what`` when they are not there."""
        # is_set() first: Event.wait takes the Event's lock even when set, and
        # every Local API request that needs phase 2 passes here.
        if not self._done.is_set() and not self._done.wait(STARTUP_WAIT):
            raise ServiceUnavailable(f"ioFog Agent is still starting ({what} is not up yet)")
        if self._failed is not None:
            raise ServiceUnavailable(f"ioFog Agent could not start {what}: {self._failed}")
        assert self._parts is not None
        return self._parts


class App:
    __slots__ = ("paths", "config", "state", "sampler", "token", "network", "started", "identity", "gps")

    def __init__(
        self,
        paths: Paths,
        config: ConfigStore,
        state: AgentState,
        sampler: ResourceSampler,
        token: TokenFile,
        network: NetworkWatcher,
        started: StartGate,
        identity: MicroserviceIdentity,
        gps: GpsUpdates,
    ) -> None:
        self.paths = paths
        self.config = config
        self.state = state
        self.sampler = sampler
        self.token = token
        self.network = network
        self.started = started
        self.identity = identity   # who may act as which microservice (issue 12)
        self.gps = gps             # POST /v2/gps writes: the admin's mode kept, bounded rate (issue 12)

    def phase2(self, what: str) -> Phase2:
        """The phase-2 parts, once they are up (waits; see :class:`StartGate`).

        ``what`` names the part the caller needs, for the 503 when it cannot have it.
        """
        return self.started.wait(what)

    def bus(self) -> MessageBus:
        """The message bus, once phase 2 is up; ServiceUnavailable (503) if it is not running."""
        parts = self.phase2("the message bus")
        if parts.bus is None:
            raise ServiceUnavailable(f"The message bus is not running: {parts.bus_failure}")
        return parts.bus

    def engine_info(self) -> EngineInfo:
        microservices = self.phase2("the Docker engine client").microservices
        return EngineInfo(microservices.running_count(), microservices.engine_error())

    def status(self) -> Report:
        """The status report (CLI ``status``, GET /v2/status)."""
        engine = self.engine_info()   # first: during start-up it waits, and the state then says RUNNING
        return status_report(self.state.snapshot(), self.sampler.snapshot(), engine, datetime.now(),
                             self.router_status())

    def router_status(self) -> str:
        """The status report's Router line: the link to the router network (issue 14)."""
        parts = self.phase2("the message bus")
        if parts.bus is None:
            return f"not running (the message bus is not running: {parts.bus_failure})"
        return parts.bus.status()
