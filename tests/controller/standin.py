"""A stand-in for the ioFog Controller 3.0.4, built from its captured answers.

The real Controller (Node.js, Express, Sequelize) cannot run in this test
suite, so this module plays it on 127.0.0.1: a real HTTP server
(``http.server.ThreadingHTTPServer``) that answers the agent API under
``/api/v3/agent/`` and ``GET /api/v3/status`` exactly as the captures in
``tests/controller/captures.py`` show (status codes, JSON bodies, Express's
HTML error pages, the 500 with a stack trace when ``Authorization`` is
missing), and that is as strict as the real one about what the agent sends:

* ``Authorization`` is the raw token: ``Bearer <token>``, an unknown, replaced
  or deleted node's token give 401 ``authorization failed``; an expired token
  gives 401 ``token expired``; no header gives the captured 500;
* the token lifetime slides: each authorised call adds the interval to the
  stored expiry (docs/controller-api.md#auth-errors);
* provisioning keys are single use, one per fog, expire after 20 minutes
  (404 ``Invalid Provisioning Key`` / 401 ``Expired provision key``) and the
  fog type is checked against the fog's microservice images (400);
* request bodies are checked with the Controller's JSON schemas and its
  error texts (``Field 'x' is not of a type(s) number``, ``Required field
  'x' is missing``, the JSON-in-JSON text for minimum/maximum); a status
  without ``microserviceStatus`` is the captured 500; malformed JSON is
  Express's 400 page;
* change flags are sticky until ``PATCH agent/config/changes`` echoes a
  ``lastUpdated`` no older than the last change; ``GET agent/microservices``
  clears ``rebuild``.

Tests drive the user side from Python (the stand-in has no user API over
HTTP: those paths answer 401): :meth:`ControllerStandIn.create_fog`,
:meth:`provisioning_key`, :meth:`set_fog_config`, :meth:`add_microservice`,
:meth:`add_registry`, :meth:`set_edge_resources`, :meth:`raise_flags`,
:meth:`delete_fog`, and faults: :meth:`hang`, :meth:`fail`, :meth:`vanish`
and :meth:`reappear`. Every request is recorded in :attr:`requests`.

Where the captures are silent the behaviour follows the Controller's source
(eclipse-iofog/Controller, agent-service.js and schemas/agent.js) and says so.
"""
from __future__ import annotations

import json
import math
import random
import re
import socket
import ssl
import string
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

from tests.controller.captures import exchange

API = "/api/v3/"
TLS_DIR = Path(__file__).parent / "tls"   # a self-signed certificate for 127.0.0.1 and its key
USER_TOKEN = "standin-user-token"   # the one user token this stand-in accepts (routes API only)
KEY_LIFETIME = 20 * 60.0  # docs/controller-api.md#controller-settings
TOKEN_LIFETIME = 3600.0  # FogTokenExpirationIntervalSeconds, sliding
CONTROLLER_VERSION = "3.0.4"
ECN_VIEWER_VERSION = "3.0.2"

CHANGE_FLAGS = (
    "config", "version", "reboot", "deleteNode", "microserviceList", "microserviceConfig", "routing",
    "registries", "tunnel", "diagnostics", "isImageSnapshot", "prune", "routerChanged", "linkedEdgeResources",
)

# GET agent/config of a new fog (agent1.log A1): keys in the Controller's order.
DEFAULT_CONFIG: dict[str, Any] = json.loads(exchange("A1").response)

# GET agent/registries (agent1.log A4): the two built-in registries.
DEFAULT_REGISTRIES: list[dict[str, Any]] = json.loads(exchange("A4").response)["registries"]

HTML_PAGE = (
    '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Error</title>\n'
    "</head>\n<body>\n<pre>{}</pre>\n</body>\n</html>\n"
)

_ALNUM = string.ascii_letters + string.digits


def _random_id(length: int, rng: random.Random) -> str:
    return "".join(rng.choice(_ALNUM) for _ in range(length))


