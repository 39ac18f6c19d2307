"""/v2/gps (docs/local-api.md#gps), no token, with the 400 fixes of docs/compatibility.md.

A POST goes through :class:`iofogd.config.gps.GpsUpdates` (``app.gps``): the
admin's GPS modes ``off`` and ``manual`` are kept (403 without the admin token),
an unchanged position writes nothing, and config.xml is written at most once
per few seconds (issue 12).
"""
from __future__ import annotations

import time

from iofogd.app import App
from iofogd.errors import BadRequest, ConfigValueError, Forbidden
from iofogd.http.request import Request, Response


def get(request: Request, app: App) -> Response:
    lat, sep, lon = app.gps.coordinates().partition(",")
    if not sep or not lat.strip() or not lon.strip():
        # Upstream dropped the connection here (docs/local-api.md#gps).
        raise BadRequest("GPS coordinates are not set")
    return Response.json(
        {"status": "okay", "timestamp": int(time.time() * 1000), "lat": lat.strip(), "lon": lon.strip()}
    )


def post(request: Request, app: App) -> Response:
    request.require_json_type()
    body = request.json_object()
    lat, lon = body.get("lat"), body.get("lon")
    if not isinstance(lat, str) or not isinstance(lon, str):
        raise BadRequest("Fields 'lat' and 'lon' must be strings")
    try:
        taken = app.gps.submit(lat, lon, admin=app.token.matches(request.header("Authorization")))
    except ConfigValueError as exc:
        raise BadRequest(f"Error with setting GPS: {exc.message}") from exc
    if not taken:
        mode = app.config.current.gps_mode
        raise Forbidden(f"GPS mode is '{mode}', set by the admin: a microservice cannot change it "
                        "(the admin can allow it with: iofog-agent config -gps auto)")
    return Response.json({"status": "okay"})
