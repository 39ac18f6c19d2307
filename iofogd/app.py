"""The App: every service a request handler may use, built by daemon.py.

Handlers receive the App as an argument and never build anything themselves.
"""
from __future__ import annotations

import hmac
import os
import threading
from datetime import datetime

from iofogd.config import ConfigStore, Paths, read_token
from iofogd.errors import ConfigFileError, ServiceUnavailable
from iofogd.reports import EngineInfo, NetworkInfo, Report, status_report
from iofogd.state import AgentState
from iofogd.system.status import ResourceSampler

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Callable, Protocol

    from iofogd.bus.service import MessageBus

    class Provisioner(Protocol):
        def provision(self, key: str) -> str: ...      # returns the node uuid; raises ProvisionError
        def deprovision(self) -> str: ...              # returns the message; raises ProvisionError


class TokenFile:
    """The admin token in etc/iofog-agent/local-api.

    Re-read only when the file changes (stat per check), so an admin who
    replaces it is obeyed at once without a read per request. Compared exactly
    and in constant time (upstream compared case-insensitively, spec 1.5).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._token = ""

    def current(self) -> str:
        try:
            st = os.stat(self.path)
        except OSError:
            return ""
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            if stamp != self._stamp:
                try:
                    self._token = read_token(self.path)
                except ConfigFileError:
                    self._token = ""
                self._stamp = stamp
            return self._token

    def matches(self, presented: str) -> bool:
        token = self.current()
        if presented.startswith("Bearer "):
            presented = presented[len("Bearer "):]
        if not token or not presented:
            return False
        return hmac.compare_digest(presented.strip().encode(), token.encode())


def _no_bus() -> MessageBus:
    raise ServiceUnavailable("The message bus is not running")


class App:
    __slots__ = (
        "paths", "config", "state", "sampler", "token", "network", "fog_type", "engine", "provisioner",
        "prune", "bus",
    )
    paths: Paths
    config: ConfigStore
    state: AgentState
    sampler: ResourceSampler
    token: TokenFile
    network: Callable[[], NetworkInfo]
    fog_type: Callable[[], str]
    engine: Callable[[], EngineInfo]
    provisioner: Callable[[], Provisioner]   # waits for start-up phase 2 (iofogd.daemon)
    prune: Callable[[], int]
    bus: Callable[[], MessageBus]            # waits for start-up phase 2 (iofogd.daemon)

    def __init__(
        self,
        paths: Paths,
        config: ConfigStore,
        state: AgentState,
        sampler: ResourceSampler,
        token: TokenFile,
        network: Callable[[], NetworkInfo],
        fog_type: Callable[[], str],
        engine: Callable[[], EngineInfo],
        provisioner: Callable[[], Provisioner],
        prune: Callable[[], int],
        bus: Callable[[], MessageBus] | None = None,
    ) -> None:
        self.paths = paths
        self.config = config
        self.state = state
        self.sampler = sampler
        self.token = token
        self.network = network
        self.fog_type = fog_type
        self.engine = engine
        self.provisioner = provisioner
        self.prune = prune
        self.bus = bus if bus is not None else _no_bus

    def status(self) -> Report:
        """The status report (CLI ``status``, GET /v2/status)."""
        engine = self.engine()   # first: during start-up it waits, and the state then says RUNNING
        return status_report(self.state.snapshot(), self.sampler.snapshot(), engine, datetime.now())
