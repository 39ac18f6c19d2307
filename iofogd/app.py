"""The App: every service a request handler may use, built by daemon.py.

Handlers receive the App as an argument and never build anything themselves.
"""
from __future__ import annotations

from datetime import datetime

from iofogd.admintoken import TokenFile
from iofogd.config.store import ConfigStore
from iofogd.paths import Paths
from iofogd.reports import EngineInfo, Report, status_report
from iofogd.state import AgentState
from iofogd.system.network import NetworkInfo
from iofogd.system.status import ResourceSampler

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Callable, Protocol

    class Provisioner(Protocol):
        def provision(self, key: str) -> str: ...      # returns the node uuid; raises ProvisionError
        def deprovision(self) -> str: ...              # returns the message; raises ProvisionError


class App:
    __slots__ = (
        "paths", "config", "state", "sampler", "token", "network", "fog_type", "engine", "provisioner",
        "prune",
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

    def status(self) -> Report:
        """The status report (CLI ``status``, GET /v2/status)."""
        engine = self.engine()   # first: during start-up it waits, and the state then says RUNNING
        return status_report(self.state.snapshot(), self.sampler.snapshot(), engine, datetime.now())