def iso_ms(seconds: float) -> str:
    """``2026-11-25T20:15:43.799Z``: the Controller's (JavaScript's) ISO form, millisecond precision."""
    ms = round(seconds * 1000) if abs(seconds * 1000 - round(seconds * 1000)) < 1e-3 else math.floor(seconds * 1000)
    stamp = datetime.fromtimestamp(ms // 1000, tz=timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_iso(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def js_json(value: Any) -> str:
    """JSON.stringify: compact, integral floats without ``.0``."""
    def fix(v: Any) -> Any:
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        if isinstance(v, list):
            return [fix(x) for x in v]
        return v
    return json.dumps(fix(value), separators=(",", ":"), ensure_ascii=False)


# -- the Controller's schemas and its validator's messages (src/schemas/*.js) ------------------

Schema = dict[str, Any]


def _int0() -> Schema:
    return {"type": "integer", "minimum": 0}


PROVISION_SCHEMA: Schema = {
    "properties": {"type": {"type": "integer", "minimum": 0, "maximum": 2}, "key": {"type": "string"}},
    "required": ["type", "key"],
}
DEPROVISION_SCHEMA: Schema = {
    "properties": {"microserviceUuids": {"type": "array", "items": {"type": "string"}}},
    "required": ["microserviceUuids"],
}
# PATCH agent/config (docs/controller-api.md#config-sync; unknown keys allowed).
CONFIG_SCHEMA: Schema = {
    "properties": {
        "networkInterface": {"type": "string"}, "dockerUrl": {"type": "string"}, "diskLimit": _int0(),
        "diskDirectory": {"type": "string"}, "memoryLimit": _int0(), "cpuLimit": _int0(), "logLimit": _int0(),
        "logDirectory": {"type": "string"}, "logFileCount": _int0(), "statusFrequency": _int0(),
        "changeFrequency": _int0(), "deviceScanFrequency": _int0(), "watchdogEnabled": {"type": "boolean"},
        "latitude": {"type": "number", "minimum": -90, "maximum": 90},
        "longitude": {"type": "number", "minimum": -180, "maximum": 180},
        "gpsMode": {"type": "string"}, "dockerPruningFrequency": _int0(), "availableDiskThreshold": _int0(),
        "logLevel": {"type": "string"}, "timeZone": {"type": "string"},
    },
    "required": [],
}
# PUT agent/status (docs/controller-api.md#status; schemas/agent.js updateAgentStatus).
STATUS_SCHEMA: Schema = {
    "properties": {
        "daemonStatus": {"type": "string"}, "daemonOperatingDuration": _int0(), "daemonLastStart": _int0(),
        "memoryUsage": {"type": "number", "minimum": 0}, "diskUsage": {"type": "number", "minimum": 0},
        "cpuUsage": {"type": "number", "minimum": 0}, "memoryViolation": {"type": "boolean"},
        "diskViolation": {"type": "boolean"}, "cpuViolation": {"type": "boolean"},
        "systemAvailableDisk": {"type": "integer"}, "systemAvailableMemory": {"type": "integer"},
        "systemTotalCpu": {"type": "number"}, "securityStatus": {"type": "string"},
        "securityViolationInfo": {"type": "string"}, "microserviceStatus": {"type": "string"},
        "repositoryCount": _int0(), "repositoryStatus": {"type": "string"}, "systemTime": _int0(),
        "lastStatusTime": _int0(), "ipAddress": {"type": "string"}, "ipAddressExternal": {"type": "string"},
        "processedMessages": _int0(), "microserviceMessageCounts": {"type": "string"},
        "messageSpeed": {"type": "number", "minimum": 0}, "lastCommandTime": _int0(),
        "tunnelStatus": {"type": "string"}, "version": {"type": "string"},
        "isReadyToUpgrade": {"type": "boolean"}, "isReadyToRollback": {"type": "boolean"},
    },
    "required": [],
}
RESET_CHANGES_SCHEMA: Schema = {"properties": {"lastUpdated": {"type": "string"}}, "required": ["lastUpdated"]}
HAL_SCHEMA: Schema = {"properties": {"info": {"type": "string"}}, "required": ["info"]}


def _is_type(value: Any, kind: str) -> bool:
    # node-jsonschema: integer = a number with no fraction (JSON 5.0 is the integer 5 in JavaScript).
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "array":
        return isinstance(value, list)
    if kind == "object":
        return isinstance(value, dict)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return kind == "number" or float(value).is_integer()


def validate(body: Any, schema: Schema) -> str | None:
    """The Controller's ValidationError message for the first error, or None (src/schemas/index.js)."""
    if not isinstance(body, dict):
        return "Field 'instance' is not of a type(s) object"
    for name, prop in schema["properties"].items():
        if name not in body:
            continue
        value = body[name]
        if not _is_type(value, prop["type"]):
            return f"Field '{name}' is not of a type(s) {prop['type']}"
        if prop["type"] == "array" and "items" in prop:
            for i, item in enumerate(value):
                if not _is_type(item, prop["items"]["type"]):
                    return f"Field '{name}[{i}]' is not of a type(s) {prop['items']['type']}"
        for bound, word in (("minimum", "minimum"), ("maximum", "maximum")):
            limit = prop.get(bound)
            if limit is None or isinstance(value, (list, str, bool)):
                continue
            if (bound == "minimum" and value < limit) or (bound == "maximum" and value > limit):
                message = f"must have a {word} value of {limit}"
                error = {
                    "property": f"instance.{name}", "message": message, "schema": prop, "instance": value,
                    "name": bound, "argument": limit, "stack": f"instance.{name} {message}",
                }
                return js_json(error)
    for name in schema["required"]:
        if name not in body:
            return f"Required field '{name}' is missing"
    return None


# -- state ------------------------------------------------------------------------------------------


@dataclass
class Microservice:
    uuid: str
    name: str
    fog_uuid: str
    images: dict[int, str]
    config: str = "{}"
    rebuild: bool = True
    root_host_access: bool = False
    log_size: int = 1
    registry_id: int = 1
    port_mappings: list[dict[str, Any]] = field(default_factory=list)
    volume_mappings: list[dict[str, Any]] = field(default_factory=list)
    env: list[dict[str, str]] = field(default_factory=list)
    extra_hosts: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    routes: list[str] = field(default_factory=list)
    application: str = ""       # the application's name: routes name microservices inside it
    is_consumer: bool = False   # some route ends here (routes.log R6)
    system: bool = False
    strace: bool = False
    status: dict[str, Any] = field(default_factory=dict)

    def agent_view(self, fog_type: int) -> dict[str, Any]:
        """One element of GET agent/microservices (agent4.log A16), in the Controller's key order."""
        return {
            "uuid": self.uuid, "imageId": self.images[fog_type], "config": self.config, "rebuild": self.rebuild,
            "rootHostAccess": self.root_host_access, "logSize": self.log_size, "registryId": self.registry_id,
            "portMappings": [dict(p) for p in self.port_mappings],
            "volumeMappings": [dict(v) for v in self.volume_mappings], "imageSnapshot": "", "delete": False,
            "deleteWithCleanup": False, "env": [dict(e) for e in self.env], "extraHosts": list(self.extra_hosts),
            "cmd": list(self.cmd), "routes": list(self.routes), "isConsumer": self.is_consumer,
        }


@dataclass
class Fog:
    uuid: str
    name: str
    fog_type_id: int
    router_mode: str
    host: str | None
    created: float
    config: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_CONFIG))
    gps_mode: str | None = None
    token: str | None = None
    token_expiry: float = 0.0
    key: str | None = None
    key_expiry: float = 0.0
    flags: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(CHANGE_FLAGS, False))
    flags_updated: int = 0  # epoch ms, as Sequelize stores updatedAt
    edge_resources: list[dict[str, Any]] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    last_active: int = 0
    version_command: dict[str, Any] | None = None
    image_snapshot: str | None = None


