"""The daemon's side of the Controller: what sync reads and changes, and provisioning.

:class:`ControllerPort` implements :class:`iofogd.controller.sync.AgentPort`
over the daemon's own parts (config store, state, sampler, network watcher,
microservices, the control sockets' hub), and :class:`Provisioning` is the
App's provisioning (iofogd/app.py ``Phase2``). daemon.py builds both; nothing
here builds anything.

Two kinds of configuration pass through here, named apart: the agent's own
config (config.xml options: :meth:`ControllerPort.agent_config_body`,
:meth:`ControllerPort.apply_agent_config`) and each microservice's
configuration string (``apply_microservices``), which reaches that
microservice's control socket as 0x0C (docs/websocket.md#control) straight from here.
"""
from __future__ import annotations

import logging
import os
import threading
import time

from iofogd.config.store import ConfigStore
from iofogd.controller.agentconfig import agent_config_body, apply_agent_config
from iofogd.controller.client import ControllerClient
from iofogd.controller.provision import deprovision as tell_deprovision
from iofogd.controller.provision import provision as ask_provision
from iofogd.controller.sync import ControllerSettings, ControllerSync
from iofogd.errors import ConfigError, IofogdError, ProvisionError
from iofogd.state import CONTROLLER_NOT_PROVISIONED, CONTROLLER_OK, AgentState
from iofogd.system.network import NetworkWatcher
from iofogd.system.status import ResourceSampler

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Any, Callable, Optional, Protocol

    from iofogd.ws.control import ControlHub

log = logging.getLogger(__name__)

MIB = 1024 * 1024   # the status report to the Controller counts memory and disk in MiB

# Provisioning is a user action: give the Controller more time than a sync call.
PROVISION_TIMEOUTS = (10.0, 30.0)


if TYPE_CHECKING:
    class MicroserviceLayer(Protocol):
        """What the Controller side needs of the microservice layer (system/microservices.py)."""

        def set_desired(self, microservices: list[dict[str, Any]], registries: list[dict[str, Any]]) -> None: ...
        def statuses(self) -> list[dict[str, Any]]: ...
        def running_count(self) -> int: ...
        def stop_all(self) -> None: ...
        def prune_unused(self) -> int: ...

    class BusPort(Protocol):
        """What the Controller side needs of the message bus (bus/service.py)."""

        def set_microservices(self, items: list[dict[str, Any]]) -> None: ...   # routes, isConsumer
        def message_counts(self) -> tuple[list[dict[str, Any]], float]: ...

    class RouterPort(Protocol):
        """The router link (bus/router.py): its address follows the config (daemon.py)."""

        def reconnect(self) -> None: ...


