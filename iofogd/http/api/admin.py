"""Admin endpoints (docs/local-api.md): token-protected, called by the CLI and admins."""
from __future__ import annotations

import time
from datetime import datetime

from iofogd import __version__
from iofogd.app import App
from iofogd.commands import run_command
from iofogd.errors import BadRequest, ProvisionError
from iofogd.http.request import Request, Response
from iofogd.reports import info_report, report_json, status_report

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Any


class StatusBody:
    """The body of GET /v2/status, built again only when one of its inputs changed.

    The inputs are those of :meth:`App.status`: the state and resource
    snapshots (immutable, replaced on every change, so compared by identity),
    the engine figures and the minute (the report's clock shows minutes).
    Building the report and its JSON was most of the endpoint's cost; the
    status CLI and monitoring poll it.
    """

    def __init__(self) -> None:
        self._cached: tuple[Any, bytes] = (None, b"")

    def get(self, app: App) -> bytes:
        engine = app.engine_info()   # first: during start-up it waits, and the state then says RUNNING
        now = time.time()
        key = (app.state.snapshot(), app.sampler.snapshot(), engine.running, engine.error, int(now) // 60,
               app.router_status())
        cached = self._cached   # one read: another thread may replace it
        if cached[0] == key:
            return cached[1]
        report = status_report(key[0], key[1], engine, datetime.fromtimestamp(now), key[5])
        body = Response.json(report_json(report)).body
        self._cached = (key, body)
        return body


_status_body = StatusBody()


def status(request: Request, app: App) -> Response:
    return Response(200, _status_body.get(app))


def info(request: Request, app: App) -> Response:
    cfg = app.config.current
    report = info_report(cfg, app.network.current(), cfg.fog_type)
    return Response.json(report_json(report))


def version(request: Request, app: App) -> Response:
    return Response.json({"version": __version__})


def config(request: Request, app: App) -> Response:
    """docs/local-api.md#config: long names, string values; 200 with per-key errors ({} if none)."""
    request.require_json_type()
    return Response.json(app.config.apply_long_names(request.json_object()))


def commandline(request: Request, app: App) -> Response:
    request.require_json_type()
    command = request.json_object().get("command")
    if not isinstance(command, str):
        raise BadRequest("Field 'command' must be a string")
    result = run_command(app, command)
    if result.ok:
        return Response.json({"response": result.text})
    # The CLI reads "response"; everything else reads our one error shape.
    return Response.json(
        {"status": "failed", "error": result.text.replace("\\n", " ").strip(), "response": result.text},
        status=result.status,
    )


def provision(request: Request, app: App) -> Response:
    """docs/local-api.md#provision, fixed: 200 {"status":"ok","uuid":...}, never the node token."""
    request.require_json_type()
    key = request.json_object().get("provisioning-key")
    if not isinstance(key, str) or not key.strip():
        raise BadRequest("Missing required property 'provisioning-key'")
    try:
        uuid = app.phase2("the Controller client").provisioning.provision(key.strip())
    except ProvisionError as exc:
        return Response.json({"status": "failed", "error": exc.message}, status=500)
    return Response.json({"status": "ok", "uuid": uuid})


def deprovision(request: Request, app: App) -> Response:
    try:
        message = app.phase2("the Controller client").provisioning.deprovision()
    except ProvisionError as exc:
        return Response.json({"status": "failed", "error": exc.message, "message": exc.message}, status=500)
    return Response.json({"message": message, "status": "success"})


def prune(request: Request, app: App) -> Response:
    reclaimed = app.phase2("the Docker engine client").microservices.prune_unused()
    return Response.json({"status": "ok", "spaceReclaimed": reclaimed})
