"""The Docker Engine API, without the I/O: paths, bodies, streams and states.

Theory of operation. :mod:`iofogd.system.docker` moves bytes over the engine's
socket; this module decides what those bytes are and what the answers mean:

* ``parse_docker_url`` splits ``unix:///path`` / ``tcp://host:port``;
* ``negotiate_version`` picks the API version from ``GET /version`` (never a
  pinned one: Docker 29 refuses anything below 1.44, Debian's 20.10 anything
  above 1.41; docs/docker.md#engine-api, docs/compatibility.md#docker);
* ``api_path`` builds a versioned request target with every path segment
  quoted, so an id or an image name can never smuggle in ``/`` or ``?``;
* ``container_config`` turns a Controller microservice (docs/controller-api.md#microservices) into a
  ``POST /containers/create`` body with upstream's conventions (docs/docker.md#containers) and
  its fixes (unprivileged, not pinned to CPU 0, read-only honoured);
* ``parse_image_ref`` splits ``registry:port/repo:tag@digest`` (upstream split
  at the first ``:``, which broke registry ports);
* ``parse_stream_line`` / ``stream_error`` / ``PullProgress`` read the JSON
  lines of streamed endpoints, where an error can arrive inside a 200;
* ``container_state`` / ``cpu_percent`` / ``memory_bytes`` / ``status_item``
  build the ``microserviceStatus`` entries of PUT agent/status (docs/controller-api.md#status).

Nothing here touches a socket, a clock or a file: time is passed in.
"""
from __future__ import annotations

import base64
import json
import re
import urllib.parse
from datetime import datetime, timezone

from iofogd.errors import DockerError, EngineUnsupported
from iofogd.record import Record

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Any, Final, Iterable, Mapping, Optional

# The oldest API we speak: HostConfig.Init needs 1.25, label filters and the
# create body we send work from 1.24 (upstream's pinned version, docs/docker.md#engine-api).
MIN_API_VERSION = "1.24"
# The newest API we know: requests are sent with min(engine, this), so a newer
# engine never answers in a dialect we have not read (Docker 27 = 1.47).
MAX_API_VERSION = "1.47"

LABEL_NODE = "iofog-uuid"     # label carrying the node uuid (docs/compatibility.md)
NAME_PREFIX = "iofog_"        # container name = iofog_<microservice uuid>
DEFAULT_TAG = "latest"

# Docker State.Status -> microservice status (docs/controller-api.md#status, docs/docker.md#reconcile)
_STATE_MAP = {
    "created": "CREATED",
    "running": "RUNNING",
    "restarting": "RESTARTING",
    "removing": "DELETING",
    "paused": "STOPPED",
    "exited": "EXITING",
    "dead": "FAILED",
}


# -- transport ------------------------------------------------------------------


class DockerUrl(Record):
    __slots__ = ("scheme", "path", "host", "port")
    scheme: Final[str]  # "unix" or "tcp"
    path: Final[str]  # socket path for unix
    host: Final[str]
    port: Final[int]

    def __init__(self, scheme: str, path: str = "", host: str = "", port: int = 0) -> None:
        self.scheme = scheme
        self.path = path
        self.host = host
        self.port = port


def parse_docker_url(url: str) -> DockerUrl:
    """``unix:///var/run/docker.sock`` or ``tcp://host:2375`` (docs/docker.md#engine-api)."""
    parsed = urllib.parse.urlsplit(url.strip())
    if parsed.scheme == "unix":
        path = parsed.netloc + parsed.path if parsed.netloc else parsed.path
        if not path:
            raise ValueError(f"docker_url {url!r} names no socket")
        return DockerUrl("unix", path=path)
    if parsed.scheme in ("tcp", "http"):
        if not parsed.hostname:
            raise ValueError(f"docker_url {url!r} names no host")
        return DockerUrl("tcp", host=parsed.hostname, port=parsed.port or 2375)
    raise ValueError(f"docker_url {url!r}: only unix:// and tcp:// are supported")


def _version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        raise EngineUnsupported(f"the engine reports an unreadable API version {version!r}") from None