class ControllerPort:
    """The AgentPort of the sync loops (see iofogd.controller.sync)."""

    def __init__(self, store: ConfigStore, state: AgentState, sampler: ResourceSampler,
                 network: NetworkWatcher, microservices: MicroserviceLayer, control: ControlHub,
                 clock: Callable[[], float] = time.time, bus: Optional[BusPort] = None,
                 router: Optional[RouterPort] = None) -> None:
        self.store = store
        self.state = state
        self.sampler = sampler
        self.network = network
        self.microservices = microservices
        self.control = control
        self.clock = clock
        # The message bus reads routes and isConsumer from the Controller's microservice
        # list and reports per-publisher counts; None when it is not running.
        self.bus = bus
        self.router = router   # the router link; None when the bus is not running
        self._lock = threading.Lock()
        # None until the Controller (or the offline cache) gave a list: the registries
        # come first in a changes cycle, and an empty list would tell the reconciler to
        # remove every container a restarted daemon is about to adopt (docs/docker.md#reconcile).
        self._microservices: Optional[list[dict[str, Any]]] = None
        self._registries: list[dict[str, Any]] = []

    def controller_settings(self) -> ControllerSettings:
        c = self.store.current
        cert = c.controller_cert if c.controller_cert and os.path.isfile(c.controller_cert) else None
        return ControllerSettings(
            controller_url=c.controller_url, controller_cert=cert, secure_mode=c.secure_mode,
            uuid=c.iofog_uuid, token=c.access_token,
            status_update_freq=float(c.status_update_freq), get_changes_freq=float(c.get_changes_freq),
        )

    def status_payload(self) -> dict[str, Any]:
        snap = self.state.snapshot()
        res = self.sampler.snapshot()
        cfg = self.store.current
        now_ms = int(self.clock() * 1000)
        facts: dict[str, Any] = {
            "daemonStatus": snap.daemon_status,
            "daemonOperatingDuration": now_ms - int(snap.started_at * 1000),
            "daemonLastStart": int(snap.started_at * 1000),
            "memoryUsage": res.memory_rss_bytes / MIB,
            "diskUsage": res.archive_bytes / MIB,
            "cpuUsage": res.cpu_percent,
            "memoryViolation": res.memory_rss_bytes > cfg.memory_limit_mb * MIB,
            "diskViolation": res.archive_bytes > cfg.disk_limit_gb * 1024 * MIB,
            "cpuViolation": res.cpu_percent > cfg.cpu_limit,
            "systemAvailableDisk": res.disk_available_bytes,
            "systemAvailableMemory": res.memory_available_bytes,
            "systemTotalCpu": res.system_cpu_percent,
            "ipAddress": self.network.current().address or "",
            "processedMessages": snap.messages_processed,
            "lastStatusTime": now_ms,
        }
        if self.bus is not None:
            facts["microserviceMessageCounts"], facts["messageSpeed"] = self.bus.message_counts()
        with self._lock:
            facts["repositoryCount"] = len(self._registries)
        facts["microserviceStatus"] = self.microservices.statuses()
        return facts

    def agent_config_body(self) -> dict[str, Any]:
        return agent_config_body(self.store.current, self.network.current().interface)

    def apply_agent_config(self, body: dict[str, Any]) -> None:
        report = apply_agent_config(self.store, body)   # origin: the Controller, not PATCHed back
        for flag, message in report.errors:
            log.warning("controller config -%s refused: %s", flag, message)

    def router_changed(self, body: dict[str, Any], reconnect: bool) -> None:
        # Only the router's two keys: on the first cycle the rest of the config is ours.
        apply_agent_config(self.store, {key: body.get(key) for key in ("routerHost", "routerPort")})
        if reconnect and self.router is not None:
            self.router.reconnect()   # the address itself reached the link through the store

    def apply_microservices(self, microservices: list[dict[str, Any]]) -> None:
        configs = {str(m["uuid"]): str(m.get("config") or "") for m in microservices if m.get("uuid")}
        self.set_microservice_configs(configs)
        if self.bus is not None:
            self.bus.set_microservices(microservices)
        with self._lock:
            self._microservices = list(microservices)
            registries = list(self._registries)
        self.microservices.set_desired(microservices, registries)

    def apply_registries(self, registries: list[dict[str, Any]]) -> None:
        with self._lock:
            self._registries = list(registries)
            microservices = self._microservices
        if microservices is not None:
            self.microservices.set_desired(list(microservices), registries)

    def set_microservice_configs(self, configs: dict[str, str]) -> list[str]:
        """Store each microservice's configuration; a new or changed one reaches that
        microservice's control sockets as 0x0C (docs/websocket.md#control). Returns the changed ids."""
        changed = self.state.set_microservice_configs(configs)
        for microservice_id in changed:
            self.control.signal_config(microservice_id)
        return changed

    def apply_edge_resources(self, resources: list[dict[str, Any]]) -> None:
        self.set_edge_resources(resources)

    def set_edge_resources(self, resources: list[Any]) -> bool:
        """Store the edge resources; when they changed, 0x0F to every control socket (docs/websocket.md#control)."""
        changed = self.state.set_edge_resources(resources)
        if changed:
            self.control.signal_edge_resources()
        return changed

    def prune(self) -> int:
        return self.microservices.prune_unused()

    def microservice_uuids(self) -> list[str]:
        with self._lock:
            return [str(m["uuid"]) for m in self._microservices or [] if m.get("uuid")]

    def deprovision_locally(self, reason: str) -> None:
        log.warning("deprovisioning locally: %s", reason)
        with self._lock:
            self._microservices = None   # the next node's list is not known yet
        self.set_microservice_configs({})
        if self.bus is not None:
            self.bus.set_microservices([])
        self.state.update(controller_status=CONTROLLER_NOT_PROVISIONED)
        # Before the identity is cleared: the containers to stop carry the old
        # uuid as their label (docs/controller-api.md#deprovisioning). Waiting for them here fixes upstream's
        # queued STOP tasks that never ran when the daemon was stopped right
        # after deprovisioning (PR #295 review).
        self.microservices.set_desired([], [])
        try:
            self.microservices.stop_all()
        except IofogdError as exc:
            # No engine is no reason to stay provisioned: leaving always works.
            log.warning("microservice containers not stopped: %s", exc)
        try:
            self.store.set_identity("", "")
        except ConfigError as exc:
            log.error("could not clear the node identity: %s", exc)

    def set_controller_state(self, state: str) -> None:
        self.state.update(controller_status=state)