@dataclass(frozen=True)
class Recorded:
    """One request the agent made: ``body`` is the parsed JSON (None when absent or unparseable)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes

    @property
    def route(self) -> str:
        """The path below ``/api/v3/`` without the query, e.g. ``agent/status``."""
        return self.path.split("?", 1)[0][len(API):]


class _Reply(Exception):
    """Raised inside a route to answer at once."""

    def __init__(self, status: int, body: Any = None, *, html: str | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.html = html


def _error(status: int, name: str, message: str) -> _Reply:
    return _Reply(status, {"name": name, "message": message})


def _not_found(message: str) -> _Reply:
    return _error(404, "NotFoundError", message)


def _validation(message: str) -> _Reply:
    return _error(400, "ValidationError", message)


_AUTH_FAILED = _error(401, "AuthenticationError", "authorization failed")


def _syntax_error_500(message: str) -> _Reply:
    # agent2.log S2: JSON.parse(undefined) in updateAgentStatus; the stack names the captured lines.
    captured = json.loads(exchange("S2").response)
    stack = captured["stack"].replace(captured["message"], message, 1)
    return _Reply(500, {"name": "SyntaxError", "message": message, "stack": stack})



def tls_server() -> ssl.SSLContext:
    """The stand-in's TLS context (``ControllerStandIn(tls=...)``), with TLS_DIR's certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(TLS_DIR / "cert.pem"), str(TLS_DIR / "key.pem"))
    return ctx

