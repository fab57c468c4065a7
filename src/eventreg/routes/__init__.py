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
from starlette.routing import Match, Route
from starlette.types import Scope

from eventreg import metrics, openapi
from eventreg.auth import CALLER, authenticate
from eventreg.caller import ADMIN, ANYONE, DOOR, ORGANIZER, PUBLIC, SELF, SIGNED_IN, Access
from eventreg.db.replica import Replica
from eventreg.errors import (
    TRANSIENT,
    AlreadyRegistered,
    ApiError,
    CancellationClosed,
    CapacityBelowRegistrations,
    CheckInNotFound,
    EmailTaken,
    EventFull,
    EventNotFound,
    Forbidden,
    InvalidTicket,
    NotAnOrganizer,
    NotFound,
    NotRegistered,
    OrganizerHasEvents,
    OrganizerNotFound,
    RegistrationClosed,
    RegistrationNotFound,
    RegistrationNotOpen,
    ScanInFuture,
    TicketCancelled,
    TicketNotIssued,
    TokenNotFound,
    UserNotFound,
    WrongEvent,
)
from eventreg.http import BODY_LIMIT
from eventreg.routes import (
    crud,
    docs,
    events,
    idempotent,
    meta,
    registrations,
    tickets,
    tokens,
    users,
)
from eventreg.structs import (
    BatchResult,
    CheckIn,
    CheckInSummary,
    DoorTokenRequest,
    Event,
    EventPatch,
    Health,
    Index,
    Message,
    NewEvent,
    NewRegistration,
    NewUser,
    Registration,
    RegistrationRequest,
    RevokedTickets,
    Scan,
    ScanBatch,
    Ticket,
    TicketKeys,
    Token,
    TokenRequest,
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
    access: Access = PUBLIC  # who may call it (with EVENTREG_AUTH=tokens)
    also: Mapping[int, str] = field(default_factory=dict)  # other success statuses: meaning
    filters: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # ?name=choice
    own_keys: bool = False  # the endpoint handles Idempotency-Key itself (group admission)
    limited: bool = False  # rate-limited per caller: may answer 429
    media: str = "application/json"  # the success body's media type (a QR image's differs)
    max_body: int | None = None  # a body limit of its own instead of MAX_BODY_BYTES
    query: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # ?name: schema
    replica: bool = False  # may read from DATABASE_READ_URL, at most its lag bound behind


@dataclass(frozen=True, slots=True)
class Resource:
    path: str
    operations: Mapping[str, Operation]  # upper-case method -> operation

    def route(self) -> Route:
        """A Route serving every method of this path (HEAD goes to GET)."""
        handlers = dict(self.operations)
        if "GET" in handlers:
            handlers["HEAD"] = handlers["GET"]

        async def dispatch(request: Request[Any]) -> Response:
            op = handlers[request.method]
            request.scope[CALLER] = await authenticate(request, op.access)
            if op.max_body is not None:
                request.scope[BODY_LIMIT] = op.max_body
            if not op.own_keys and (key := idempotent.key_of(request)) is not None:
                return await idempotent.run(request, op.endpoint, key)
            if op.replica and (replica := request.state["replica"]) and replica.fresh():
                return await read_replica(request, op.endpoint, replica)
            return await op.endpoint(request)

        return OwnPath(self.path, dispatch, methods=list(handlers), name=self.path)


async def read_replica(request: Request[Any], endpoint: Endpoint, replica: Replica) -> Response:
    """A read on the replica; if the replica fails under it, the same read on the primary
    (a read changes nothing, so running it again is safe)."""
    request.scope[crud.REPLICA] = True
    try:
        return await endpoint(request)
    except TRANSIENT as exc:
        replica.lost(exc)
        metrics.REPLICA_FALLBACKS.inc()
        request.scope[crud.REPLICA] = False
        return await endpoint(request)


class OwnPath(Route):
    """A route that keeps every request for its path, answering 405 (with Allow) to methods
    it lacks. Starlette would try the next route instead: a PUT to /users/me would reach
    /users/{id} and be refused as a malformed id."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        return (Match.FULL if match is Match.PARTIAL else match), child_scope


def resource(path: str, **by_method: Operation) -> Resource:
    return Resource(path, {method.upper(): op for method, op in by_method.items()})


# The rules of EVENTREG_AUTH=tokens (README "Who may do what"; docs/api.md in full).
# Object-level checks run in the db functions, under the locks of the rows they decide about.
SIGNED_IN_ONLY = Access((SIGNED_IN,), note="any valid token")
SIGN_UP = Access((ANYONE,), note="anyone for an attendee; an admin for another role (else 403)")
USER_OWNER = Access(
    (SELF, ADMIN), 404, note="the user or an admin; to anyone else the user does not exist"
)
USER_LIST = Access((SIGNED_IN,), note="an admin lists all users; anyone else, themselves")
EVENT_CREATE = Access(
    (ORGANIZER, ADMIN), note="an organizer (as the event's organizer) or an admin"
)
EVENT_OWNER = Access((ORGANIZER, ADMIN), note="the event's organizer or an admin")
REGISTER = Access((SELF,), note="the user themselves")
CANCEL = Access((SELF, ORGANIZER, ADMIN), note="the user, the event's organizer or an admin")
REGISTRATION_READER = Access(
    (SELF, ORGANIZER, ADMIN), 404,
    note="its user, the event's organizer or an admin; to anyone else it does not exist",
)  # fmt: skip
TOKEN_OWNER = Access((SELF, ADMIN), 404, note="the token's user or an admin")
# Issue 9. A door token is refused everything but these (auth.authenticate).
AT_THE_DOOR = Access(
    (ORGANIZER, ADMIN, DOOR), note="the event's organizer, an admin or a door token of the event"
)
UNDO_CHECK_IN = Access(
    (ORGANIZER, ADMIN), 404,
    note="the event's organizer or an admin; to anyone else the registration does not exist",
)  # fmt: skip
_SINCE = {
    "description": "Only registrations cancelled at or after this time (RFC 3339, with an "
    "offset); pass the previous answer's `next_since`",
    "schema": {
        "type": "string",
        "format": "date-time",
        # years 1000-8999, no leap second: what every server clock and library reads
        "pattern": "^[1-8][0-9]{3}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-5][0-9]"
        "([.][0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$",
    },
}
METRICS_READER = Access((ADMIN,), note="an admin")

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
    errors=(UserNotFound, EmailTaken, OrganizerHasEvents, Forbidden),
    access=USER_OWNER,
)
_EVENT_UPDATE = Operation(
    events.update,
    "Change an event's title, capacity or organizer (only the fields given)",
    Event,
    body=EventPatch,
    errors=(EventNotFound, OrganizerNotFound, NotAnOrganizer, CapacityBelowRegistrations),
    access=EVENT_OWNER,
)

RESOURCES: list[Resource] = [
    resource("/", get=Operation(meta.index, "Service index", Index, database=False)),
    resource(
        "/health", get=Operation(meta.health, "Health, including a database round trip", Health)
    ),
    resource(
        f"{API}/users",
        get=Operation(
            users.list_all,
            "List live users",
            list[User],
            paged=True,
            access=USER_LIST,
            replica=True,
        ),
        post=Operation(
            users.create,
            "Create a user (sign up); with tokens on, the answer carries its first token",
            User,
            status=201,
            body=NewUser,
            errors=(EmailTaken, Forbidden),
            links=_USER_LINKS,
            access=SIGN_UP,
            limited=True,
        ),
    ),
    resource(
        f"{API}/users/me",
        get=Operation(
            users.me, "The signed-in user", User, errors=(UserNotFound,), access=SIGNED_IN_ONLY
        ),
    ),
    resource(
        f"{API}/users/{{id}}",
        get=Operation(users.get, "Get a user", User, errors=(UserNotFound,), access=USER_OWNER),
        put=_USER_UPDATE,
        patch=_USER_UPDATE,
        delete=Operation(
            users.delete,
            "Soft-delete a user, cancelling their registrations and revoking their tokens",
            Message,
            errors=(UserNotFound, OrganizerHasEvents),
            access=USER_OWNER,
        ),
    ),
    resource(
        f"{API}/tokens",
        get=Operation(
            tokens.list_mine,
            "List your tokens (never their secrets)",
            list[Token],
            paged=True,
            access=SIGNED_IN_ONLY,
        ),
        post=Operation(
            tokens.issue,
            "Make another token for yourself; its secret is in this answer only",
            Token,
            status=201,
            body=TokenRequest,
            errors=(Forbidden,),
            access=SIGNED_IN_ONLY,
        ),
    ),
    resource(
        f"{API}/tokens/{{id}}",
        delete=Operation(
            tokens.revoke,
            "Revoke a token (yours, or any as an admin)",
            Message,
            errors=(TokenNotFound,),
            access=TOKEN_OWNER,
        ),
    ),
    resource(
        f"{API}/events",
        get=Operation(events.list_all, "List live events", list[Event], paged=True, replica=True),
        post=Operation(
            events.create,
            "Create an event",
            Event,
            status=201,
            body=NewEvent,
            errors=(OrganizerNotFound, NotAnOrganizer),
            links=_EVENT_LINKS,
            access=EVENT_CREATE,
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
            replica=True,
        ),
    ),
    resource(
        f"{API}/events/{{id}}",
        get=Operation(
            events.get,
            "Get an event with its organizer",
            Event,
            errors=(EventNotFound,),
            replica=True,
        ),
        put=_EVENT_UPDATE,
        patch=_EVENT_UPDATE,
        delete=Operation(
            events.delete,
            "Soft-delete an event, cancelling its registrations",
            Message,
            errors=(EventNotFound,),
            access=EVENT_OWNER,
        ),
    ),
    resource(
        f"{API}/registrations",
        post=Operation(
            registrations.register,
            "Take a seat",
            Registration,
            status=201,
            body=NewRegistration,
            errors=(
                UserNotFound,
                EventNotFound,
                AlreadyRegistered,
                EventFull,
                RegistrationNotOpen,
                RegistrationClosed,
            ),
            links=_REGISTRATION_LINKS,
            access=REGISTER,
            limited=True,
            also={202: "The event is full and `waitlist` was true: a place in its queue"},
            own_keys=True,
        ),
        delete=Operation(
            registrations.cancel,
            "Cancel a registration, releasing its seat",
            Message,
            body=RegistrationRequest,
            errors=(EventNotFound, NotRegistered, CancellationClosed),
            access=CANCEL,
        ),
    ),
    resource(
        f"{API}/registrations/user/{{id}}",
        get=Operation(
            registrations.list_by_user,
            "List a user's registrations: active (default) or waitlisted",
            list[Registration],
            errors=(UserNotFound,),
            paged=True,
            access=REGISTRATION_READER,
            filters=registrations.STATUS_FILTER,
        ),
    ),
    resource(
        f"{API}/registrations/event/{{id}}",
        get=Operation(
            registrations.list_by_event,
            "List an event's registrations: active (default) or waitlisted, in queue order",
            list[Registration],
            errors=(EventNotFound,),
            paged=True,
            access=EVENT_OWNER,
            filters=registrations.STATUS_FILTER,
            replica=True,
        ),
    ),
    resource(
        f"{API}/registrations/{{id}}",
        get=Operation(
            registrations.get,
            "Get a live registration (active or waitlisted) with user and event",
            Registration,
            errors=(RegistrationNotFound,),
            access=REGISTRATION_READER,
        ),
    ),
]
_TICKET_ERRORS = (RegistrationNotFound, TicketNotIssued)
_SCAN_ERRORS = (EventNotFound, Forbidden, InvalidTicket, WrongEvent, TicketCancelled,
                TicketNotIssued)  # fmt: skip
RESOURCES += [
    resource(
        "/.well-known/ticket-keys",
        get=Operation(
            tickets.keys,
            "The public keys that verify ticket codes (a JSON Web Key Set), for scanners",
            TicketKeys,
            database=False,
        ),
    ),
    resource(
        f"{API}/registrations/{{id}}/ticket",
        get=Operation(
            tickets.ticket,
            "A registration's ticket: its signed code, event, holder and status",
            Ticket,
            errors=_TICKET_ERRORS,
            access=REGISTRATION_READER,
        ),
    ),
    resource(
        f"{API}/registrations/{{id}}/ticket.svg",
        get=Operation(
            tickets.ticket_svg,
            "The ticket's code as a QR image (SVG)",
            str,
            errors=_TICKET_ERRORS,
            access=REGISTRATION_READER,
            media="image/svg+xml",
        ),
    ),
    resource(
        f"{API}/registrations/{{id}}/ticket.png",
        get=Operation(
            tickets.ticket_png,
            "The ticket's code as a QR image (PNG)",
            bytes,
            errors=_TICKET_ERRORS,
            access=REGISTRATION_READER,
            media="image/png",
        ),
    ),
    resource(
        f"{API}/registrations/{{id}}/check-in",
        get=Operation(
            tickets.get_check_in,
            "The registration's check-in, if it is checked in",
            CheckIn,
            errors=(RegistrationNotFound, CheckInNotFound),
            access=REGISTRATION_READER,
        ),
        delete=Operation(
            tickets.undo,
            "Undo a check-in (a mis-scan): the ticket may be scanned again; the row is kept",
            Message,
            errors=(RegistrationNotFound, CheckInNotFound),
            access=UNDO_CHECK_IN,
        ),
    ),
    resource(
        f"{API}/events/{{id}}/check-ins",
        post=Operation(
            tickets.check_in,
            "Check a ticket in at the door: 201 the first scan, 200 any later one",
            CheckIn,
            status=201,
            body=Scan,
            errors=_SCAN_ERRORS,
            access=AT_THE_DOOR,
            also={200: "Already checked in: the first scan's time and scanner"},
        ),
    ),
    resource(
        f"{API}/events/{{id}}/check-ins/batch",
        post=Operation(
            tickets.upload,
            "Upload up to 1,000 scans made offline: one outcome per scan, in order; the "
            "earliest scan of a ticket wins",
            BatchResult,
            body=ScanBatch,
            errors=(*_SCAN_ERRORS, ScanInFuture),
            access=AT_THE_DOOR,
            max_body=tickets.BATCH_BODY_BYTES,
        ),
    ),
    resource(
        f"{API}/events/{{id}}/check-ins/summary",
        get=Operation(
            tickets.summary,
            "Registered, checked in and not yet arrived, from one snapshot",
            CheckInSummary,
            errors=(EventNotFound, Forbidden),
            access=AT_THE_DOOR,
        ),
    ),
    resource(
        f"{API}/events/{{id}}/check-ins/revoked",
        get=Operation(
            tickets.revoked,
            "Cancelled tickets of the event, for scanners that work offline",
            RevokedTickets,
            errors=(EventNotFound, Forbidden),
            access=AT_THE_DOOR,
            query={"since": _SINCE},
        ),
    ),
    resource(
        f"{API}/events/{{id}}/door-tokens",
        get=Operation(
            tickets.list_door_tokens,
            "List the event's door tokens (never their secrets)",
            list[Token],
            errors=(EventNotFound, Forbidden),
            paged=True,
            access=EVENT_OWNER,
        ),
        post=Operation(
            tickets.issue_door_token,
            "Make a door token: it checks tickets in at this event and does nothing else",
            Token,
            status=201,
            body=DoorTokenRequest,
            errors=(EventNotFound, Forbidden),
            access=EVENT_OWNER,
        ),
    ),
]
RESOURCES.append(
    resource(
        "/metrics",
        get=Operation(
            meta.metrics_text,
            "Prometheus metrics: requests, registrations, locks, pools, 503s, seats",
            str,
            errors=(NotFound,),
            access=METRICS_READER,
            media="text/plain",
        ),
    )
)
OPENAPI = openapi.Served()
RESOURCES.append(
    resource(
        "/openapi.json",
        get=Operation(OPENAPI, "This OpenAPI 3.1 document", dict[str, Any], database=False),
    )
)
OPENAPI.encode(RESOURCES)
ROUTES = [r.route() for r in RESOURCES] + docs.ROUTES  # /docs: a page, not part of the API
