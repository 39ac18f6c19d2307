"""The route table and the endpoint functions, called directly: no socket, no subprocess."""
from __future__ import annotations

import json
from typing import Any

import pytest

from iofogd import __version__
from iofogd.errors import BadRequest, MethodNotAllowed, NotFound
from iofogd.http.request import Headers, Request
from iofogd.http.routes import CONTROL_SOCKET_PREFIX, MESSAGE_SOCKET_PREFIX, ROUTES, resolve

ADMIN = {"/v2/status", "/v2/info", "/v2/version", "/v2/config", "/v2/commandline", "/v2/provision",
         "/v2/deprovision", "/v2/prune"}


def test_the_admin_routes_and_only_they_need_the_token() -> None:
    assert {path for path, route in ROUTES.items() if route.auth} == ADMIN


def test_resolve_matches_the_path_exactly() -> None:
    route, handler = resolve("GET", "/v2/version")
    assert route is ROUTES["/v2/version"] and handler is route.methods["GET"]
    for path in ("/v2/versionx", "/v2/version/", "/v2/logout", "/v2", "/"):
        with pytest.raises(NotFound) as info:
            resolve("GET", path)
        assert info.value.message == f"Request not found: {path}"


def test_a_wrong_method_names_the_allowed_ones() -> None:
    with pytest.raises(MethodNotAllowed) as info:
        resolve("POST", "/v2/status")
    assert info.value.allowed == ("GET",) and info.value.status == 405
    with pytest.raises(MethodNotAllowed) as info:
        resolve("PUT", "/v2/gps")
    assert info.value.allowed == ("GET", "POST")


def test_socket_prefixes_are_not_routes() -> None:
    assert not any(path.startswith((CONTROL_SOCKET_PREFIX, MESSAGE_SOCKET_PREFIX)) for path in ROUTES)


def call(app: Any, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    headers = Headers([("Content-Type", "application/json")])
    raw = b"" if body is None else json.dumps(body).encode()
    _, handler = resolve(method, path)
    response = handler(Request(method, path, "", headers, raw), app)
    return response.status, json.loads(response.body)


def test_endpoints_called_directly(inproc_daemon: Any) -> None:
    app = inproc_daemon.app
    assert call(app, "GET", "/v2/version") == (200, {"version": __version__})
    status, body = call(app, "GET", "/v2/status")
    assert status == 200 and body["iofog-daemon"] == "RUNNING" and all(isinstance(v, str) for v in body.values())
    status, body = call(app, "GET", "/v2/info")
    assert status == 200 and body["iofog-uuid"] == "not provisioned"
    assert call(app, "POST", "/v2/config", {"status-frequency": "31"}) == (200, {})
    assert app.config.current.status_update_freq == 31
    status, body = call(app, "GET", "/v2/edgeResources")
    assert status == 200 and json.loads(body["edgeResources"]) == []
    with pytest.raises(BadRequest) as info:
        call(app, "POST", "/v2/config/get", {"id": "nobody"})
    assert info.value.message == "No configuration found for the id nobody"
    with pytest.raises(BadRequest) as info:
        call(app, "POST", "/v2/config/get", {"id": 5})
    assert "field 'id' must be a non-empty string" in info.value.message
    with pytest.raises(BadRequest) as info:   # the bus's own validation, before the bus is asked
        call(app, "POST", "/v2/messages/next", {})
    assert info.value.message == "Incorrect content/data Id value not found "
    with pytest.raises(BadRequest) as info:
        call(app, "POST", "/v2/commandline", {"command": 1})
    assert info.value.message == "Field 'command' must be a string"


def test_status_follows_every_change_at_once(inproc_daemon: Any) -> None:
    """/v2/status keeps its body only while its inputs are the same objects."""
    app = inproc_daemon.app
    assert call(app, "GET", "/v2/status")[1]["connection-to-controller"] == "not provisioned"
    inproc_daemon.state.update(controller_status="ok")
    assert call(app, "GET", "/v2/status")[1]["connection-to-controller"] == "ok"
    inproc_daemon.state.update(controller_status="not provisioned")
    assert call(app, "GET", "/v2/status")[1]["connection-to-controller"] == "not provisioned"
