"""The whole URL map, one Route per path so that a wrong method gets 405 with the full Allow.

Path ids are plain `{id}` and parsed by the endpoint, so a malformed id is a 400 with a
reason rather than a 404 route miss.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from eventreg.routes import events, meta, registrations, users

Endpoint = Callable[[Request[Any]], Awaitable[Response]]
API = "/api/v1"


def resource(path: str, **by_method: Endpoint) -> Route:
    """A Route serving `path` with one endpoint per HTTP method (HEAD goes to GET)."""
    handlers = {method.upper(): endpoint for method, endpoint in by_method.items()}
    if "GET" in handlers:
        handlers["HEAD"] = handlers["GET"]

    async def dispatch(request: Request[Any]) -> Response:
        return await handlers[request.method](request)

    return Route(path, dispatch, methods=list(handlers), name=path)


ROUTES = [
    resource("/", get=meta.index),
    resource("/health", get=meta.health),
    resource(f"{API}/users", get=users.list_all, post=users.create),
    resource(
        f"{API}/users/{{id}}",
        get=users.get,
        put=users.update,
        patch=users.update,
        delete=users.delete,
    ),
    resource(f"{API}/events", get=events.list_all, post=events.create),
    resource(f"{API}/events/organizer/{{id}}", get=events.list_by_organizer),
    resource(
        f"{API}/events/{{id}}",
        get=events.get,
        put=events.update,
        patch=events.update,
        delete=events.delete,
    ),
    resource(f"{API}/registrations", post=registrations.register, delete=registrations.cancel),
    resource(f"{API}/registrations/user/{{id}}", get=registrations.list_by_user),
    resource(f"{API}/registrations/event/{{id}}", get=registrations.list_by_event),
    resource(f"{API}/registrations/{{id}}", get=registrations.get),
]
