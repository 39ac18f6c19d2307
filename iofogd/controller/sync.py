"""The agent's loops against the Controller: status, changes, liveness (docs/controller-api.md).

Theory of operation. Three threads, each stopped by one ``threading.Event``:

* status: every ``status_update_freq`` s, ``PUT agent/status`` with every field
  of docs/controller-api.md#status in the JSON types the Controller 3.0.4 validates
  (docs/controller-api.md#status; several fields are strings holding JSON). A 403
  means the node was removed: deprovision locally (upstream does the same).
* changes: every ``get_changes_freq`` s (sleep first, as upstream),
  ``GET agent/config/changes``, handle the flags (docs/controller-api.md#changes), then
  ``PATCH agent/config/changes`` echoing ``lastUpdated``. When a step fails, no
  PATCH is sent: the Controller keeps the flags and the next poll retries them
  all. The first cycle after start or provisioning fetches everything and
  pushes our config instead of taking the Controller's (docs/controller-api.md#changes).
  ``reboot``, ``version``, ``tunnel``, ``diagnostics`` and ``isImageSnapshot``
  are logged as not supported by iofogd and acknowledged. ``routerChanged``
  and the first cycle read ``routerHost`` and ``routerPort`` of ``GET
  agent/config`` (``router_changed``); on the flag the router link then
  connects again, even to the same address, as the Java agent does.
* liveness: every ``ping_freq`` s, ``GET status``. The first ping decides
  whether the offline cache (docs/controller-api.md#offline-cache) is loaded at start.

Every Controller call's outcome feeds the connection state shown by
``iofog-agent status``: ok / not provisioned / broken certificate / not
connected. A 5xx counts as not connected; a 4xx leaves the state alone (the
Controller answered) and is logged. When the state is not ok, the status and
changes loops ping first and skip their cycle if the ping fails, so the agent
recovers within one period once the Controller is back.

The daemon owns everything local and hands it in through :class:`AgentPort`.
Time: ``clock`` (epoch seconds) is injectable; the loops wait on Events with
the port's frequencies, so tests use small frequencies or call the
``*_once`` methods, which run one cycle synchronously.
Every call has connect and read timeouts (see :mod:`iofogd.controller.client`),
so a hung Controller delays a loop by at most those, never the agent.
"""
from __future__ import annotations

import json
import logging
import threading
import time

from iofogd import __version__
from iofogd.controller import cache as cachefiles
from iofogd.controller.cache import OfflineCache
from iofogd.controller.client import ControllerClient
from iofogd.errors import CertificateError, ControllerError, ControllerUnreachable, IofogdError
from iofogd.record import Record
from iofogd.state import (
    CONTROLLER_BROKEN_CERTIFICATE,
    CONTROLLER_NOT_CONNECTED,
    CONTROLLER_NOT_PROVISIONED,
    CONTROLLER_OK,
)

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Any, Callable, Final, Protocol

log = logging.getLogger(__name__)

PING_FREQ = 60.0  # docs/controller-api.md#loops
UNSUPPORTED_FLAGS = ("reboot", "version", "tunnel", "diagnostics", "isImageSnapshot")
MICROSERVICE_FLAGS = ("microserviceList", "microserviceConfig", "routing")


class ControllerSettings(Record):
    """What sync needs from config.xml, read afresh every cycle (so changes apply at once)."""

    __slots__ = (
        "controller_url", "controller_cert", "secure_mode", "uuid", "token", "status_update_freq",
        "get_changes_freq",
    )
    controller_url: Final[str]
    controller_cert: Final[str | None]
    secure_mode: Final[bool]
    uuid: Final[str]
    token: Final[str]
    status_update_freq: Final[float]  # seconds
    get_changes_freq: Final[float]  # seconds

    def __init__(
        self,
        controller_url: str,
        controller_cert: str | None,
        secure_mode: bool,
        uuid: str,
        token: str,
        status_update_freq: float,
        get_changes_freq: float,
    ) -> None:
        self.controller_url = controller_url
        self.controller_cert = controller_cert
        self.secure_mode = secure_mode
        self.uuid = uuid
        self.token = token
        self.status_update_freq = status_update_freq
        self.get_changes_freq = get_changes_freq

    @property
    def provisioned(self) -> bool:
        return bool(self.uuid and self.token)

    def __repr__(self) -> str:  # the token never reaches a log line
        return f"ControllerSettings(controller_url={self.controller_url!r}, uuid={self.uuid!r})"