def negotiate_version(version_body: Mapping[str, Any]) -> str:
    """The API version to use with an engine, from its ``GET /version`` body.

    Engine API docs, "Versioning": a client may use any version between
    ``MinAPIVersion`` and ``ApiVersion``; we take the newest we also know.
    """
    engine_max = str(version_body.get("ApiVersion") or "")
    engine_min = str(version_body.get("MinAPIVersion") or MIN_API_VERSION)
    if not engine_max:
        raise EngineUnsupported("the engine's GET /version carries no ApiVersion")
    if _version_tuple(engine_max) < _version_tuple(MIN_API_VERSION):
        raise EngineUnsupported(
            f"the Docker engine speaks API {engine_max}; iofogd needs at least {MIN_API_VERSION}"
        )
    chosen = min(engine_max, MAX_API_VERSION, key=_version_tuple)
    if _version_tuple(engine_min) > _version_tuple(chosen):
        raise EngineUnsupported(
            f"the Docker engine requires API {engine_min} or newer; iofogd speaks up to {MAX_API_VERSION}"
        )
    return chosen


def api_path(version: str, *segments: str, query: Optional[Mapping[str, Any]] = None) -> str:
    """``/v<version>/<quoted segments>[?query]``; list values repeat the key."""
    path = "".join("/" + urllib.parse.quote(seg, safe="") for seg in segments)
    if version:
        path = f"/v{version}{path}"
    if query:
        items = [(k, v) for k, v in query.items() if v is not None]
        path += "?" + urllib.parse.urlencode(
            [(k, _query_value(v)) for k, v in items if not isinstance(v, list)]
            + [(k, _query_value(x)) for k, v in items if isinstance(v, list) for x in v]
        )
    return path


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def label_filter(*labels: str) -> dict[str, list[str]]:
    """The ``filters`` query value for ``GET /containers/json`` by label."""
    return {"label": list(labels)}


def registry_auth_header(username: str, password: str, email: str, server: str) -> str:
    """``X-Registry-Auth``: base64url of the AuthConfig JSON (Engine API "Authentication")."""
    body = {"username": username, "password": password, "email": email, "serveraddress": server}
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode()


def error_message(status: int, body: bytes) -> str:
    """The engine's error text: ``{"message": ...}``, or the raw body."""
    text = body.decode("utf-8", "replace").strip()
    try:
        doc = json.loads(text)
    except ValueError:
        return text or f"HTTP {status}"
    if isinstance(doc, dict) and doc.get("message"):
        return str(doc["message"])
    return text or f"HTTP {status}"


# -- images ---------------------------------------------------------------------


class ImageRef(Record):
    __slots__ = ("repository", "tag", "digest")
    repository: Final[str]  # with the registry host, if any: "127.0.0.1:5000/x/y"
    tag: Final[str]
    digest: Final[str]

    def __init__(self, repository: str, tag: str = "", digest: str = "") -> None:
        self.repository = repository
        self.tag = tag
        self.digest = digest

    @property
    def pull_tag(self) -> str:
        """The ``tag`` query value of ``POST /images/create``: a tag or a digest."""
        return self.digest or self.tag or DEFAULT_TAG

    def __str__(self) -> str:
        if self.digest:
            return f"{self.repository}@{self.digest}"
        return f"{self.repository}:{self.tag or DEFAULT_TAG}"


def parse_image_ref(ref: str) -> ImageRef:
    """Split an image reference; a ``:`` only starts a tag after the last ``/``.

    ``registry:5000/repo`` has no tag; ``repo:1`` does; ``repo@sha256:...``
    carries a digest (docker/distribution ``reference`` grammar).
    """
    ref = ref.strip()
    if not ref:
        raise ValueError("empty image reference")
    name, _, digest = ref.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = ""
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
    if not name:
        raise ValueError(f"image reference {ref!r} has no repository")
    return ImageRef(name, tag, digest)


