"""The reconciler: the Controller's microservice list in, containers out (docs/docker.md#containers, #reconcile, #stop).

Each pass reads the engine's containers afresh and compares them with the list
last given to :meth:`Microservices.set_desired`, so the engine is the only
record of what runs: a daemon that restarts finds its containers and adopts
them (``iofog_<uuid>`` with label ``iofog-uuid=<node uuid>``); stopping the
daemon leaves them running (docs/compatibility.md). In memory are only what the
engine cannot tell: statuses and pull progress, pending ``rebuild`` requests
(the Controller clears the flag after one GET, docs/controller-api.md#microservices),
restart back-off and the stuck verdict.

Per microservice, one pass does at most one of: pull + create + start a
missing container; remove + recreate one whose ports, network mode or image
no longer match, or whose ``rebuild`` was requested; start a dead one (with
exponential back-off; after ``stuck_after`` restarts within ``stuck_window``
seconds it is STUCK_IN_RESTART and left alone until its entry in the list
changes); remove one marked ``delete``. Containers of this node that the list
no longer names are removed (the Controller deletes by absence). Containers of
other nodes sharing the engine are never touched (upstream removed them).

An absent or dead engine is reported (:meth:`engine_ok`, statuses UNKNOWN with
the reason) and retried on the next pass; nothing raises out of a pass.
"""
from __future__ import annotations

import json
import logging
import threading
import time

from iofogd.errors import DockerError, EngineUnavailable
from iofogd.system import dockerproto as proto
from iofogd.system.docker import DockerClient
from iofogd.system.identity import ContainerAddresses, addresses_of

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

log = logging.getLogger(__name__)

FROM_CACHE = "from_cache"   # the registry url meaning "never pull" (docs/controller-api.md#endpoints)


class _Entry:
    __slots__ = (
        "status", "percentage", "error", "container_id", "start_ms", "cpu", "memory", "cpu_sample",
        "spec", "rebuild", "stuck", "restarts", "failures", "next_try",
    )
    status: str
    percentage: float
    error: Optional[str]
    container_id: Optional[str]
    start_ms: Optional[int]
    cpu: float
    memory: int
    cpu_sample: Optional[tuple[int, int, int]]
    spec: str  # the list item as JSON, to see it change
    rebuild: bool
    stuck: bool
    restarts: list[float]
    failures: int
    next_try: float

    def __init__(
        self,
        status: str = "QUEUED",
        percentage: float = 0.0,
        error: Optional[str] = None,
        container_id: Optional[str] = None,
        start_ms: Optional[int] = None,
        cpu: float = 0.0,
        memory: int = 0,
        cpu_sample: Optional[tuple[int, int, int]] = None,
        spec: str = "",
        rebuild: bool = False,
        stuck: bool = False,
        restarts: list[float] | None = None,
        failures: int = 0,
        next_try: float = 0.0,
    ) -> None:
        self.status = status
        self.percentage = percentage
        self.error = error
        self.container_id = container_id
        self.start_ms = start_ms
        self.cpu = cpu
        self.memory = memory
        self.cpu_sample = cpu_sample
        self.spec = spec
        self.rebuild = rebuild
        self.stuck = stuck
        self.restarts = [] if restarts is None else restarts
        self.failures = failures
        self.next_try = next_try