if TYPE_CHECKING:
    class AgentPort(Protocol):
        """What the daemon gives the sync loops. Every method is called from a sync thread."""

        def controller_settings(self) -> ControllerSettings:
            """The current identity, Controller address and loop frequencies."""

        def status_payload(self) -> dict[str, Any]:
            """The status facts the daemon knows, as Python values; :func:`build_status` types them.

            Known keys (any may be missing; unknown keys are dropped): ``daemonStatus``,
            ``daemonOperatingDuration`` (ms), ``daemonLastStart`` (epoch ms), ``memoryUsage``
            (MiB), ``diskUsage``, ``cpuUsage`` (%), ``memoryViolation``, ``diskViolation``,
            ``cpuViolation``, ``systemAvailableDisk``, ``systemAvailableMemory`` (bytes),
            ``systemTotalCpu`` (%), ``ipAddress``, ``processedMessages``, ``messageSpeed``,
            ``lastStatusTime`` (epoch ms), ``repositoryCount``, and as lists of dicts
            ``microserviceStatus`` (``id``, ``status``, ``percentage``, ``containerId``,
            ``startTime``, ``operatingDuration``, ``cpuUsage``, ``memoryUsage``,
            ``errorMessage``), ``repositoryStatus`` and ``microserviceMessageCounts``
            (``id``, ``messagecount``).
            """

        def agent_config_body(self) -> dict[str, Any]:
            """The ``PATCH agent/config`` body (docs/controller-api.md#config-sync): the agent's own config in the Controller's keys."""

        def apply_agent_config(self, body: dict[str, Any]) -> None:
            """Apply ``GET agent/config`` (the agent's own config) through the schema's validation
            (docs/controller-api.md#config-sync), as a change from the Controller: it is not PATCHed back."""

        def router_changed(self, body: dict[str, Any], reconnect: bool) -> None:
            """``routerChanged`` (and the first cycle): take ``routerHost``/``routerPort`` from
            ``GET agent/config`` and, with ``reconnect``, connect to the router again (docs/controller-api.md#changes)."""

        def apply_microservices(self, microservices: list[dict[str, Any]]) -> None:
            """The Controller's full microservice list (docs/controller-api.md#microservices): reconcile, update configs (0x0C)."""

        def apply_registries(self, registries: list[dict[str, Any]]) -> None:
            """The registries the microservices' images come from."""

        def apply_edge_resources(self, resources: list[dict[str, Any]]) -> None:
            """The node's edge resources: store and signal 0x0F when they changed."""

        def prune(self) -> int:
            """Remove unused images on the Controller's request; returns the bytes reclaimed."""

        def deprovision_locally(self, reason: str) -> None:
            """Forget uuid and token and stop the microservices; the Controller is not called."""

        def set_controller_state(self, state: str) -> None:
            """One of ``ok``, ``not provisioned``, ``broken certificate``, ``not connected``."""


# -- the status payload (docs/controller-api.md#status) --------------------------------------------