def _normalize_name(name: str) -> str:
    """Docker Hub spellings reduced to the one Docker reports in RepoTags."""
    for prefix in ("docker.io/", "index.docker.io/", "registry.hub.docker.com/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    if name.startswith("library/") and name.count("/") == 1:
        name = name[len("library/"):]
    return name


def same_image(a: str, b: str) -> bool:
    """Whether two references name the same tag or digest (``x`` == ``docker.io/library/x:latest``)."""
    try:
        ra, rb = parse_image_ref(a), parse_image_ref(b)
    except ValueError:
        return False
    if _normalize_name(ra.repository) != _normalize_name(rb.repository):
        return False
    if ra.digest or rb.digest:
        return ra.digest == rb.digest and bool(ra.digest)
    return (ra.tag or DEFAULT_TAG) == (rb.tag or DEFAULT_TAG)


def image_in_use(image: Mapping[str, Any], used_ids: Iterable[str], wanted_refs: Iterable[str]) -> bool:
    """Whether an ``/images/json`` item is used by a container or wanted by a microservice."""
    if image.get("Id") in set(used_ids):
        return True
    names = list(image.get("RepoTags") or []) + list(image.get("RepoDigests") or [])
    return any(same_image(name, ref) for name in names for ref in wanted_refs)


# -- streamed JSON lines ----------------------------------------------------------


def parse_stream_line(line: bytes) -> Optional[dict[str, Any]]:
    """One line of a streamed endpoint (pull, push, load): a JSON object or None."""
    text = line.decode("utf-8", "replace").strip()
    if not text:
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return {"stream": text}
    return obj if isinstance(obj, dict) else {"stream": text}


def stream_error(obj: Mapping[str, Any]) -> Optional[str]:
    """The error an object of a 200 stream carries, if any (Engine API: pull errors)."""
    if obj.get("error"):
        return str(obj["error"])
    detail = obj.get("errorDetail")
    if isinstance(detail, dict) and detail.get("message"):
        return str(detail["message"])
    return None


class PullProgress:
    """Per-layer pull progress averaged into one percentage (docs/docker.md#containers).

    Each layer (``id``) counts from 0 to 100: ``Downloading`` lines carry
    ``progressDetail.current/total``; ``Download complete``, ``Extracting``,
    ``Pull complete`` and ``Already exists`` mean the download is done.
    """

    _DONE = ("Download complete", "Pull complete", "Already exists", "Extracting", "Verifying Checksum")

    def __init__(self) -> None:
        self._layers: dict[str, float] = {}

    def feed(self, obj: Mapping[str, Any]) -> float:
        status = str(obj.get("status") or "")
        layer = obj.get("id")
        if layer and not status.startswith("Pulling from"):
            key = str(layer)
            if status.startswith(self._DONE):
                self._layers[key] = 100.0
            elif status == "Downloading":
                detail = obj.get("progressDetail") or {}
                current, total = detail.get("current"), detail.get("total")
                if isinstance(current, (int, float)) and isinstance(total, (int, float)) and total > 0:
                    self._layers[key] = max(self._layers.get(key, 0.0), min(100.0, 100.0 * current / total))
            else:
                self._layers.setdefault(key, 0.0)
        return self.percentage

    @property
    def percentage(self) -> float:
        if not self._layers:
            return 0.0
        return round(sum(self._layers.values()) / len(self._layers), 2)


# -- containers -------------------------------------------------------------------


def container_name(microservice_uuid: str) -> str:
    return NAME_PREFIX + microservice_uuid


def _port_key(mapping: Mapping[str, Any]) -> str:
    proto = "udp" if mapping.get("isUdp") else "tcp"
    return f"{int(mapping['portInternal'])}/{proto}"


def port_bindings(microservice: Mapping[str, Any]) -> dict[str, list[dict[str, str]]]:
    """``HostConfig.PortBindings``: each mapping on all host interfaces (docs/docker.md#containers)."""
    bindings: dict[str, list[dict[str, str]]] = {}
    for mapping in microservice.get("portMappings") or []:
        bindings.setdefault(_port_key(mapping), []).append({"HostIp": "", "HostPort": str(int(mapping["portExternal"]))})
    return bindings


def bindings_of(host_config: Mapping[str, Any]) -> dict[str, list[str]]:
    """Comparable form of an inspected or desired ``PortBindings``: port -> host ports."""
    result: dict[str, list[str]] = {}
    for port, binds in (host_config.get("PortBindings") or {}).items():
        result[port] = sorted(str(b.get("HostPort") or "") for b in (binds or []))
    return result


def binds(microservice: Mapping[str, Any]) -> list[str]:
    """``HostConfig.Binds``: ``source:target:ro|rw``; read-only is honoured (upstream never set it)."""
    result = []
    for vol in microservice.get("volumeMappings") or []:
        mode = "ro" if str(vol.get("accessMode") or "rw").lower().startswith("ro") else "rw"
        result.append(f"{vol['hostDestination']}:{vol['containerDestination']}:{mode}")
    return result


def environment(microservice: Mapping[str, Any], time_zone: str) -> list[str]:
    """``SELFNAME``, ``TZ`` unless the microservice sets it, then its own env (docs/docker.md#containers)."""
    env = [f"SELFNAME={microservice['uuid']}"]
    own = [(str(e.get("key")), str(e.get("value", ""))) for e in microservice.get("env") or [] if e.get("key")]
    if time_zone and not any(key == "TZ" for key, _ in own):
        env.append(f"TZ={time_zone}")
    env.extend(f"{key}={value}" for key, value in own)
    return env


def extra_hosts(microservice: Mapping[str, Any], agent_address: str) -> list[str]:
    """The microservice's ``name:address`` entries plus ``iofog:<agent address>``."""
    hosts = [str(h) for h in microservice.get("extraHosts") or []]
    if agent_address and not any(h.split(":", 1)[0] == "iofog" for h in hosts):
        hosts.append(f"iofog:{agent_address}")
    return hosts


def log_config(log_size_mb: Any) -> dict[str, Any]:
    """json-file rotation: 2 MB files, ``logSize/2`` of them (docs/docker.md#containers)."""
    try:
        size = int(log_size_mb or 0)
    except (TypeError, ValueError):
        size = 0
    files = size // 2 if size > 2 else 1
    return {"Type": "json-file", "Config": {"max-size": "2m", "max-file": str(files)}}


def network_mode(microservice: Mapping[str, Any]) -> str:
    return "host" if microservice.get("rootHostAccess") else "default"


def container_config(
    microservice: Mapping[str, Any], *, node_uuid: str, agent_address: str, time_zone: str
) -> dict[str, Any]:
    """The ``POST /containers/create`` body for a microservice (docs/docker.md#containers with its fixes)."""
    root = bool(microservice.get("rootHostAccess"))
    bindings = port_bindings(microservice)
    host_config: dict[str, Any] = {
        "Binds": binds(microservice),
        "PortBindings": bindings,
        "ExtraHosts": extra_hosts(microservice, agent_address),
        "NetworkMode": network_mode(microservice),
        # rootHostAccess is the one way to ask for privileges; upstream gave them to all
        "Privileged": root,
        "LogConfig": log_config(microservice.get("logSize")),
        "RestartPolicy": {"Name": "no"},   # the agent restarts containers itself (7.3)
        "Init": True,                      # PID 1 forwards SIGTERM: quick, clean stops
    }
    body: dict[str, Any] = {
        "Image": str(microservice["imageId"]),
        "Env": environment(microservice, time_zone),
        "Labels": {LABEL_NODE: node_uuid},
        "ExposedPorts": {port: {} for port in bindings},
        "HostConfig": host_config,
    }
    cmd = [str(c) for c in microservice.get("cmd") or []]
    if cmd:
        body["Cmd"] = cmd
    return body


def needs_recreate(microservice: Mapping[str, Any], inspect: Mapping[str, Any]) -> Optional[str]:
    """Why a container no longer matches its microservice, or None (docs/docker.md#reconcile).

    Ports, network mode and image; env, volumes and cmd alone change only with
    ``rebuild``, as upstream.
    """
    host_config = inspect.get("HostConfig") or {}
    if (host_config.get("NetworkMode") == "host") != bool(microservice.get("rootHostAccess")):
        return "network mode changed"
    if bindings_of(host_config) != bindings_of({"PortBindings": port_bindings(microservice)}):
        return "port mappings changed"
    image = str((inspect.get("Config") or {}).get("Image") or "")
    if image and not same_image(image, str(microservice.get("imageId") or "")):
        return "image changed"
    return None


# -- status (docs/controller-api.md#status) ----------------------------------------


def container_state(inspect_or_list_item: Mapping[str, Any]) -> str:
    """The microservice status name of a container (inspect ``State`` or list ``State``)."""
    state = inspect_or_list_item.get("State")
    status = state.get("Status") if isinstance(state, dict) else state
    return _STATE_MAP.get(str(status or "").lower(), "UNKNOWN")


_TIME_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def parse_docker_time(value: str) -> Optional[int]:
    """RFC 3339 with nanoseconds (``State.StartedAt``) -> epoch ms; None for the zero time."""
    match = _TIME_RE.match(value or "")
    if not match:
        return None
    base, frac, zone = match.groups()
    stamp = datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone))
    if stamp.year <= 1:
        return None
    ms = int(stamp.astimezone(timezone.utc).timestamp()) * 1000
    return ms + int((frac or "0")[:3].ljust(3, "0"))