class ControllerStandIn:
    """The stand-in Controller; use as a context manager or call :meth:`start` / :meth:`stop`."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        tls: ssl.SSLContext | None = None,
        seed: int | None = None,
        tokens: Iterator[str] | None = None,
    ) -> None:
        self.clock = clock
        self.tls = tls
        self.rng = random.Random(seed)
        self._tokens = tokens
        self.lock = threading.RLock()
        self.fogs: dict[str, Fog] = {}
        self.microservices: dict[str, Microservice] = {}
        self.registries: list[dict[str, Any]] = [dict(r) for r in DEFAULT_REGISTRIES]
        self.routes: list[dict[str, Any]] = []   # GET /routes items (routes.log R7)
        self.requests: list[Recorded] = []
        self.started = clock()
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._hang = threading.Event()
        self._release = threading.Event()
        self._faults: list[tuple[str, str | None, int, Any, int | None]] = []

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The agent's ``controller_url``, e.g. ``http://127.0.0.1:40123/api/v3/``."""
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}{API}"

    def start(self) -> ControllerStandIn:
        handler = type("Handler", (_Handler,), {"standin": self})
        server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        server.daemon_threads = True
        if self.tls is not None:
            server.socket = self.tls.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        self.port = server.server_address[1]
        self._server = server
        self._release.clear()
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> ControllerStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults -------------------------------------------------------------------------------

    def vanish(self) -> None:
        """Stop listening: the agent's connections are refused (the Controller disappeared)."""
        self.stop()

    def reappear(self) -> None:
        """Listen again on the same port, with the same state."""
        self.start()

    def hang(self, on: bool = True) -> None:
        """Accept and read requests but never answer them (until ``hang(False)`` or stop)."""
        if on:
            self._release.clear()
            self._hang.set()
        else:
            self._hang.clear()
            self._release.set()

    def fail(
        self, status: int | None, *, route: str = "", method: str | None = None, body: Any = None,
        times: int | None = None,
    ) -> None:
        """Answer requests whose route starts with ``route`` (and of ``method``, if given) with ``status``,
        ``times`` times or for ever; ``fail(None)`` clears all faults."""
        with self.lock:
            if status is None:
                self._faults.clear()
                return
            if body is None:
                name = {403: "ForbiddenError", 401: "AuthenticationError"}.get(status, "Error")
                body = {"name": name, "message": f"stand-in fault {status}"}
                if status >= 500:
                    body["stack"] = f"Error: stand-in fault {status}\n    at <stand-in>"
            self._faults.append((route, method, status, body, times))

    def _fault_for(self, method: str, route: str) -> _Reply | None:
        with self.lock:
            for i, (prefix, only, status, body, times) in enumerate(self._faults):
                if route.startswith(prefix) and only in (None, method):
                    if times is not None:
                        if times <= 1:
                            del self._faults[i]
                        else:
                            self._faults[i] = (prefix, only, status, body, times - 1)
                    return _Reply(status, body)
        return None

    # -- the user side, driven from Python (docs/controller-api.md#user-side) --------------------

    def _new_id(self, length: int) -> str:
        return _random_id(length, self.rng)

    def _touch(self, fog: Fog, *names: str) -> None:
        for name in names:
            fog.flags[name] = True
        # Sequelize stores updatedAt with millisecond precision; make each change strictly newer.
        fog.flags_updated = max(math.floor(self.clock() * 1000), fog.flags_updated + 1)

    def create_fog(
        self, name: str = "agent-1", *, fog_type: int = 1, router_mode: str = "edge",
        host: str | None = "127.0.0.1", uuid: str | None = None, router_uuid: str | None = None,
    ) -> str:
        """POST /iofog: a new fog; an edge fog gets its router microservice (seed.log 7, agent1.log A3)."""
        with self.lock:
            fog = Fog(uuid or self._new_id(32), name, fog_type, router_mode, host, self.clock())
            if router_mode != "edge":
                fog.config["routerHost"] = "127.0.0.1"  # the default router's host (agent8.log N2)
            self.fogs[fog.uuid] = fog
            self._touch(fog)
            if router_mode == "edge":
                router_config = {
                    "mode": "edge", "id": fog.uuid,
                    "listeners": [{"role": "normal", "host": "0.0.0.0", "port": 5672}],
                    "connectors": [{"name": "default-router", "role": "edge", "host": "127.0.0.1", "port": 56722}],
                }
                ms = Microservice(
                    router_uuid or self._new_id(32), f"Router for Fog {fog.uuid}", fog.uuid,
                    {1: "iofog/router:latest", 2: "iofog/router:latest"}, json.dumps(router_config, separators=(",", ":")),
                    rebuild=False, port_mappings=[{"portInternal": 5672, "portExternal": 5672, "isUdp": None}],
                    system=True,
                )
                self.microservices[ms.uuid] = ms
                self._touch(fog, "microserviceList", "microserviceConfig")
            return fog.uuid

    def provisioning_key(self, fog_uuid: str, *, key: str | None = None) -> str:
        """GET /iofog/{uuid}/provisioning-key: a new key, replacing the fog's previous one (prov.log 9)."""
        with self.lock:
            fog = self.fogs[fog_uuid]
            fog.key = key or self._new_id(8)
            fog.key_expiry = self.clock() + KEY_LIFETIME
            return fog.key

    def expire_key(self, fog_uuid: str) -> None:
        """Age the fog's provisioning key past its 20 minutes (agent7.log X1)."""
        with self.lock:
            self.fogs[fog_uuid].key_expiry = self.clock() - 1

    def expire_token(self, fog_uuid: str) -> None:
        """Age the fog's agent token past its expiry (agent7.log X2)."""
        with self.lock:
            self.fogs[fog_uuid].token_expiry = self.clock() - 1

    def token(self, fog_uuid: str) -> str | None:
        with self.lock:
            return self.fogs[fog_uuid].token

    def set_fog_config(self, fog_uuid: str, **values: Any) -> None:
        """PATCH /iofog/{uuid}: ``config`` and ``routerChanged``; an edge fog's router microservice is
        updated too, hence ``microserviceList`` and ``microserviceConfig`` (agent3.log U2, A12)."""
        with self.lock:
            fog = self.fogs[fog_uuid]
            unknown = set(values) - set(DEFAULT_CONFIG)
            if unknown:
                raise KeyError(f"not agent config keys: {sorted(unknown)}")
            fog.config.update(values)
            self._touch(fog, "config", "routerChanged")
            if any(m.system and m.fog_uuid == fog_uuid for m in self.microservices.values()):
                self._touch(fog, "microserviceList", "microserviceConfig")

    def add_microservice(
        self, fog_uuid: str, name: str, *, images: dict[int, str] | None = None, config: str = "{}",
        uuid: str | None = None, **fields: Any,
    ) -> str:
        """POST /application with one microservice on the fog: ``microserviceList`` and ``microserviceConfig``."""
        with self.lock:
            fog = self.fogs[fog_uuid]
            ms = Microservice(uuid or self._new_id(32), name, fog_uuid, images or {1: "nginx:alpine", 2: "nginx:alpine"},
                              config, **fields)
            self.microservices[ms.uuid] = ms
            self._touch(fog, "microserviceList", "microserviceConfig")
            return ms.uuid

    def set_microservice_config(self, ms_uuid: str, config: str) -> None:
        """PATCH /microservices/{uuid} with a new config: ``microserviceConfig``."""
        with self.lock:
            ms = self.microservices[ms_uuid]
            ms.config = config
            self._touch(self.fogs[ms.fog_uuid], "microserviceConfig")

    def remove_microservice(self, ms_uuid: str) -> None:
        """DELETE /application/{name}: the microservice vanishes; ``routing``, list, config (agent5.log A18)."""
        with self.lock:
            ms = self.microservices.pop(ms_uuid)
            self._touch(self.fogs[ms.fog_uuid], "routing", "microserviceList", "microserviceConfig")

    # -- routes between microservices (docs/controller-api.md "Routes", routes.log) ------------

    def _by_name(self, application: str, name: str) -> Microservice:
        for ms in self.microservices.values():
            if ms.name == name and ms.application == application:
                return ms
        raise _not_found(f"Invalid microservice name '{name}'")

    def add_route(self, name: str, source: str, dest: str, application: str) -> dict[str, Any]:
        """POST /routes ``{"name","from","to","application"}`` (R4): sets ``routing`` (R5, R6)."""
        with self.lock:
            if any(r["application"] == application and r["name"] == name for r in self.routes):
                raise _validation(f"Route with name {name} already exists")
            src, dst = self._by_name(application, source), self._by_name(application, dest)
            self.routes.append({"application": application, "name": name, "from": source, "to": dest,
                                "sourceMicroserviceUuid": src.uuid, "destMicroserviceUuid": dst.uuid})
            self._apply_routes()
            self._touch(self.fogs[src.fog_uuid], "routing")
            if dst.fog_uuid != src.fog_uuid:
                self._touch(self.fogs[dst.fog_uuid], "routing")
            return {"isNetworkConnection": False, "id": len(self.routes), "name": name,
                    "sourceMicroserviceUuid": src.uuid, "destMicroserviceUuid": dst.uuid, "applicationId": 1}

    def delete_route(self, application: str, name: str) -> None:
        """DELETE /routes/<application>/<name> (R8): 204, ``routing`` again (R9), arrays back (R10)."""
        with self.lock:
            route = next((r for r in self.routes if r["application"] == application and r["name"] == name), None)
            if route is None:
                raise _not_found(f"Invalid route name '{name}'")
            self.routes.remove(route)
            self._apply_routes()
            for key in ("sourceMicroserviceUuid", "destMicroserviceUuid"):
                ms = self.microservices.get(route[key])
                if ms is not None:
                    self._touch(self.fogs[ms.fog_uuid], "routing")

    def _apply_routes(self) -> None:
        for ms in self.microservices.values():
            ms.routes = [r["destMicroserviceUuid"] for r in self.routes if r["sourceMicroserviceUuid"] == ms.uuid]
            ms.is_consumer = any(r["destMicroserviceUuid"] == ms.uuid for r in self.routes)

    def _user_routes(self, method: str, route: str, body: Any) -> tuple[int, Any] | None:
        """The routes API over HTTP, for a caller with :attr:`USER_TOKEN` (the captures' user calls)."""
        if route == "routes" and method == "POST":
            if not isinstance(body, dict) or not all(isinstance(body.get(k), str) for k in
                                                     ("name", "from", "to", "application")):
                raise _validation("Required field 'name', 'from', 'to' or 'application' is missing")
            return 200, self.add_route(body["name"], body["from"], body["to"], body["application"])
        if route == "routes" and method == "GET":
            with self.lock:
                return 200, {"routes": [dict(r) for r in self.routes]}
        match = re.fullmatch(r"routes/([^/]+)/([^/]+)", route)
        if match and method == "DELETE":
            self.delete_route(match.group(1), match.group(2))
            return 204, None
        return None

    def enable_strace(self, ms_uuid: str) -> None:
        """PATCH /microservices/{uuid}/strace ``{"enable":true}``: ``diagnostics`` (agent11.log G1b)."""
        with self.lock:
            ms = self.microservices[ms_uuid]
            ms.strace = True
            self._touch(self.fogs[ms.fog_uuid], "diagnostics")

    def request_upgrade(self, fog_uuid: str) -> None:
        """POST /iofog/{uuid}/version/upgrade: ``version`` and a version command (agent5.log U6, A19)."""
        with self.lock:
            fog = self.fogs[fog_uuid]
            fog.version_command = {
                "versionCommand": "upgrade", "provisionKey": self._new_id(8),
                "expirationTime": int((self.clock() + KEY_LIFETIME) * 1000),
            }
            self._touch(fog, "version")

    def request_image_snapshot(self, ms_uuid: str) -> None:
        """POST /microservices/{uuid}/image-snapshot: ``isImageSnapshot`` (agent10.log G5)."""
        with self.lock:
            ms = self.microservices[ms_uuid]
            self.fogs[ms.fog_uuid].image_snapshot = ms.uuid
            self._touch(self.fogs[ms.fog_uuid], "isImageSnapshot")

    def add_registry(self, url: str, **fields: Any) -> int:
        """POST /registries: ``registries`` on every fog."""
        with self.lock:
            reg = {
                "id": max(r["id"] for r in self.registries) + 1, "url": url, "isPublic": False, "isSecure": True,
                "certificate": "", "requiresCert": False, "username": "", "password": "", "userEmail": "",
                "userId": 1,
            }
            reg.update(fields)
            self.registries.append(reg)
            for fog in self.fogs.values():
                self._touch(fog, "registries")
            return int(reg["id"])

    def set_edge_resources(self, fog_uuid: str, resources: list[dict[str, Any]]) -> None:
        """Link edge resources to the fog: ``linkedEdgeResources``."""
        with self.lock:
            fog = self.fogs[fog_uuid]
            fog.edge_resources = [dict(r) for r in resources]
            self._touch(fog, "linkedEdgeResources")

    def raise_flags(self, fog_uuid: str, *names: str) -> None:
        """Set change flags directly (reboot, prune, tunnel, deleteNode ... as the user calls do)."""
        bad = set(names) - set(CHANGE_FLAGS)
        if bad:
            raise KeyError(f"not change flags: {sorted(bad)}")
        with self.lock:
            self._touch(self.fogs[fog_uuid], *names)

    def changes(self, fog_uuid: str) -> dict[str, Any]:
        """What GET agent/config/changes would answer now."""
        with self.lock:
            fog = self.fogs[fog_uuid]
            return {**fog.flags, "lastUpdated": iso_ms(fog.flags_updated / 1000)}

    def delete_fog(self, fog_uuid: str) -> None:
        """DELETE /iofog/{uuid} (202): the fog goes at once and its token is dead (agent8.log N6)."""
        with self.lock:
            self.fogs.pop(fog_uuid)
            for ms_uuid in [m.uuid for m in self.microservices.values() if m.fog_uuid == fog_uuid]:
                del self.microservices[ms_uuid]

    def fog_view(self, fog_uuid: str) -> dict[str, Any]:
        """Excerpt of GET /iofog/{uuid} (prov.log 8, agent3.log U1), with the liveness rule of section 8."""
        with self.lock:
            fog = self.fogs[fog_uuid]
            status = fog.status
            last_status = int(status.get("lastStatusTime", 0))
            daemon = status.get("daemonStatus", "UNKNOWN")
            if self.clock() * 1000 - last_status > fog.config["statusFrequency"] * 1000 * 3:
                daemon = "UNKNOWN"
            return {
                "uuid": fog.uuid, "name": fog.name, "daemonStatus": daemon, "lastStatusTime": last_status,
                "lastActive": fog.last_active, "ipAddress": status.get("ipAddress", "0.0.0.0"),
                "ipAddressExternal": status.get("ipAddressExternal", "0.0.0.0"), "version": status.get("version"),
                "isReadyToUpgrade": status.get("isReadyToUpgrade", True), "fogTypeId": fog.fog_type_id,
                "gpsMode": fog.gps_mode, "latitude": fog.config["latitude"], "longitude": fog.config["longitude"],
                **{k: v for k, v in fog.config.items() if k not in ("latitude", "longitude")},
            }

    def microservice_statuses(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {uuid: dict(ms.status) for uuid, ms in self.microservices.items() if ms.status}

    # -- recorded requests ----------------------------------------------------------------------

    def recorded(self, method: str | None = None, route: str | None = None) -> list[Recorded]:
        """The requests so far, optionally only ``method`` and ``route`` (e.g. ``"agent/status"``)."""
        with self.lock:
            return [
                r for r in self.requests
                if (method is None or r.method == method) and (route is None or r.route == route)
            ]

    def clear_requests(self) -> None:
        with self.lock:
            self.requests.clear()

    # -- the agent API -------------------------------------------------------------------------------

    def _fog_for(self, fog_uuid: str) -> Fog:
        fog = self.fogs.get(fog_uuid)
        if fog is None:
            raise _AUTH_FAILED
        return fog

    def _authorize(self, headers: dict[str, str]) -> Fog:
        """authorization-decorator.js: the raw token; an authorised call slides the expiry."""
        token = headers.get("authorization")
        if token is None:
            captured = exchange("E1")
            raise _Reply(500, json.loads(captured.response))
        now = self.clock()
        for fog in self.fogs.values():
            if fog.token is not None and fog.token == token:
                if fog.token_expiry < now:
                    raise _error(401, "AuthenticationError", "token expired")
                fog.token_expiry += TOKEN_LIFETIME
                fog.last_active = int(now * 1000)
                return fog
        raise _AUTH_FAILED

    def _provision(self, body: Any) -> tuple[int, Any]:
        message = validate(body, PROVISION_SCHEMA)
        if message:
            raise _validation(message)
        fog = next((f for f in self.fogs.values() if f.key is not None and f.key == body["key"]), None)
        if fog is None:
            raise _not_found("Invalid Provisioning Key")
        if fog.key_expiry < self.clock():
            raise _error(401, "AuthenticationError", "Expired provision key")
        fog_type = int(body["type"])
        invalid = [m for m in self.microservices.values() if m.fog_uuid == fog.uuid and fog_type not in m.images]
        if invalid:
            # agent-service.js _checkMicroservicesFogType (not captured; text from the 3.0 source).
            text = "Some of microservices haven't proper docker images for this ioFog type. List of invalid microservices:\n"
            text += "".join(f' "{m.name}" microservice\n' for m in invalid)
            raise _validation(text)
        fog.token = next(self._tokens) if self._tokens is not None else self._new_id(16)
        fog.token_expiry = self.clock() + TOKEN_LIFETIME
        fog.fog_type_id = fog_type
        fog.key = None
        return 200, {"uuid": fog.uuid, "token": fog.token}

    def _visible(self, fog: Fog) -> list[Microservice]:
        return [m for m in self.microservices.values() if m.fog_uuid == fog.uuid and fog.fog_type_id in m.images]

    def _status(self, fog: Fog, body: Any) -> tuple[int, Any]:
        message = validate(body, STATUS_SCHEMA)
        if message:
            raise _validation(message)
        raw = body.get("microserviceStatus")
        if raw is None:
            raise _syntax_error_500('"undefined" is not valid JSON')
        try:
            items = json.loads(raw)
        except ValueError:
            raise _syntax_error_500(f'Unexpected token, "{raw[:30]}" is not valid JSON') from None
        if not isinstance(items, list):
            raise _Reply(500, {"name": "TypeError", "message": "microserviceStatus is not iterable",
                               "stack": "TypeError: microserviceStatus is not iterable\n    at <stand-in>"})
        fog.status = dict(body)
        for item in items:
            ms = self.microservices.get(item.get("id", "")) if isinstance(item, dict) else None
            if ms is not None and ms.fog_uuid == fog.uuid:
                ms.status = dict(item)
        return 204, None

    def _config_patch(self, fog: Fog, body: Any) -> tuple[int, Any]:
        message = validate(body, CONFIG_SCHEMA)
        if message:
            raise _validation(message)
        for key, value in body.items():
            if key == "gpsMode":
                fog.gps_mode = value
            elif key in DEFAULT_CONFIG and key not in ("routerHost", "routerPort"):
                fog.config[key] = value
        return 204, None

    def _reset_changes(self, fog: Fog, body: Any) -> tuple[int, Any]:
        # change-tracking: reset only if nothing changed after the echoed lastUpdated (6.2).
        message = validate(body, RESET_CHANGES_SCHEMA)
        if message:
            raise _validation(message)
        try:
            echoed = round(parse_iso(body["lastUpdated"]) * 1000)
        except ValueError:
            raise _validation("Invalid format for field 'lastUpdated'") from None
        if fog.flags_updated <= echoed:
            fog.flags = dict.fromkeys(CHANGE_FLAGS, False)
            self._touch(fog)
        return 200, {}

    def _microservices(self, fog: Fog) -> tuple[int, Any]:
        visible = self._visible(fog)
        answer = {"microservices": [m.agent_view(fog.fog_type_id) for m in visible]}
        for ms in visible:
            ms.rebuild = False  # the first GET clears rebuild (6.4)
        return 200, answer

    def _microservice(self, fog: Fog, ms_uuid: str) -> tuple[int, Any]:
        ms = self.microservices.get(ms_uuid)
        if ms is None or ms.fog_uuid != fog.uuid:
            raise _not_found(f"Invalid microservice UUID '{ms_uuid}'")
        created = iso_ms(fog.created)
        images = [{"containerImage": img, "fogTypeId": t} for t, img in sorted(ms.images.items())]
        # agent2.log M1: the full database object.
        return 200, {"microservice": {
            "configLastUpdated": int(fog.created * 1000), "logSize": ms.log_size, "uuid": ms.uuid,
            "config": ms.config, "name": ms.name, "isNetwork": False, "rebuild": ms.rebuild,
            "rootHostAccess": ms.root_host_access, "imageSnapshot": "", "delete": False,
            "deleteWithCleanup": False, "createdAt": created, "updatedAt": iso_ms(self.clock()),
            "applicationId": None if ms.system else 1, "catalog_item_id": 15 if ms.system else None,
            "iofog_uuid": fog.uuid, "catalogItemId": 15 if ms.system else None, "registryId": ms.registry_id,
            "iofogUuid": fog.uuid, "userId": 1, "env": ms.env, "extraHosts": ms.extra_hosts, "cmd": ms.cmd,
            "ports": ms.port_mappings, "volumeMappings": ms.volume_mappings, "strace": None,
            "images": [] if ms.system else images, "registry": {"id": ms.registry_id},
            "catalogItem": {"picture": "none.png", "registryId": 1, "category": "SYSTEM", "images": images}
            if ms.system else None,
            "iofog": {"daemonStatus": fog.status.get("daemonStatus", "UNKNOWN")}, "routes": ms.routes,
        }}

    def _strace_put(self, fog: Fog, body: Any) -> tuple[int, Any]:
        for item in body.get("straceData", []) if isinstance(body, dict) else []:
            ms = self.microservices.get(item.get("microserviceUuid", ""))
            if ms is None or not ms.strace or ms.fog_uuid != fog.uuid:
                raise _not_found(f"Invalid microservice UUID '{item.get('microserviceUuid')}'")
        return 204, None

    def _deprovision(self, fog: Fog, body: Any) -> tuple[int, Any]:
        message = validate(body, DEPROVISION_SCHEMA)
        if message:
            raise _validation(message)
        # agent6.log D1-D3: the token stays valid; the fog looks offline; listed microservices DELETING.
        fog.status = {**fog.status, "daemonStatus": "UNKNOWN", "ipAddress": "0.0.0.0", "ipAddressExternal": "0.0.0.0"}
        for ms_uuid in body["microserviceUuids"]:
            ms = self.microservices.get(ms_uuid)
            if ms is not None and ms.fog_uuid == fog.uuid:
                ms.status = {**ms.status, "status": "DELETING"}
        return 204, None

    def _hal(self, body: Any) -> tuple[int, Any]:
        message = validate(body, HAL_SCHEMA)
        if message:
            raise _validation(message)
        return 204, None

    def dispatch(self, method: str, route: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
        """Answer one call to ``/api/v3/<route>``; raises ``_Reply`` for errors."""
        if route == "status" and method == "GET":
            now = self.clock()
            return 200, {
                "status": "online", "timestamp": int(now * 1000), "uptimeSec": round(now - self.started, 3),
                "versions": {"controller": CONTROLLER_VERSION, "ecnViewer": ECN_VIEWER_VERSION},
            }
        if route == "agent/provision" and method == "POST":
            return self._provision(body)
        simple: dict[tuple[str, str], Callable[[Fog], tuple[int, Any]]] = {
            ("GET", "agent/config"): lambda fog: (200, dict(fog.config)),
            ("PATCH", "agent/config"): lambda fog: self._config_patch(fog, body),
            ("GET", "agent/config/changes"): lambda fog: (200, self.changes(fog.uuid)),
            ("PATCH", "agent/config/changes"): lambda fog: self._reset_changes(fog, body),
            ("PUT", "agent/status"): lambda fog: self._status(fog, body),
            ("GET", "agent/microservices"): self._microservices,
            ("GET", "agent/registries"): lambda fog: (200, {"registries": [dict(r) for r in self.registries]}),
            ("GET", "agent/edgeResources"): lambda fog: (200, {"edgeResources": list(fog.edge_resources)}),
            ("GET", "agent/tunnel"): self._tunnel,
            ("PUT", "agent/strace"): lambda fog: self._strace_put(fog, body),
            ("PUT", "agent/hal/hw"): lambda fog: self._hal(body),
            ("PUT", "agent/hal/usb"): lambda fog: self._hal(body),
            ("POST", "agent/deprovision"): lambda fog: self._deprovision(fog, body),
            ("DELETE", "agent/delete-node"): self._delete_node,
            ("GET", "agent/strace"): self._strace_get,
            ("GET", "agent/version"): self._version,
            ("GET", "agent/image-snapshot"): self._image_snapshot,
        }
        if route.startswith("routes") and headers.get("authorization") == USER_TOKEN:
            answer = self._user_routes(method, route, body)
            if answer is not None:
                return answer
        handler = simple.get((method, route))
        match = re.fullmatch(r"agent/microservices/([^/]+)", route)
        if handler is None and not (match and method == "GET"):
            if route.startswith(("user/", "iofog", "application", "microservices", "router", "fog-types", "registries",
                                 "routes")):
                # The user API exists but this stand-in issues no user tokens (drive it from Python).
                if "authorization" not in headers:
                    raise _Reply(500, json.loads(exchange("E1").response))
                raise _AUTH_FAILED
            raise _Reply(404, html=f"Cannot {method} {API}{route}")
        fog = self._authorize(headers)
        if handler is None and match:
            return self._microservice(fog, match.group(1))
        assert handler is not None
        return handler(fog)

    def _tunnel(self, fog: Fog) -> tuple[int, Any]:
        # Opening a tunnel needs Controller settings the captures lacked (agent9.log TU1).
        raise _not_found("Tunnel not found")

    def _delete_node(self, fog: Fog) -> tuple[int, Any]:
        self.delete_fog(fog.uuid)  # agent8.log N4, N5: the token is dead afterwards
        return 204, None

    def _strace_get(self, fog: Fog) -> tuple[int, Any]:
        values = [{"microserviceUuid": m.uuid, "straceRun": True} for m in self._visible(fog) if m.strace]
        if not values:
            raise _not_found("Strace not found")
        return 200, {"straceValues": values}

    def _version(self, fog: Fog) -> tuple[int, Any]:
        if fog.version_command is None:
            raise _not_found("Version command not found")
        return 200, dict(fog.version_command)

    def _image_snapshot(self, fog: Fog) -> tuple[int, Any]:
        if fog.image_snapshot is None:
            raise _not_found("Image snapshot not found")
        return 200, {"uuid": fog.image_snapshot}


class _Handler(BaseHTTPRequestHandler):
    """Express as the Controller configures it: body-parser JSON, routes, finalhandler's HTML pages."""

    standin: ControllerStandIn
    protocol_version = "HTTP/1.1"
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (ssl.SSLError, ConnectionError, socket.timeout):
            self.close_connection = True

    def _handle(self) -> None:
        st = self.standin
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        path = self.path.split("?", 1)[0]
        content_type = headers.get("content-type", "")
        body: Any = {}
        bad_json = False
        if raw and "json" in content_type:
            text = raw.decode("utf-8", "replace")
            try:
                body = json.loads(text)
                # body-parser's strict mode: only objects and arrays.
                bad_json = not text.lstrip().startswith(("{", "["))
            except ValueError:
                bad_json = True
        with st.lock:
            st.requests.append(Recorded(self.command, self.path, headers, None if bad_json or not raw else body, raw))
        if st._hang.is_set():
            st._release.wait()
            self.close_connection = True
            return
        if bad_json:
            self._send(_Reply(400, html="Bad Request"))
            return
        route = path[len(API):].rstrip("/") if path.startswith(API) else None
        if route is None:
            self._send(_Reply(404, html=f"Cannot {self.command} {path}"))
            return
        fault = st._fault_for(self.command, route)
        if fault is not None:
            self._send(fault)
            return
        try:
            with st.lock:
                status, answer = st.dispatch(self.command, route, headers, body)
        except _Reply as reply:
            self._send(reply)
            return
        self._send(_Reply(status, answer))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def _send(self, reply: _Reply) -> None:
        if reply.html is not None:
            payload = HTML_PAGE.format(reply.html).encode("utf-8")
            content_type: str | None = "text/html; charset=utf-8"
        elif reply.status == 204 or reply.body is None:
            payload, content_type = b"", None
        else:
            payload = js_json(reply.body).encode("utf-8")
            content_type = "application/json; charset=utf-8"
        self.send_response_only(reply.status)
        self.send_header("X-Powered-By", "Express")
        self.send_header("Date", formatdate(usegmt=True))
        if 200 <= reply.status < 300:
            self.send_header("X-Timestamp", str(int(self.standin.clock() * 1000)))
        if reply.html is not None:
            self.send_header("Content-Security-Policy", "default-src 'none'")
            self.send_header("X-Content-Type-Options", "nosniff")
        if content_type:
            self.send_header("Content-Type", content_type)
        if reply.status != 204:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload and self.command != "HEAD":
            self.wfile.write(payload)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, interval: float = 0.01) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes; the caller asserts the result."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()
