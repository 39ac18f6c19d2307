"""POST /v2/log (docs/local-api.md#log, docs/host.md#microservice-logs): a microservice writes a line to its own log files."""
from __future__ import annotations

from iofogd.app import App
from iofogd.errors import BadRequest, ServiceUnavailable
from iofogd.http.api.microservice import check_caller
from iofogd.http.request import Request, Response

_PREFIX = "Log message parsing error, "


def post(request: Request, app: App) -> Response:
    request.require_json_type()
    obj = request.json_object()
    for key in ("id", "type", "message"):
        if key not in obj:
            raise BadRequest(f"{_PREFIX}missing field {key}")
        if not isinstance(obj[key], str):
            raise BadRequest(f"{_PREFIX}field {key} must be a string")
    microservice = obj["id"]
    check_caller(request, app, microservice)   # a container writes only its own log
    bus = app.bus()
    sizes = bus.routing.log_sizes
    # Upstream had a logger only for microservices the Controller listed (its
    # message then was "Logger initialized null").
    if microservice not in sizes:
        raise BadRequest(f"{_PREFIX}no microservice with id {microservice} runs on this node")
    if bus.logs is None:
        raise ServiceUnavailable("Microservice logs are not available")
    try:
        bus.logs.write(microservice, sizes[microservice], obj["type"], obj["message"])
    except OSError as exc:
        raise ServiceUnavailable(f"Cannot write the log of {microservice}: {exc.strerror or exc}") from exc
    return Response.json({"status": "okay"})