class Provisioning:
    """The App's provisioner: ``provision <key>`` and ``deprovision`` (docs/controller-api.md#provisioning, #deprovisioning)."""

    def __init__(self, store: ConfigStore, port: ControllerPort, sync: ControllerSync) -> None:
        self.store = store
        self.port = port
        self.sync = sync
        self._busy = threading.Lock()   # one provisioning or deprovisioning at a time

    def _client(self, token: Optional[str]) -> ControllerClient:
        s = self.port.controller_settings()
        return ControllerClient(s.controller_url, token=token, cert_path=s.controller_cert,
                                secure_mode=s.secure_mode, connect_timeout=PROVISION_TIMEOUTS[0],
                                read_timeout=PROVISION_TIMEOUTS[1])

    def provision(self, key: str) -> str:
        if not self._busy.acquire(blocking=False):
            raise ProvisionError("Provisioning in progress")
        try:
            if self.port.controller_settings().provisioned:
                self._deprovision()  # upstream deprovisions first (docs/controller-api.md#provisioning)
            result = ask_provision(self._client(None), key, self.store.current.fog_type)
            if not result.ok:
                raise ProvisionError(result.error)
            try:
                self.store.set_identity(result.uuid, result.token)
            except ConfigError as exc:
                raise ProvisionError(f"Provisioned as {result.uuid} but could not store it: {exc}") from exc
            # The Controller has just answered (docs/controller-api.md#provisioning step 3: status OK). The sync's
            # own view is "not provisioned" (see _deprovision), so its next cycle
            # pings and reports whatever differs from this.
            self.port.set_controller_state(CONTROLLER_OK)
            self.sync.resync()
            return result.uuid
        finally:
            self._busy.release()

    def deprovision(self) -> str:
        if not self._busy.acquire(blocking=False):
            raise ProvisionError("Provisioning in progress")
        try:
            if not self.port.controller_settings().provisioned:
                raise ProvisionError("Failure - not provisioned")
            self._deprovision()
            return "Success - tokens, identifiers and keys removed"
        finally:
            self._busy.release()

    def _deprovision(self) -> None:
        settings = self.port.controller_settings()
        tell_deprovision(self._client(settings.token), self.port.microservice_uuids())
        self.port.deprovision_locally("deprovisioned by the admin")
        # Through the sync, not behind its back: it reports a state only when its
        # own view changes, so a stale "ok" there would hide the connection state
        # of the next provisioning. Without an identity this makes no call.
        self.sync.ping_once()
