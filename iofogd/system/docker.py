"""A small Docker Engine client: HTTP/1.1 over the engine's unix socket (or TCP).

One fresh connection per call (the engine closes idle ones anyway, and a call
never inherits a half-read stream); the API version is negotiated once from
``GET /version`` and forgotten whenever the engine goes away, so an engine
upgraded while it was down is negotiated again. Every failure leaves as an
:class:`~iofogd.errors.DockerError`: the engine's own status and message, or
:class:`~iofogd.errors.EngineUnavailable` when nothing answers, never a raw
``OSError``. Paths, bodies and stream parsing live in
:mod:`iofogd.system.dockerproto`.
"""
from __future__ import annotations

import http.client
import json
import logging
import socket
import threading

from iofogd.errors import DockerError, EngineUnavailable
from iofogd.system import dockerproto as proto

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Any, Callable, Mapping, Optional

log = logging.getLogger(__name__)


class UnixHTTPConnection(http.client.HTTPConnection):
    """``HTTPConnection`` whose socket is a unix stream socket (as supervisor's xmlrpc.py)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class DockerClient:
    """The dozen Engine API calls iofogd needs; thread-safe (no shared connection)."""

    def __init__(self, docker_url: str, timeout: float = 30.0) -> None:
        self.url = docker_url
        self.timeout = timeout
        self._target = proto.parse_docker_url(docker_url)
        self._version: Optional[str] = None
        self._lock = threading.Lock()

    # -- transport -------------------------------------------------------------

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._target.scheme == "unix":
            return UnixHTTPConnection(self._target.path, timeout)
        return http.client.HTTPConnection(self._target.host, self._target.port, timeout=timeout)

    def _send(
        self,
        method: str,
        target: str,
        body: Optional[bytes],
        headers: Mapping[str, str],
        timeout: float,
        on_line: Optional[Callable[[bytes], None]],
    ) -> tuple[int, bytes]:
        conn = self._connection(timeout)
        try:
            conn.request(method, target, body=body, headers=dict(headers))
            resp = conn.getresponse()
            if on_line is not None and 200 <= resp.status < 300:
                # streamed endpoints: one JSON object per line, possibly for minutes
                while True:
                    line = resp.readline()
                    if not line:
                        return resp.status, b""
                    on_line(line)
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException) as exc:
            # refused, missing socket, reset, timeout, a truncated answer: no engine
            # we can talk to right now. Forget the version: it may come back as another.
            self._version = None
            raise EngineUnavailable(f"no Docker engine answers on {self.url}: {exc}") from exc
        finally:
            conn.close()

    def api_version(self) -> str:
        """The negotiated API version (``GET /version`` on first use)."""
        with self._lock:
            version = self._version
        if version is None:
            status, data = self._send("GET", "/version", None, {"Host": "docker"}, self.timeout, None)
            if status != 200:
                raise DockerError(status, proto.error_message(status, data))
            version = proto.negotiate_version(_json(data))
            with self._lock:
                self._version = version
        return version

    def call(
        self,
        method: str,
        *segments: str,
        query: Optional[Mapping[str, Any]] = None,
        body: Any = None,
        headers: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        on_line: Optional[Callable[[bytes], None]] = None,
        ok: tuple[int, ...] = (),
    ) -> tuple[int, bytes]:
        """One versioned request; a status >= 400 not in ``ok`` raises DockerError.

        ``body`` is JSON-encoded unless it is bytes (then sent as a tar).
        """
        target = proto.api_path(self.api_version(), *segments, query=query)
        hdrs = {"Host": "docker"}
        data: Optional[bytes] = None
        if isinstance(body, (bytes, bytearray)):
            data = bytes(body)
            hdrs["Content-Type"] = "application/x-tar"
        elif body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        status, payload = self._send(method, target, data, hdrs, timeout or self.timeout, on_line)
        if status >= 400 and status not in ok:
            raise DockerError(status, proto.error_message(status, payload))
        return status, payload

    def stream(self, method: str, *segments: str, query: Mapping[str, Any], body: Any = None,
                headers: Optional[Mapping[str, str]] = None,
                on_object: Optional[Callable[[dict[str, Any]], None]] = None) -> None:
        """A streamed call whose errors may arrive inside a 200 (pull, push, import)."""
        errors: list[str] = []

        def line(raw: bytes) -> None:
            obj = proto.parse_stream_line(raw)
            if obj is None:
                return
            err = proto.stream_error(obj)
            if err:
                errors.append(err)
            elif on_object is not None:
                on_object(obj)

        self.call(method, *segments, query=query, body=body, headers=headers, on_line=line)
        if errors:
            raise DockerError(200, errors[-1])

    # -- the API ---------------------------------------------------------------

    def ping(self) -> bool:
        """True when the engine answers ``/_ping`` (raises EngineUnavailable otherwise)."""
        status, data = self._send("GET", "/_ping", None, {"Host": "docker"}, self.timeout, None)
        return status == 200

    def version(self) -> dict[str, Any]:
        return dict(_json(self.call("GET", "version")[1]))

    def list_containers(self, *, all: bool = True, label: Optional[str] = None) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"all": all}
        if label:
            query["filters"] = proto.label_filter(label)
        return list(_json(self.call("GET", "containers", "json", query=query)[1]))

    def inspect_container(self, ref: str) -> Optional[dict[str, Any]]:
        """The container's inspect body, or None when there is no such container."""
        status, data = self.call("GET", "containers", ref, "json", ok=(404,))
        return None if status == 404 else dict(_json(data))

    def create_container(self, name: str, config: Mapping[str, Any]) -> str:
        status, data = self.call("POST", "containers", "create", query={"name": name}, body=config)
        doc = _json(data)
        for warning in doc.get("Warnings") or []:
            log.info("docker create %s: %s", name, warning)
        return str(doc["Id"])

    def start_container(self, ref: str) -> None:
        self.call("POST", "containers", ref, "start", ok=(304,))   # 304: already running

    def stop_container(self, ref: str, timeout: int = 10) -> None:
        self.call("POST", "containers", ref, "stop", query={"t": timeout},
                  timeout=self.timeout + timeout, ok=(304,))        # 304: already stopped

    def kill_container(self, ref: str, signal: str = "KILL") -> None:
        self.call("POST", "containers", ref, "kill", query={"signal": signal})

    def remove_container(self, ref: str, *, force: bool = False, volumes: bool = False) -> bool:
        """Remove a container; False if it was already gone."""
        status, _ = self.call("DELETE", "containers", ref, query={"force": force, "v": volumes}, ok=(404,))
        return status != 404

    def stats_once(self, ref: str) -> dict[str, Any]:
        """One stats sample; ``one-shot`` (API 1.41) skips the engine's 1 s second sample."""
        return dict(_json(self.call("GET", "containers", ref, "stats",
                                    query={"stream": False, "one-shot": True})[1]))

    def pull(
        self,
        image: str,
        auth: Optional[str] = None,
        progress: Optional[Callable[[float], None]] = None,
    ) -> None:
        """``POST /images/create?fromImage=``; ``auth`` is an X-Registry-Auth value.

        Raises DockerError for an error status or an error line inside the 200 stream.
        """
        ref = proto.parse_image_ref(image)
        tracker = proto.PullProgress()

        def on_object(obj: dict[str, Any]) -> None:
            if progress is not None:
                progress(tracker.feed(obj))

        self.stream("POST", "images", "create", query={"fromImage": ref.repository, "tag": ref.pull_tag},
                     headers={"X-Registry-Auth": auth} if auth else None, on_object=on_object)

    def inspect_image(self, ref: str) -> Optional[dict[str, Any]]:
        status, data = self.call("GET", "images", ref, "json", ok=(404,))
        return None if status == 404 else dict(_json(data))

    def list_images(self) -> list[dict[str, Any]]:
        return list(_json(self.call("GET", "images", "json")[1]))

    def remove_image(self, ref: str, *, force: bool = False) -> list[dict[str, Any]]:
        """``DELETE /images/{ref}``: the Untagged/Deleted list ([] if it was gone)."""
        status, data = self.call("DELETE", "images", ref, query={"force": force}, ok=(404,))
        return [] if status == 404 else list(_json(data))

    def remove_volume(self, name: str) -> None:
        self.call("DELETE", "volumes", name, ok=(404,))

    def disk_usage(self) -> dict[str, Any]:
        """``GET /system/df``: LayersSize is what image removal gives back."""
        return dict(_json(self.call("GET", "system", "df", timeout=max(self.timeout, 120.0))[1]))


def _json(data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8") or "null")
    except ValueError as exc:
        raise DockerError(200, f"the engine sent malformed JSON: {data[:80]!r}") from exc


class EngineClients:
    """One DockerClient per docker_url (it keeps the negotiated API version);
    a changed URL gets a new one (docs/config-xml.md#effect: the client is re-created)."""

    def __init__(self, docker_url: Callable[[], str]) -> None:
        self._docker_url = docker_url
        self._client: Optional[DockerClient] = None

    def __call__(self) -> DockerClient:
        url = self._docker_url()
        client = self._client
        if client is None or client.url != url:
            client = self._client = DockerClient(url)
        return client
