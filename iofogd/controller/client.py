"""HTTP client for the ioFog Controller 3.0.x agent API (docs/controller-api.md#client, #endpoints).

Theory of operation: one fresh ``http.client`` connection per call (the calls
are seconds apart; keep-alive would only add stale-socket failures). Every call
has a connect timeout and a read timeout: upstream has no read timeout, so a
Controller that accepts and never answers hangs the Java agent's loops; here it
costs at most ``read_timeout`` per socket read.

Headers as the Java agent sends them (docs/controller-api.md#conventions):
``Authorization: <token>`` (the raw token, no ``Bearer``: the Controller answers
401 to a Bearer prefix), ``Request-Id: <uuid4>`` and
``Content-Type: application/json``. Writes with no payload send ``{}``.

Failures become the exception tree of :mod:`iofogd.errors`:

* the Controller answered 4xx/5xx -> ``ControllerError(message, status)`` where
  ``message`` is the Controller's own ``message`` (upstream shows it verbatim,
  e.g. ``Invalid Provisioning Key``); HTML pages from Express (unknown route,
  malformed JSON) become ``HTTP <status>: <text of the page>``;
* no connection, a timeout, a dropped connection -> ``ControllerUnreachable``;
* TLS verification or handshake failure -> ``CertificateError``;
* secure mode with an ``http`` URL -> ``ControllerUnreachable`` (upstream:
  "unable to connect over non-secure connection").

:func:`explain` turns any of them into a sentence for a human.
"""
from __future__ import annotations

import http.client
import json
import logging
import os
import re
import socket
from urllib.parse import quote, urlsplit

from iofogd.errors import CertificateError, ControllerError, ControllerUnreachable

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    import ssl
    from typing import Any

log = logging.getLogger(__name__)

# A Controller answer larger than this is refused rather than held in memory.
MAX_RESPONSE = 32 * 1024 * 1024


def normalize_url(url: str) -> str:
    """``controller_url`` with exactly one trailing slash (docs/controller-api.md#client: routes are ``<base>agent/...``)."""
    return url.rstrip("/") + "/"


def request_id() -> str:
    """A random (version 4) UUID for the Request-Id header. Formatted here so
    that the daemon does not import the uuid module (platform, ctypes lookups)."""
    h = bytearray(os.urandom(16))
    h[6] = (h[6] & 0x0F) | 0x40   # version 4 (RFC 4122 section 4.4)
    h[8] = (h[8] & 0x3F) | 0x80   # the RFC 4122 variant
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


class _Connection(http.client.HTTPConnection):
    """Plain HTTP; after connecting, the socket timeout becomes the read timeout."""

    def __init__(self, host: str, port: int | None, connect_timeout: float, read_timeout: float) -> None:
        super().__init__(host, port, timeout=connect_timeout)
        self.read_timeout = read_timeout

    def connect(self) -> None:
        super().connect()
        self.sock.settimeout(self.read_timeout)


def _html_text(body: str) -> str:
    """The ``<pre>`` text of an Express error page, or the body with tags stripped."""
    match = re.search(r"<pre>(.*?)</pre>", body, re.S)
    text = match.group(1) if match else re.sub(r"<[^>]+>", " ", body)
    return " ".join(text.split())


