"""The Local API's route table, pure: (method, path) -> handler and its checks.

Upstream matched prefixes of the raw URI including the query (docs/local-api.md#routing), so
``/v2/logout`` reached the log handler. We match the path exactly, after the
query string is cut off; the two WebSocket routes carry an id segment.
"""
from __future__ import annotations

from iofogd.errors import MethodNotAllowed, NotFound
from iofogd.http.api import admin, gps, log, messages, microservice
from iofogd.record import Record
from iofogd.ws.paths import CONTROL_SOCKET_PREFIX, MESSAGE_SOCKET_PREFIX

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Callable, Final

    from iofogd.app import App
    from iofogd.http.request import Request, Response

    Handler = Callable[[Request, App], Response]


class Route(Record):
    __slots__ = ("methods", "auth")
    methods: Final[dict[str, Handler]]
    auth: Final[bool]  # the admin token is required (docs/local-api.md#checks)

    def __init__(self, methods: dict[str, Handler], auth: bool = False) -> None:
        self.methods = methods
        self.auth = auth


# WebSocket upgrades are recognised by the HTTP handler itself (it owns the
# socket) by these path prefixes, defined once in the WebSocket layer.

ROUTES: dict[str, Route] = {
    "/v2/status": Route({"GET": admin.status}, auth=True),
    "/v2/info": Route({"GET": admin.info}, auth=True),
    "/v2/version": Route({"GET": admin.version}, auth=True),
    "/v2/config": Route({"POST": admin.config}, auth=True),
    "/v2/commandline": Route({"POST": admin.commandline}, auth=True),
    "/v2/provision": Route({"POST": admin.provision}, auth=True),
    "/v2/deprovision": Route({"DELETE": admin.deprovision}, auth=True),
    "/v2/prune": Route({"POST": admin.prune}, auth=True),
    "/v2/gps": Route({"GET": gps.get, "POST": gps.post}),
    "/v2/config/get": Route({"POST": microservice.get_config}),
    "/v2/edgeResources": Route({"GET": microservice.edge_resources}),
    "/v2/messages/next": Route({"POST": messages.next_messages}),
    "/v2/messages/new": Route({"POST": messages.new}),
    "/v2/messages/query": Route({"POST": messages.query}),
    "/v2/log": Route({"POST": log.post}),
}


__all__ = ["CONTROL_SOCKET_PREFIX", "MESSAGE_SOCKET_PREFIX", "ROUTES", "Route", "resolve"]


def resolve(method: str, path: str) -> tuple[Route, Handler]:
    """The route and handler for a request; NotFound or MethodNotAllowed otherwise."""
    route = ROUTES.get(path)
    if route is None:
        raise NotFound(f"Request not found: {path}")
    handler = route.methods.get(method)
    if handler is None:
        raise MethodNotAllowed(method, tuple(route.methods))
    return route, handler
