"""Endpoints microservices call (docs/local-api.md#config-get, #edge-resources), no token, as the SDKs expect."""
from __future__ import annotations

import json

from iofogd.app import App
from iofogd.errors import BadRequest
from iofogd.http.request import Request, Response


def check_caller(request: Request, app: App, microservice_id: str) -> None:
    """A container of ours may act only as its own microservice (issue 12): Forbidden (403)
    otherwise. The admin token, or a caller that is no container of ours, passes."""
    app.identity.check(request.peer, microservice_id, admin=app.token.matches(request.header("Authorization")))


def get_config(request: Request, app: App) -> Response:
    request.require_json_type()
    mid = request.json_object().get("id")
    if not isinstance(mid, str) or not mid.strip():
        raise BadRequest("Incorrect content/data: field 'id' must be a non-empty string")
    check_caller(request, app, mid)   # only its own configuration
    config = app.state.snapshot().microservice_configs.get(mid)
    if config is None:
        raise BadRequest(f"No configuration found for the id {mid}")
    # `config` is the string the Controller sent; SDKs JSON-parse it themselves.
    return Response.json({"status": "okay", "config": config})


def edge_resources(request: Request, app: App) -> Response:
    # A JSON array serialized into a string (double-encoded), as the SDKs read it.
    resources = list(app.state.snapshot().edge_resources)
    return Response.json({"edgeResources": json.dumps(resources, separators=(",", ":"))})
