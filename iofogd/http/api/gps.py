"""/v2/gps (spec 1.6.6), no token, with the 400 fixes of compatibility.md."""
from __future__ import annotations

import time

from iofogd.app import App
from iofogd.errors import BadRequest, ConfigValueError
from iofogd.http.request import Request, Response


def get(request: Request, app: App) -> Response:
    coords = app.config.current.gps_coordinates
    lat, sep, lon = coords.partition(",")
    if not sep or not lat.strip() or not lon.strip():
        # Upstream dropped the connection here (spec 1.6.6).
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
        app.config.set_gps(lat, lon)
    except ConfigValueError as exc:
        raise BadRequest(f"Error with setting GPS: {exc.message}") from exc
    return Response.json({"status": "okay"})
