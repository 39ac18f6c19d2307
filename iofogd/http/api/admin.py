"""Admin endpoints (spec 1.6.9-1.6.13): token-protected, called by the CLI and admins."""
from __future__ import annotations


from iofogd import __version__
from iofogd.app import App
from iofogd.commands import run_command
from iofogd.errors import BadRequest, ProvisionError
from iofogd.http.request import Request, Response
from iofogd.reports import info_report, report_json


def status(request: Request, app: App) -> Response:
    return Response.json(report_json(app.status()))


def info(request: Request, app: App) -> Response:
    cfg = app.config.current
    report = info_report(cfg, app.network.current(), cfg.fog_type)
    return Response.json(report_json(report))


def version(request: Request, app: App) -> Response:
    return Response.json({"version": __version__})


def config(request: Request, app: App) -> Response:
    """Spec 1.6.10: long names, string values; 200 with per-key errors ({} if none)."""
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
    """Spec 1.6.11, fixed: 200 {"status":"ok","uuid":...}, never the node token."""
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