def started_at(inspect: Mapping[str, Any]) -> Optional[int]:
    """Epoch ms of an inspected container's last start, or None."""
    return parse_docker_time(str((inspect.get("State") or {}).get("StartedAt") or ""))


def cpu_sample(stats: Mapping[str, Any]) -> tuple[int, int, int]:
    """(container total usage, system usage, online cpus) of a stats body, in ns."""
    cpu = stats.get("cpu_stats") or {}
    usage = cpu.get("cpu_usage") or {}
    online = cpu.get("online_cpus") or len(usage.get("percpu_usage") or []) or 1
    return int(usage.get("total_usage") or 0), int(cpu.get("system_cpu_usage") or 0), int(online)


def cpu_percent(previous: Optional[tuple[int, int, int]], current: tuple[int, int, int]) -> float:
    """CPU % between two samples, as ``docker stats`` computes it (100 = one CPU busy)."""
    if previous is None:
        return 0.0
    d_container = current[0] - previous[0]
    d_system = current[1] - previous[1]
    if d_container <= 0 or d_system <= 0:
        return 0.0
    return 100.0 * d_container / d_system * current[2]


def memory_bytes(stats: Mapping[str, Any]) -> int:
    """Memory in use minus page cache, as ``docker stats`` shows it (cgroup v1 and v2)."""
    mem = stats.get("memory_stats") or {}
    usage = int(mem.get("usage") or 0)
    detail = mem.get("stats") or {}
    cache = detail.get("total_inactive_file", detail.get("inactive_file", 0)) or 0
    return max(0, usage - int(cache))


def format_cpu(value: float) -> str:
    """Java ``NumberFormat`` US, at most 2 decimals, no grouping: 0 -> "0", 1.5 -> "1.5"."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return text or "0"


def status_item(
    uuid: str,
    status: str,
    percentage: float,
    *,
    container_id: Optional[str] = None,
    start_time_ms: Optional[int] = None,
    now_ms: int = 0,
    cpu: float = 0.0,
    memory: int = 0,
    error: Optional[str] = None,
) -> dict[str, Any]:
    """One ``microserviceStatus`` element with the Controller's exact JSON types (docs/controller-api.md#status).

    ``cpuUsage`` and ``memoryUsage`` are strings, as the Java agent sends them.
    """
    item: dict[str, Any] = {"id": uuid, "status": status, "percentage": float(percentage)}
    if container_id:
        start = int(start_time_ms or 0)
        item.update(
            containerId=container_id,
            startTime=start,
            operatingDuration=max(0, now_ms - start) if start else 0,
            cpuUsage=format_cpu(cpu),
            memoryUsage=str(int(memory)),
        )
    if error:
        item["errorMessage"] = error
    return item