# Field -> JSON type the Controller validates: "int" (>= 0 unless noted), "num", "bool",
# "str", or "json" (a string holding a JSON array). Order as the Java agent sends them.
STATUS_TYPES: dict[str, str] = {
    "daemonStatus": "str", "daemonOperatingDuration": "int", "daemonLastStart": "int",
    "memoryUsage": "num", "diskUsage": "num", "cpuUsage": "num", "memoryViolation": "bool",
    "diskViolation": "bool", "cpuViolation": "bool", "systemAvailableDisk": "int",
    "systemAvailableMemory": "int", "systemTotalCpu": "num", "microserviceStatus": "json",
    "repositoryCount": "int", "repositoryStatus": "json", "systemTime": "int", "lastStatusTime": "int",
    "ipAddress": "str", "ipAddressExternal": "str", "processedMessages": "int",
    "microserviceMessageCounts": "json", "messageSpeed": "num", "lastCommandTime": "int",
    "tunnelStatus": "str", "version": "str", "isReadyToUpgrade": "bool", "isReadyToRollback": "bool",
}
# Tunnels are not supported; upstream's placeholder object, as a string (docs/controller-api.md#status).
TUNNEL_STATUS = json.dumps(
    {"username": "-", "host": "-", "rport": "-", "lport": "-", "status": "CLOSED", "errormessage": "-"},
    separators=(",", ":"),
)
MICROSERVICE_STATUS_TYPES = {
    "id": "str", "containerId": "str", "status": "str", "startTime": "int", "operatingDuration": "int",
    "cpuUsage": "num", "memoryUsage": "num", "percentage": "num", "errorMessage": "str",
}


def _coerce(kind: str, value: Any) -> Any:
    if kind == "str":
        return str(value)
    if kind == "bool":
        return bool(value)
    if kind == "int":
        # The Controller's schema has minimum 0 on most integers and rejects fractions.
        return max(0, int(value))
    if kind == "num":
        number = float(value)
        return max(0.0, number) if number == number else 0.0  # NaN -> 0
    if isinstance(value, str):  # already JSON text: keep it if it is an array
        value = json.loads(value)
    if not isinstance(value, list):
        raise ValueError("not a JSON array")
    return json.dumps(value, separators=(",", ":"))


