"""The whole URL map, and everything the OpenAPI document says about it, in one table.

One Route per path, so that a wrong method gets 405 with the full Allow. Each method is an
`Operation`: its endpoint plus what it reads and what it can answer (request and response
structs, success status, the ApiErrors it raises). `eventreg.openapi` turns the same table
into `/openapi.json`, so the document and the routing cannot disagree.

Path ids are plain `{id}` and parsed by the endpoint, so a malformed id is a 400 with a
reason rather than a 404 route miss.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from eventreg import openapi
from eventreg.errors import (
    AlreadyRegistered,
    ApiError,
    CapacityBelowRegistrations,
    EmailTaken,
    EventFull,
    EventNotFound,
    NotAnOrganizer,
    NotRegistered,
    OrganizerHasEvents,
    OrganizerNotFound,
    RegistrationNotFound,
    UserNotFound,
)
from eventreg.routes import events, meta, registrations, users
from eventreg.structs import (
    Event,
    EventPatch,
    Health,
    Index,
    Message,
    NewEvent,
    NewUser,
    Registration,
    RegistrationRequest,
    User,
    UserPatch,
)

Endpoint = Callable[[Request[Any]], Awaitable[Response]]
API = "/api/v1"


@dataclass(frozen=True, slots=True)
class Link:
    """An OpenAPI link from a success response to another operation (by endpoint)."""

    target: Endpoint
    parameters: Mapping[str, str] = field(default_factory=dict)  # name -> runtime expression
    body: Mapping[str, str] = field(default_factory=dict)  # property -> runtime expression


@dataclass(frozen=True, slots=True)
class Operation:
    """One method on one path: the endpoint, and what the OpenAPI document says about it."""

    endpoint: Endpoint
    summary: str
    response: Any  # the success body's type: a Struct, list[Struct] or dict
    status: int = 200
    body: type | None = None  # the request Struct, read with http.read_json
    errors: tuple[type[ApiError], ...] = ()  # domain errors beyond the generic ones
    paged: bool = False  # ?after=&limit=, Link rel="next"
    database: bool = True  # may answer 503 when the database is unavailable
    links: Mapping[str, Link] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Resource:
    path: str
    operations: Mapping[str, Operation]  # upper-case method -> operation

    def route(self) -> Route:
        """A Route serving every method of this path (HEAD goes to GET)."""
        handlers = {method: op.endpoint for method, op in self.operations.items()}
        if "GET" in handlers:
            handlers["HEAD"] = handlers["GET"]

        async def dispatch(request: Request[Any]) -> Response:
            return await handlers[request.method](request)

        return Route(self.path, dispatch, methods=list(handlers), name=self.path)


def resource(path: str, **by_method: Operation) -> Resource:
    return Resource(path, {method.upper(): op for method, op in by_method.items()})


# Links for the stateful phase of schemathesis. Deletes are not linked: deleting a user or an
# event cancels its registrations, so a later GET /registrations/{id} is a correct 404 that
# ensure_resource_availability, which cannot know about the cascade, reports as a failure.
_ID = "$response.body#/id"
_USER_LINKS = {
    "GetUser": Link(users.get, {"id": _ID}),
    "UpdateUser": Link(users.update, {"id": _ID}),
    "ListEventsByOrganizer": Link(events.list_by_organizer, {"id": _ID}),
    "ListRegistrationsByUser": Link(registrations.list_by_user, {"id": _ID}),
    "RegisterUser": Link(registrations.register, body={"user_id": _ID}),
    "CreateEventOrganizedBy": Link(events.create, body={"organizer_id": _ID}),
}
_EVENT_LINKS = {
    "GetEvent": Link(events.get, {"id": _ID}),
    "UpdateEvent": Link(events.update, {"id": _ID}),
    "ListRegistrationsByEvent": Link(registrations.list_by_event, {"id": _ID}),
    "RegisterForEvent": Link(registrations.register, body={"event_id": _ID}),
}
# No link to DELETE /registrations: its key is the body pair (user_id, event_id), and a
# stateful client may carry over one field and generate the other, which is a correct 404
# that schemathesis' ensure_resource_availability (it only weighs path/query parameters)
# would report as a created resource gone missing.
_REGISTRATION_LINKS = {"GetRegistration": Link(registrations.get, {"id": _ID})}
_USER_UPDATE = Operation(
    users.update,
    "Change a user's name, email or role (only the fields given)",
    User,
    body=UserPatch,
    errors=(UserNotFound, EmailTaken, OrganizerHasEvents),
)
_EVENT_UPDATE = Operation(
    events.update,
    "Change an event's title, capacity or organizer (only the fields given)",
    Event,
    body=EventPatch,
    errors=(EventNotFound, OrganizerNotFound, NotAnOrganizer, CapacityBelowRegistrations),
)

RESOURCES: list[Resource] = [
    resource("/", get=Operation(meta.index, "Service index", Index, database=False)),
    resource(
        "/health", get=Operation(meta.health, "Health, including a database round trip", Health)
    ),
    resource(
        f"{API}/users",
        get=Operation(users.list_all, "List live users", list[User], paged=True),
        post=Operation(
            users.create,
            "Create a user",
            User,
            status=201,
            body=NewUser,
            errors=(EmailTaken,),
            links=_USER_LINKS,
        ),
    ),
    resource(
        f"{API}/users/{{id}}",
        get=Operation(users.get, "Get a user", User, errors=(UserNotFound,)),
        put=_USER_UPDATE,
        patch=_USER_UPDATE,
        delete=Operation(
            users.delete,
            "Soft-delete a user, cancelling their registrations",
            Message,
            errors=(UserNotFound, OrganizerHasEvents),
        ),
    ),
    resource(
        f"{API}/events",
        get=Operation(events.list_all, "List live events", list[Event], paged=True),
        post=Operation(
            events.create,
            "Create an event",
            Event,
            status=201,
            body=NewEvent,
            errors=(OrganizerNotFound, NotAnOrganizer),
            links=_EVENT_LINKS,
        ),
    ),
    resource(
        f"{API}/events/organizer/{{id}}",
        get=Operation(
            events.list_by_organizer,
            "List the live events a user organizes",
            list[Event],
            errors=(UserNotFound,),
            paged=True,
        ),
    ),
    resource(
        f"{API}/events/{{id}}",
        get=Operation(
            events.get, "Get an event with its organizer", Event, errors=(EventNotFound,)
        ),
        put=_EVENT_UPDATE,
        patch=_EVENT_UPDATE,
        delete=Operation(
            events.delete,
            "Soft-delete an event, cancelling its registrations",
            Message,
            errors=(EventNotFound,),
        ),
    ),
    resource(
        f"{API}/registrations",
        post=Operation(
            registrations.register,
            "Take a seat",
            Registration,
            status=201,
            body=RegistrationRequest,
            errors=(UserNotFound, EventNotFound, AlreadyRegistered, EventFull),
            links=_REGISTRATION_LINKS,
        ),
        delete=Operation(
            registrations.cancel,
            "Cancel a registration, releasing its seat",
            Message,
            body=RegistrationRequest,
            errors=(EventNotFound, NotRegistered),
        ),
    ),
    resource(
        f"{API}/registrations/user/{{id}}",
        get=Operation(
            registrations.list_by_user,
            "List a user's active registrations",
            list[Registration],
            errors=(UserNotFound,),
            paged=True,
        ),
    ),
    resource(
        f"{API}/registrations/event/{{id}}",
        get=Operation(
            registrations.list_by_event,
            "List an event's active registrations",
            list[Registration],
            errors=(EventNotFound,),
            paged=True,
        ),
    ),
    resource(
        f"{API}/registrations/{{id}}",
        get=Operation(
            registrations.get,
            "Get an active registration with user and event",
            Registration,
            errors=(RegistrationNotFound,),
        ),
    ),
]
OPENAPI = openapi.Served()
RESOURCES.append(
    resource(
        "/openapi.json",
        get=Operation(OPENAPI, "This OpenAPI 3.1 document", dict[str, Any], database=False),
    )
)
OPENAPI.encode(RESOURCES)
ROUTES = [r.route() for r in RESOURCES]