class Microservices:
    """Runs the Controller's microservices as containers on one Docker engine."""

    def __init__(
        self,
        client_factory: Callable[[], DockerClient],
        *,
        node_uuid: str,
        agent_address: str,
        time_zone: str,
        clock: Callable[[], float] = time.time,
        stop_timeout: int = 10,
        backoff_base: float = 2.0,
        backoff_max: float = 60.0,
        stuck_after: int = 10,
        stuck_window: float = 600.0,
        stats_interval: float = 5.0,
        addresses: Optional[ContainerAddresses] = None,
    ) -> None:
        self._factory = client_factory
        # Who is calling the Local API (iofogd.system.identity): fed from the
        # engine calls each pass makes anyway, never a call of its own.
        self.addresses = addresses if addresses is not None else ContainerAddresses()
        self.node_uuid = node_uuid
        self.agent_address = agent_address
        self.time_zone = time_zone
        self._clock = clock
        self.stop_timeout = stop_timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.stuck_after = stuck_after
        self.stuck_window = stuck_window
        self.stats_interval = stats_interval
        self._lock = threading.Lock()       # guards the fields below
        self._run_lock = threading.Lock()   # one engine-changing operation at a time
        self._desired: Optional[dict[str, dict[str, Any]]] = None   # None: no list yet
        self._registries: dict[int, dict[str, Any]] = {}
        self._entries: dict[str, _Entry] = {}
        self._engine_ok: Optional[bool] = None
        self._engine_error: Optional[str] = "the Docker engine has not been contacted yet"
        self._running = 0
        self._sampled_at = float("-inf")
        self._wake = threading.Event()

    # -- inputs ----------------------------------------------------------------

    def set_desired(self, microservices: list[dict[str, Any]], registries: list[dict[str, Any]]) -> None:
        """The Controller's ``agent/microservices`` and ``agent/registries`` items (docs/controller-api.md#microservices)."""
        desired = {}
        for ms in microservices:
            if not ms.get("uuid") or not ms.get("imageId"):
                log.warning("ignoring a microservice without uuid or imageId: %.200s", json.dumps(ms))
                continue
            desired[str(ms["uuid"])] = ms
        with self._lock:
            for uuid, ms in desired.items():
                entry = self._entries.setdefault(uuid, _Entry())
                spec = json.dumps(ms, sort_keys=True)
                if spec != entry.spec:
                    # a changed item is a reloaded list: forget the stuck verdict (7.3)
                    entry.spec, entry.stuck, entry.failures, entry.next_try = spec, False, 0, 0.0
                    entry.restarts.clear()
                    # the Controller sends rebuild=true once, then false
                    # (docs/controller-api.md#microservices); the same list given again is no second request
                    entry.rebuild = entry.rebuild or bool(ms.get("rebuild"))
            for uuid in set(self._entries) - set(desired):
                del self._entries[uuid]
            self._desired = desired
            self._registries = {int(r["id"]): r for r in registries if r.get("id") is not None}
        self._wake.set()

    # -- outputs ---------------------------------------------------------------

    def statuses(self) -> list[dict[str, Any]]:
        """The ``microserviceStatus`` items of PUT agent/status (docs/controller-api.md#status); no engine call."""
        now_ms = int(self._clock() * 1000)
        with self._lock:
            return [
                proto.status_item(
                    uuid, e.status, e.percentage, container_id=e.container_id, start_time_ms=e.start_ms,
                    now_ms=now_ms, cpu=e.cpu, memory=e.memory, error=e.error,
                )
                for uuid, e in sorted(self._entries.items())
            ]

    def running_count(self) -> int:
        with self._lock:
            return self._running

    def engine_ok(self) -> bool:
        with self._lock:
            return bool(self._engine_ok)

    def engine_error(self) -> Optional[str]:
        with self._lock:
            return None if self._engine_ok else self._engine_error

    # -- the loop --------------------------------------------------------------

    def run(self, stop: threading.Event, interval: float) -> None:
        """Reconcile every ``interval`` seconds (at once after set_desired) until ``stop``."""
        while not stop.is_set():
            self._wake.clear()
            try:
                self.reconcile_once()
            except Exception:   # a bug must not end the loop: log it, go on
                log.exception("microservice reconciliation failed")
            deadline = time.monotonic() + interval
            while not stop.is_set() and not self._wake.is_set() and time.monotonic() < deadline:
                stop.wait(min(0.25, max(0.0, deadline - time.monotonic())))

    def poke(self) -> None:
        """Reconcile now rather than at the next interval (e.g. ``docker_url`` changed)."""
        self._wake.set()

    def reconcile_once(self) -> None:
        """One pass over the list; engine trouble is recorded, never raised."""
        with self._run_lock:
            client = self._factory()
            try:
                containers = client.list_containers(all=True)
                self._engine_up()
                with self._lock:
                    desired = dict(self._desired) if self._desired is not None else None
                if desired is not None:
                    ours = {_name(c): c for c in containers}
                    for uuid, ms in desired.items():
                        self._reconcile_one(client, ms, ours.get(proto.container_name(uuid)))
                    self._remove_leftovers(client, containers, desired)
                    containers = client.list_containers(all=True)
                self.addresses.replace((_name(c)[len(proto.NAME_PREFIX):], str(c["Id"]), addresses_of(c))
                                       for c in self._running_ours(containers))
                self._refresh_usage(client, containers)
            except DockerError as exc:
                if not isinstance(exc, EngineUnavailable) and self._engine_ok:
                    log.warning("docker: %s", exc)
                self._engine_down(exc)

    # -- one microservice ------------------------------------------------------

    def _reconcile_one(self, client: DockerClient, ms: dict[str, Any], item: Optional[dict[str, Any]]) -> None:
        uuid = str(ms["uuid"])
        entry = self._entry(uuid)
        try:
            if ms.get("delete") or ms.get("deleteWithCleanup"):
                if item is not None:
                    self._update(entry, status="DELETING")
                    self._remove(client, item["Id"], ms, cleanup=bool(ms.get("deleteWithCleanup")))
                self._update(entry, status="DELETED", container_id=None, error=None)
                return
            if entry.stuck:
                return
            inspect = client.inspect_container(item["Id"]) if item is not None else None
            now = self._clock()
            if inspect is None:
                if now >= entry.next_try:
                    self._deploy(client, ms, entry)
                return
            reason = self._recreate_reason(ms, entry, inspect)
            if reason:
                if now < entry.next_try:
                    return
                log.info("recreating %s: %s", proto.container_name(uuid), reason)
                self._update(entry, status="UPDATING")
                self._remove(client, inspect["Id"], ms, cleanup=False)
                with self._lock:
                    entry.rebuild = False
                self._deploy(client, ms, entry)
                return
            self._observe(client, ms, entry, inspect, now)
        except EngineUnavailable:
            raise
        except DockerError as exc:
            self._fail(entry, str(exc.message))

    def _recreate_reason(self, ms: dict[str, Any], entry: _Entry, inspect: dict[str, Any]) -> Optional[str]:
        if entry.rebuild:
            return "rebuild requested"
        labels = (inspect.get("Config") or {}).get("Labels") or {}
        if labels.get(proto.LABEL_NODE) != self.node_uuid:
            return "container carries another node's label"
        return proto.needs_recreate(ms, inspect)

    def _observe(self, client: DockerClient, ms: dict[str, Any], entry: _Entry,
                 inspect: dict[str, Any], now: float) -> None:
        """An existing, matching container: adopt it, or restart it with back-off."""
        state = proto.container_state(inspect)
        started = proto.started_at(inspect)
        self._update(entry, container_id=inspect["Id"], start_ms=started, percentage=100.0)
        if state == "RUNNING":
            self._update(entry, status="RUNNING", error=None)
            return
        with self._lock:
            entry.restarts[:] = [t for t in entry.restarts if now - t < self.stuck_window]
            count = len(entry.restarts)
        exit_code = (inspect.get("State") or {}).get("ExitCode")
        if count >= self.stuck_after:
            message = (f"container {proto.container_name(str(ms['uuid']))} exited {count} times within "
                       f"{int(self.stuck_window)} s (last exit code {exit_code})")
            log.warning("stuck in restart: %s", message)
            self._update(entry, status="STUCK_IN_RESTART", error=message, stuck=True)
            return
        self._update(entry, status=state)
        if now < entry.next_try:
            return
        log.info("restarting %s (%s, exit code %s)", proto.container_name(str(ms["uuid"])), state, exit_code)
        with self._lock:
            entry.restarts.append(now)
            entry.next_try = now + self._backoff(len(entry.restarts))
        self._update(entry, status="RESTARTING")
        self._start(client, entry, str(inspect["Id"]))

    def _deploy(self, client: DockerClient, ms: dict[str, Any], entry: _Entry) -> None:
        """Pull (falling back to a local image), create and start (docs/docker.md#containers)."""
        uuid, image = str(ms["uuid"]), str(ms["imageId"])
        name = proto.container_name(uuid)
        self._update(entry, status="PULLING", percentage=0.0, error=None, container_id=None, start_ms=None)
        with self._lock:
            registry = self._registries.get(int(ms.get("registryId") or 0))
        if registry is not None and registry.get("url") == FROM_CACHE:
            if client.inspect_image(image) is None:
                raise DockerError(404, f"Image not found in local cache: {image}")
        else:
            try:
                client.pull(image, self._auth(registry), lambda p: self._update(entry, percentage=p))
            except EngineUnavailable:
                raise
            except DockerError as exc:
                if client.inspect_image(image) is None:
                    raise DockerError(exc.status, f"Image not found in local cache: {exc.message}") from exc
                log.warning("pull of %s failed (%s); using the local image", image, exc.message)
        self._update(entry, status="CREATING", percentage=100.0)
        config = proto.container_config(ms, node_uuid=self.node_uuid, agent_address=self.agent_address,
                                        time_zone=self.time_zone)
        try:
            container_id = client.create_container(name, config)
        except DockerError as exc:
            if exc.status != 409:
                raise
            # a container of that name the listing did not show us (created meanwhile)
            client.remove_container(name, force=True)
            container_id = client.create_container(name, config)
        # A container made from this list item satisfies a pending rebuild request:
        # without this, a new microservice (the Controller sends rebuild=true with its
        # first list, docs/controller-api.md#microservices) was created, then recreated a pass later.
        self._update(entry, status="STARTING", container_id=container_id, rebuild=False)
        self._start(client, entry, container_id)
        self._update(entry, failures=0)
        log.info("started %s (%s) from %s", name, container_id[:12], image)

    def _start(self, client: DockerClient, entry: _Entry, container_id: str) -> None:
        """Start, then record the state and start time the engine reports."""
        client.start_container(container_id)
        inspect = client.inspect_container(container_id) or {}
        started = proto.started_at(inspect)
        self._update(entry, status=proto.container_state(inspect), start_ms=started)
        name = str(inspect.get("Name") or "").lstrip("/")
        if name.startswith(proto.NAME_PREFIX):   # its caller identity from now, not the next pass
            self.addresses.learn(name[len(proto.NAME_PREFIX):], container_id, addresses_of(inspect))

    @staticmethod
    def _auth(registry: Optional[dict[str, Any]]) -> Optional[str]:
        if registry is None or registry.get("isPublic", True):
            return None
        return proto.registry_auth_header(str(registry.get("username") or ""), str(registry.get("password") or ""),
                                          str(registry.get("userEmail") or ""), str(registry.get("url") or ""))

    def _remove(self, client: DockerClient, ref: str, ms: Optional[dict[str, Any]], *, cleanup: bool) -> None:
        """Stop (gracefully, ``stop_timeout``) and remove; with cleanup also volumes and image."""
        try:
            client.stop_container(ref, self.stop_timeout)
        except EngineUnavailable:
            raise
        except DockerError as exc:
            if exc.status != 404:
                log.info("stop of %s failed (%s); removing it by force", ref[:12], exc.message)
        client.remove_container(ref, force=True, volumes=cleanup)
        self.addresses.forget(ref)
        if cleanup and ms is not None:
            for vol in ms.get("volumeMappings") or []:
                if vol.get("type") == "volume":
                    self._quietly(client.remove_volume, str(vol["hostDestination"]))
            self._quietly(client.remove_image, str(ms["imageId"]))

    @staticmethod
    def _quietly(action: Callable[[str], Any], ref: str) -> None:
        """Clean-up that may be refused (still in use): log, never fail the removal."""
        try:
            action(ref)
        except EngineUnavailable:
            raise
        except DockerError as exc:
            log.info("clean-up of %s skipped: %s", ref, exc.message)

    def _remove_leftovers(self, client: DockerClient, containers: list[dict[str, Any]],
                          desired: dict[str, dict[str, Any]]) -> None:
        """This node's containers the list no longer names (docs/docker.md#reconcile, reconcile by absence)."""
        for item in containers:
            name = _name(item)
            if not name.startswith(proto.NAME_PREFIX) or not self._is_ours(item):
                continue
            if name[len(proto.NAME_PREFIX):] in desired:
                continue
            log.info("removing %s: no longer in the microservice list", name)
            try:
                self._remove(client, item["Id"], None, cleanup=False)
            except EngineUnavailable:
                raise
            except DockerError as exc:
                log.warning("removal of %s failed: %s", name, exc.message)

    def _refresh_usage(self, client: DockerClient, containers: list[dict[str, Any]]) -> None:
        """Running count every pass; CPU/memory every ``stats_interval`` (docs/controller-api.md#status).

        A one-shot stats call waits for the engine's next 1 s collection tick, so
        the samples are taken concurrently: one tick serves them all.
        """
        running = self._running_ours(containers)
        now = self._clock()
        with self._lock:
            self._running = len(running)
            due = now - self._sampled_at >= self.stats_interval
            targets = [(entry, item["Id"]) for item in running
                       for entry in [self._entries.get(_name(item)[len(proto.NAME_PREFIX):])]
                       if entry is not None and entry.container_id == item["Id"]]
        if not due or not targets:
            return
        # Imported here: a node without running microservices never needs it (0.2 MiB of RSS).
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(8, len(targets))) as pool:
            results = list(pool.map(lambda target: self._stats(client, target[1]), targets))
        with self._lock:
            self._sampled_at = now
            for (entry, _), stats in zip(targets, results):
                if stats is None:
                    continue
                sample = proto.cpu_sample(stats)
                entry.cpu = proto.cpu_percent(entry.cpu_sample, sample)
                entry.cpu_sample = sample
                entry.memory = proto.memory_bytes(stats)

    @staticmethod
    def _stats(client: DockerClient, container_id: str) -> Optional[dict[str, Any]]:
        try:
            return client.stats_once(container_id)
        except DockerError as exc:   # gone meanwhile, or the engine: the next pass will tell
            log.debug("stats of %s: %s", container_id[:12], exc.message)
            return None

    # -- deprovision and prune -------------------------------------------------

    def stop_all(self) -> None:
        """Deprovision: stop and remove this node's containers; no list until set_desired."""
        with self._run_lock:
            with self._lock:
                self._desired = None
            client = self._factory()
            for item in client.list_containers(all=True, label=f"{proto.LABEL_NODE}={self.node_uuid}"):
                if _name(item).startswith(proto.NAME_PREFIX):
                    self._remove(client, item["Id"], None, cleanup=False)
            with self._lock:
                for entry in self._entries.values():
                    entry.status, entry.container_id, entry.start_ms = "STOPPED", None, None
                self._running = 0
            self.addresses.replace(())

    def prune_unused(self) -> int:
        """Remove every image no container and no current microservice uses; bytes reclaimed.

        Images go by ``DELETE /images/{tag}`` (then by id when untagged): unlike
        ``POST /images/prune`` with ``dangling=false``, this never strips the tags
        of images in use (moby/moby#36295). Raises DockerError (EngineUnavailable).
        """
        with self._run_lock:
            try:
                reclaimed = self._prune(self._factory())
            except EngineUnavailable as exc:
                self._engine_down(exc)   # the status agrees with the 503 at once
                raise
        if not self.engine_ok():
            self._engine_up()
            self._wake.set()   # the engine is back: a pass now restores the statuses
        return reclaimed

    def _prune(self, client: DockerClient) -> int:
        before = int(client.disk_usage().get("LayersSize") or 0)
        used = {str(c.get("ImageID")) for c in client.list_containers(all=True)}
        with self._lock:
            wanted = [str(ms["imageId"]) for ms in (self._desired or {}).values()
                      if not (ms.get("delete") or ms.get("deleteWithCleanup"))]
        removed = 0
        for image in client.list_images():
            if proto.image_in_use(image, used, wanted):
                continue
            tags = [t for t in image.get("RepoTags") or [] if t != "<none>:<none>"]
            try:
                for ref in tags or [str(image["Id"])]:
                    client.remove_image(ref)
                removed += 1
            except EngineUnavailable:
                raise
            except DockerError as exc:   # in use meanwhile, or a child image
                log.info("prune: kept %s: %s", (tags or [image["Id"]])[0], exc.message)
        after = int(client.disk_usage().get("LayersSize") or 0)
        reclaimed = max(0, before - after)
        log.info("prune: removed %d unused image(s), reclaimed %d bytes", removed, reclaimed)
        return reclaimed

    # -- bookkeeping -----------------------------------------------------------

    def _running_ours(self, containers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [c for c in containers if self._is_ours(c) and _name(c).startswith(proto.NAME_PREFIX)
                and proto.container_state(c) == "RUNNING"]

    def _is_ours(self, item: dict[str, Any]) -> bool:
        return bool((item.get("Labels") or {}).get(proto.LABEL_NODE) == self.node_uuid)

    def _entry(self, uuid: str) -> _Entry:
        with self._lock:
            return self._entries.setdefault(uuid, _Entry())

    def _update(self, entry: _Entry, **changes: Any) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(entry, key, value)

    def _backoff(self, attempts: int) -> float:
        return float(min(self.backoff_max, self.backoff_base * 2 ** max(0, attempts - 1)))

    def _fail(self, entry: _Entry, message: str) -> None:
        log.warning("microservice failed: %s", message)
        with self._lock:
            entry.failures += 1
            entry.status, entry.error = "FAILED", message
            entry.next_try = self._clock() + self._backoff(entry.failures)

    def _engine_up(self) -> None:
        with self._lock:
            was = self._engine_ok
            self._engine_ok, self._engine_error = True, None
        if was is False:
            log.info("docker engine is back")

    def _engine_down(self, exc: DockerError) -> None:
        with self._lock:
            was = self._engine_ok
            self._engine_ok, self._engine_error = False, str(exc.message)
            for entry in self._entries.values():
                entry.status, entry.error = "UNKNOWN", f"Docker engine unavailable: {exc.message}"
                entry.container_id, entry.start_ms = None, None
            self._running = 0
        if was is not False:
            log.warning("docker engine unavailable: %s", exc.message)


def _name(item: dict[str, Any]) -> str:
    names = item.get("Names") or [""]
    return str(names[0]).lstrip("/")