def _typed(item: dict[str, Any], types: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, kind in types.items():
        value = item.get(key)
        if value is None:
            continue
        try:
            out[key] = _coerce(kind, value)
        except (TypeError, ValueError):
            log.warning("status field %s dropped: %r is not %s", key, value, kind)
    return out


def build_status(facts: dict[str, Any], now_ms: int, version: str = __version__) -> dict[str, Any]:
    """The ``PUT agent/status`` body: ``facts`` typed, the rest filled; pure.

    ``microserviceStatus`` is always present: without it the Controller 3.0.4
    answers 500 (docs/controller-api.md#status).
    """
    defaults: dict[str, Any] = {
        "daemonStatus": "RUNNING", "daemonOperatingDuration": 0, "daemonLastStart": 0, "memoryUsage": 0.0,
        "diskUsage": 0.0, "cpuUsage": 0.0, "memoryViolation": False, "diskViolation": False,
        "cpuViolation": False, "systemAvailableDisk": 0, "systemAvailableMemory": 0, "systemTotalCpu": 0.0,
        "microserviceStatus": [], "repositoryCount": 0, "repositoryStatus": [], "systemTime": now_ms,
        "lastStatusTime": now_ms, "ipAddress": "", "ipAddressExternal": "", "processedMessages": 0,
        "microserviceMessageCounts": [], "messageSpeed": 0.0, "lastCommandTime": 0,
        "tunnelStatus": TUNNEL_STATUS, "version": version, "isReadyToUpgrade": False, "isReadyToRollback": False,
    }
    merged = {**defaults, **{k: v for k, v in facts.items() if k in STATUS_TYPES and v is not None}}
    merged["systemTime"] = now_ms  # ours, never the daemon's
    merged["microserviceStatus"] = [
        _typed(item, MICROSERVICE_STATUS_TYPES)
        for item in (merged["microserviceStatus"] if isinstance(merged["microserviceStatus"], list) else [])
        if isinstance(item, dict) and item.get("id")
    ]
    typed = _typed(merged, STATUS_TYPES)
    for key, value in defaults.items():  # a fact that failed to convert falls back to its default
        typed.setdefault(key, _coerce(STATUS_TYPES[key], value))
    return {key: typed[key] for key in STATUS_TYPES}


# -- the loops ---------------------------------------------------------------------------------


def state_for(exc: ControllerError) -> str | None:
    """The connection state a failure implies; None when the Controller did answer (a 4xx)."""
    if isinstance(exc, CertificateError):
        return CONTROLLER_BROKEN_CERTIFICATE
    if isinstance(exc, ControllerUnreachable) or exc.status is None or exc.status >= 500:
        return CONTROLLER_NOT_CONNECTED
    return None


class ControllerSync:
    """The status, changes and liveness loops for one agent (see the module docstring)."""

    def __init__(
        self,
        port: AgentPort,
        *,
        cache: OfflineCache | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        ping_freq: float = PING_FREQ,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.port = port
        self.cache = cache
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.ping_freq = ping_freq
        self.clock = clock
        self._stop = threading.Event()
        self._wake = {name: threading.Event() for name in ("status", "changes", "ping")}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._changes_lock = threading.Lock()
        self._state: str | None = None
        self._initial = True  # the first changes cycle fetches everything (docs/controller-api.md#changes)
        self._config_dirty = False
        self._client_key: tuple[str, str | None, bool, str] | None = None
        self._client: ControllerClient | None = None
        self._last_error: str | None = None
        self._started_ping = False

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the three threads; returns at once (the Local API never waits for the Controller)."""
        self._stop.clear()
        for event in self._wake.values():
            event.clear()
        loops: list[tuple[str, Callable[[], object], Callable[[], float], bool]] = [
            ("ping", self._first_ping_then_ping, lambda: self.ping_freq, False),
            ("status", self.status_once, lambda: self.port.controller_settings().status_update_freq, False),
            ("changes", self.changes_once, lambda: self.port.controller_settings().get_changes_freq, True),
        ]
        for name, step, period, sleep_first in loops:
            thread = threading.Thread(
                target=self._run, args=(name, step, period, sleep_first), name=f"controller-{name}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loops; a call in flight ends within its timeouts."""
        self._stop.set()
        for event in self._wake.values():
            event.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    def resync(self) -> None:
        """After provisioning: push our config, fetch everything, report status now."""
        with self._lock:
            self._initial = True
            self._config_dirty = True
        self._wake["changes"].set()
        self._wake["status"].set()

    def config_changed(self) -> None:
        """After a local config change: PATCH agent/config soon (docs/controller-api.md#config-sync); never blocks."""
        with self._lock:
            self._config_dirty = True
        self._wake["changes"].set()

    @property
    def state(self) -> str | None:
        return self._state

    def _run(self, name: str, step: Callable[[], object], period: Callable[[], float], sleep_first: bool) -> None:
        wake = self._wake[name]
        if sleep_first:
            self._sleep(wake, period)
        while not self._stop.is_set():
            try:
                step()
            except Exception:  # a bug in one cycle must not end the loop
                log.exception("controller %s cycle failed", name)
            self._sleep(wake, period)

    def _sleep(self, wake: threading.Event, period: Callable[[], float]) -> None:
        try:
            seconds = max(0.01, float(period()))
        except Exception:
            log.exception("no loop period; using 10 s")
            seconds = 10.0
        wake.wait(seconds)
        wake.clear()

    # -- plumbing ---------------------------------------------------------------------------------

    def _set_state(self, state: str) -> None:
        with self._lock:
            changed = state != self._state
            self._state = state
        if changed:
            log.info("connection to controller: %s", state)
            self.port.set_controller_state(state)

    def _client_for(self, settings: ControllerSettings) -> ControllerClient:
        key = (settings.controller_url, settings.controller_cert, settings.secure_mode, settings.token)
        with self._lock:
            if self._client is None or self._client_key != key:
                self._client = ControllerClient(
                    settings.controller_url, token=settings.token or None, cert_path=settings.controller_cert,
                    secure_mode=settings.secure_mode, connect_timeout=self.connect_timeout,
                    read_timeout=self.read_timeout,
                )
                self._client_key = key
            return self._client

    def _failed(self, what: str, exc: ControllerError) -> None:
        state = state_for(exc)
        if state is not None:
            self._set_state(state)
        text = f"{what}: {exc.message}" + (f" (HTTP {exc.status})" if exc.status else "")
        if exc.status == 401:
            text += ": the Controller refused this node's token; provision again"
        # Log a repeated failure once, not every cycle.
        if text != self._last_error:
            log.warning("%s", text)
            self._last_error = text

    def _succeeded(self) -> None:
        self._last_error = None
        self._set_state(CONTROLLER_OK)

    def _ready(self) -> tuple[ControllerSettings, ControllerClient] | None:
        """Settings and client when provisioned and connected (pinging first if needed)."""
        settings = self.port.controller_settings()
        if not settings.provisioned:
            self._set_state(CONTROLLER_NOT_PROVISIONED)
            return None
        client = self._client_for(settings)
        if self._state != CONTROLLER_OK and not self._ping(client):
            return None
        return settings, client

    def _ping(self, client: ControllerClient) -> bool:
        try:
            client.ping()
        except ControllerError as exc:
            self._failed("controller ping failed", exc)
            if state_for(exc) is None:
                self._set_state(CONTROLLER_NOT_CONNECTED)  # a 4xx on GET status is no Controller
            return False
        self._succeeded()
        return True

    # -- liveness (docs/controller-api.md#loops "Ping") ---------------------------------------

    def ping_once(self) -> bool:
        """GET status; True when the Controller is up. Sets the connection state."""
        settings = self.port.controller_settings()
        if not settings.provisioned:
            self._set_state(CONTROLLER_NOT_PROVISIONED)
            return False
        return self._ping(self._client_for(settings))

    def _first_ping_then_ping(self) -> None:
        first = not self._started_ping
        self._started_ping = True
        if not self.ping_once() and first and self.port.controller_settings().provisioned:
            self.load_offline_cache()

    def load_offline_cache(self) -> bool:
        """Hand the cached registries, microservices and edge resources to the daemon (docs/controller-api.md#offline-cache)."""
        if self.cache is None:
            return False
        loaded = False
        for name, apply in (
            (cachefiles.REGISTRIES, self.port.apply_registries),
            (cachefiles.MICROSERVICES, self.port.apply_microservices),
            (cachefiles.EDGE_RESOURCES, self.port.apply_edge_resources),
        ):
            data = self.cache.load(name)
            if data is not None:
                log.info("controller unreachable: using the cached %s", name)
                apply(data)
                loaded = True
        return loaded

    # -- status (docs/controller-api.md#status) ----------------------------------------------

    def status_once(self) -> bool:
        """PUT agent/status once; True when the Controller took it."""
        ready = self._ready()
        if ready is None:
            return False
        _, client = ready
        payload = build_status(self.port.status_payload(), int(self.clock() * 1000))
        try:
            client.put_status(payload)
        except ControllerError as exc:
            if exc.status == 403:
                # docs/controller-api.md#client: the node was removed from the Controller.
                log.warning("controller answered 403 to the status: node removed, deprovisioning locally")
                self.port.deprovision_locally("the Controller answered 403 Forbidden to the status report")
                self._set_state(CONTROLLER_NOT_PROVISIONED)
                return False
            self._failed("status report refused", exc)
            return False
        self._succeeded()
        return True

    # -- changes (docs/controller-api.md#changes, #config-sync) --------------------------------

    def changes_once(self) -> bool:
        """One changes cycle; True when everything was handled and acknowledged."""
        with self._changes_lock:
            ready = self._ready()
            if ready is None:
                return False
            _, client = ready
            with self._lock:
                initial, dirty = self._initial, self._config_dirty
            if (initial or dirty) and not self._push_config(client):
                return False
            try:
                changes = client.get_changes()
            except ControllerError as exc:
                self._failed("changes poll failed", exc)
                return False
            self._succeeded()
            if changes.get("deleteNode"):
                self._delete_node(client)
                return False
            if not self._process(client, changes, initial):
                return False  # no PATCH: the Controller keeps the flags and we retry next poll
            last_updated = changes.get("lastUpdated")
            if isinstance(last_updated, str) and last_updated:
                try:
                    client.ack_changes(last_updated)
                except ControllerError as exc:
                    self._failed("changes not acknowledged", exc)
                    return False
            with self._lock:
                self._initial = False
            return True

    def _push_config(self, client: ControllerClient) -> bool:
        try:
            client.patch_config(self.port.agent_config_body())
        except ControllerError as exc:
            self._failed("config not sent to the controller", exc)
            return False
        with self._lock:
            self._config_dirty = False
        return True

    def _delete_node(self, client: ControllerClient) -> None:
        log.warning("the Controller asked to delete this node")
        try:
            client.delete_node()
        except ControllerError as exc:
            self._failed("delete-node call failed", exc)
        self.port.deprovision_locally("the Controller asked to delete this node (deleteNode)")
        self._set_state(CONTROLLER_NOT_PROVISIONED)

    def _process(self, client: ControllerClient, changes: dict[str, Any], initial: bool) -> bool:
        for flag in UNSUPPORTED_FLAGS:
            if changes.get(flag):
                log.info("controller requested %s: not supported by iofogd, ignored", flag)
        steps: list[tuple[str, Callable[[], None]]] = []
        if changes.get("config") and not initial:  # on the first cycle our config was pushed instead
            steps.append(("config", lambda: self.port.apply_agent_config(client.get_config())))
        if changes.get("routerChanged") or initial:
            # The router's address, also on the first cycle (whose config is ours, pushed):
            # a node joins its router network from provisioning on.
            steps.append(("routerChanged", lambda: self.port.router_changed(client.get_config(), not initial)))
        if changes.get("registries") or initial:
            steps.append(("registries", lambda: self._fetch(
                client.get_registries, self.port.apply_registries, cachefiles.REGISTRIES)))
        if changes.get("prune"):
            steps.append(("prune", lambda: log.info("pruned on request: %d bytes reclaimed", self.port.prune())))
        if any(changes.get(flag) for flag in MICROSERVICE_FLAGS) or initial:
            steps.append(("microservices", lambda: self._fetch(
                client.get_microservices, self.port.apply_microservices, cachefiles.MICROSERVICES)))
        if changes.get("linkedEdgeResources") or initial:
            steps.append(("edge resources", lambda: self._fetch(
                client.get_edge_resources, self.port.apply_edge_resources, cachefiles.EDGE_RESOURCES)))
        ok = True
        for name, step in steps:
            try:
                step()
            except ControllerError as exc:
                self._failed(f"{name} change not applied", exc)
                ok = False
                if state_for(exc) is not None:
                    break  # the Controller is gone: the remaining steps would fail the same way
            except IofogdError as exc:
                # e.g. no Docker engine for a prune: expected, kept for the next cycle
                log.warning("%s change not applied: %s", name, exc)
                ok = False
            except Exception:
                log.exception("%s change not applied", name)
                ok = False
        return ok

    def _fetch(
        self,
        get: Callable[[], list[dict[str, Any]]],
        apply: Callable[[list[dict[str, Any]]], None],
        cache_name: str,
    ) -> None:
        items = get()
        apply(items)
        if self.cache is not None:
            # rebuild is a one-shot request the Controller clears with this GET
            # (docs/controller-api.md#microservices): a cached copy must not replay it at start.
            self.cache.save(cache_name, [dict(i, rebuild=False) if isinstance(i, dict) and i.get("rebuild") else i
                                         for i in items])