class ControllerClient:
    """The agent's calls to one Controller; thread-safe (no shared connection)."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None,
        cert_path: str | None,
        secure_mode: bool,
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        self.base_url = normalize_url(base_url)
        self.token = token
        self.cert_path = cert_path
        self.secure_mode = secure_mode
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        parts = urlsplit(self.base_url)
        self._scheme = parts.scheme.lower()
        self._host = parts.hostname or ""
        self._port = parts.port
        self._path = parts.path or "/"
        self._context: ssl.SSLContext | None = None

    # -- transport ---------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        if self._scheme not in ("http", "https") or not self._host:
            raise ControllerUnreachable(f"controller_url {self.base_url!r} is not an http(s) URL")
        if self._scheme == "http":
            if self.secure_mode:
                raise ControllerUnreachable(
                    "unable to connect over non-secure connection: secure mode is on and controller_url is http"
                )
            return _Connection(self._host, self._port, self.connect_timeout, self.read_timeout)
        # Imported here: ssl (OpenSSL) is loaded only for an https Controller (docs/host.md#memory).
        from iofogd.controller.tls import TLSConnection, tls_context

        if self._context is None:
            self._context = tls_context(self.cert_path)
        return TLSConnection(self._host, self._port, self.connect_timeout, self.read_timeout, self._context)

    def request(self, method: str, route: str, body: Any = None, *, auth: bool = True) -> Any:
        """Send one call to ``<base>route`` and return the parsed JSON answer (``{}`` for an empty one)."""
        headers = {"Request-Id": request_id(), "Content-Type": "application/json", "Accept": "application/json"}
        if auth and self.token:
            headers["Authorization"] = self.token
        payload: bytes | None = None
        if method in ("POST", "PUT", "PATCH"):
            # docs/controller-api.md#client: an empty JSON object is sent when there is no payload.
            payload = json.dumps({} if body is None else body, separators=(",", ":")).encode("utf-8")
        url = self._path + route
        conn = self._connection()
        try:
            try:
                conn.request(method, url, body=payload, headers=headers)
                resp = conn.getresponse()
                raw = resp.read(MAX_RESPONSE + 1)
            except socket.timeout as exc:
                raise ControllerUnreachable(
                    f"controller at {self.base_url} did not answer {method} {route} in time"
                ) from exc
            except (OSError, http.client.HTTPException) as exc:
                raise ControllerUnreachable(f"unable to connect to the controller at {self.base_url}: {exc}") from exc
        finally:
            conn.close()
        if len(raw) > MAX_RESPONSE:
            raise ControllerError(f"controller answer to {method} {route} exceeds {MAX_RESPONSE} bytes", resp.status)
        return self._parse(method, route, resp, raw)

    @staticmethod
    def _parse(method: str, route: str, resp: http.client.HTTPResponse, raw: bytes) -> Any:
        text = raw.decode("utf-8", "replace")
        content_type = resp.getheader("Content-Type", "") or ""
        data: Any = None
        if text.strip() and "html" not in content_type:
            try:
                data = json.loads(text)
            except ValueError:
                data = None
        if 200 <= resp.status < 300:
            if not text.strip():
                return {}
            if data is None:
                raise ControllerError(f"controller answered {method} {route} with a body that is not JSON", resp.status)
            return data
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            message = data["message"]
        elif text.strip():
            message = f"HTTP {resp.status}: {_html_text(text)}"
        else:
            message = f"HTTP {resp.status} {resp.reason}"
        raise ControllerError(message, resp.status)

    # -- the agent API (docs/controller-api.md#endpoints) ---------------------------

    def ping(self) -> dict[str, Any]:
        """GET status (no auth). OK when ``status`` is not null (docs/controller-api.md#client)."""
        answer = self.request("GET", "status", auth=False)
        if not isinstance(answer, dict) or answer.get("status") is None:
            raise ControllerError("controller status answer has no 'status'", 200)
        return answer

    def provision(self, key: str, fog_type: int) -> dict[str, str]:
        """POST agent/provision ``{"key","type"}`` -> ``{"uuid","token"}``; sent without a token."""
        answer = self.request("POST", "agent/provision", {"key": key, "type": fog_type}, auth=False)
        if not (isinstance(answer, dict) and isinstance(answer.get("uuid"), str) and isinstance(answer.get("token"), str)):
            raise ControllerError("controller provisioning answer lacks uuid or token", 200)
        return {"uuid": answer["uuid"], "token": answer["token"]}

    def deprovision(self, microservice_uuids: list[str]) -> None:
        """POST agent/deprovision; ``microserviceUuids`` is required by the Controller (may be empty)."""
        self.request("POST", "agent/deprovision", {"microserviceUuids": list(microservice_uuids)})

    def put_status(self, status: dict[str, Any]) -> None:
        self.request("PUT", "agent/status", status)

    def get_config(self) -> dict[str, Any]:
        return self._object("GET", "agent/config")

    def patch_config(self, config: dict[str, Any]) -> None:
        self.request("PATCH", "agent/config", config)

    def get_changes(self) -> dict[str, Any]:
        return self._object("GET", "agent/config/changes")

    def ack_changes(self, last_updated: str) -> None:
        """PATCH agent/config/changes echoing ``lastUpdated`` from the GET (resets the flags)."""
        self.request("PATCH", "agent/config/changes", {"lastUpdated": last_updated})

    def get_microservices(self) -> list[dict[str, Any]]:
        return self._list("agent/microservices", "microservices")

    def get_microservice(self, microservice_uuid: str) -> dict[str, Any]:
        answer = self._object("GET", "agent/microservices/" + quote(microservice_uuid, safe=""))
        item = answer.get("microservice")
        if not isinstance(item, dict):
            raise ControllerError("controller answer lacks 'microservice'", 200)
        return item

    def get_registries(self) -> list[dict[str, Any]]:
        return self._list("agent/registries", "registries")

    def get_edge_resources(self) -> list[dict[str, Any]]:
        return self._list("agent/edgeResources", "edgeResources")

    def delete_node(self) -> None:
        self.request("DELETE", "agent/delete-node")

    def _object(self, method: str, route: str) -> dict[str, Any]:
        answer = self.request(method, route)
        if not isinstance(answer, dict):
            raise ControllerError(f"controller answer to {route} is not a JSON object", 200)
        return answer

    def _list(self, route: str, key: str) -> list[dict[str, Any]]:
        items = self._object("GET", route).get(key)
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise ControllerError(f"controller answer to {route} lacks a '{key}' list of objects", 200)
        return items


# The Controller's own texts (docs/controller-api.md#auth-errors) and what they mean.
_EXPLANATIONS = {
    "Invalid Provisioning Key": "the key is unknown, already used, or replaced by a newer key for this node",
    "Expired provision key": "the key is older than 20 minutes; ask the Controller for a new one",
    "authorization failed": "the Controller does not know this node's token "
    "(the node was deleted or provisioned again elsewhere); provision again",
    "token expired": "the node's token expired after a long time without contact; provision again with a new key",
}


def explain(exc: ControllerError) -> str:
    """A clear, one-line account of a Controller failure for logs, the CLI and the Local API."""
    if isinstance(exc, CertificateError):
        return f"Certificate error: {exc.message}"
    if isinstance(exc, ControllerUnreachable):
        return f"Connection error: unable to connect to fog controller. ({exc.message})"
    hint = _EXPLANATIONS.get(exc.message)
    if hint is None and exc.status == 400 and "docker images for this ioFog type" in exc.message:
        hint = "the node's microservices have no image for this fog type (arm or intel_amd)"
    return f"{exc.message} ({hint})" if hint else exc.message
