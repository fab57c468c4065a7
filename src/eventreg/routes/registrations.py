"""/api/v1/registrations"""

from __future__ import annotations

from typing import get_args

from starlette.requests import Request
from starlette.responses import Response

from eventreg import metrics, testhooks
from eventreg.auth import caller_of, limit
from eventreg.db import AppState, registrations
from eventreg.db.admission import Made, Member, Outcome
from eventreg.db.idempotency import Answer
from eventreg.errors import AlreadyRegistered, ApiError, EventFull, Forbidden, KeyInFlight
from eventreg.http import encode, json, read_json
from eventreg.routes import crud, idempotent
from eventreg.structs import (
    LiveStatus,
    Message,
    NewRegistration,
    Registration,
    RegistrationRequest,
)

CANCELLED = Message("registration cancelled successfully")
REGISTRATIONS = "/api/v1/registrations"


def lock_wait(request: Request[AppState]) -> float | None:
    """The most a request waits for an event's row lock, in seconds (None: no bound)."""
    return request.state["settings"].lock_timeout_ms / 1000 or None


async def register(request: Request[AppState]) -> Response:
    """A seat or a place in the queue. Handles its own Idempotency-Key: with group admission
    the key is claimed and stored inside the group's transaction."""
    caller = caller_of(request)
    if caller.user_id is not None:  # before anything else: a refused attempt takes no seat
        limit(request.state["attempts"], str(caller.user_id), "registration attempts")
    key = idempotent.key_of(request)
    if not request.state["settings"].group_admission:
        return await (idempotent.run(request, _alone, key) if key else _alone(request))
    identified = await idempotent.identify(request, key) if key else None
    body = await _read(request)
    if not caller.is_user(body.user_id):  # decided on the caller alone, before any group
        raise Forbidden("a user registers only themselves", field="user_id")
    member = Member(body.user_id, body.waitlist, identified)
    outcome = await request.state["groups"].admit(request.state, body.event_id, member, answer)
    if key is not None and isinstance(outcome, KeyInFlight):
        # Its key is held by a request still running (in another group, another worker):
        # a group never waits for it, so this one does so alone, as any keyed write does,
        # then replays that request's answer or, if it failed, registers.
        return await idempotent.run(request, _alone, key)
    return _respond(outcome)


async def _alone(request: Request[AppState]) -> Response:
    """One registration, one transaction (GROUP_ADMISSION=off)."""
    body = await _read(request)
    try:
        async with crud.connection_for(request) as conn:
            registration = await registrations.register(
                conn, caller_of(request), body.event_id, body.user_id,
                waitlist=body.waitlist, lock_wait=lock_wait(request),
            )  # fmt: skip
    except ApiError as exc:
        _count(exc)
        raise
    return _respond(Made(registration, answer(registration)))


async def _read(request: Request[AppState]) -> NewRegistration:
    body = await read_json(request, NewRegistration)
    if request.state["settings"].test_hooks:
        testhooks.arm(request.headers)
    return body


def answer(registration: Registration) -> Answer:
    """The response to a new registration: 201 with a seat, 202 with a place in the queue."""
    status = 202 if registration.status == "waitlisted" else 201
    return Answer(status, encode(registration), f"{REGISTRATIONS}/{registration.id}")


def _respond(outcome: Outcome) -> Response:
    if isinstance(outcome, ApiError):
        _count(outcome)
        raise outcome
    if isinstance(outcome, Answer):  # an Idempotency-Key seen before: the first answer
        return idempotent.replayed(outcome)
    status = outcome.registration.status
    metrics.registration("waitlisted" if status == "waitlisted" else "created")
    made = outcome.answer
    assert made.location is not None
    return Response(made.body, made.status, {"Location": made.location}, "application/json")


def _count(refusal: ApiError) -> None:
    """The refusals eventreg_registrations_total counts: full and duplicate."""
    if isinstance(refusal, EventFull):
        metrics.registration("full")
    elif isinstance(refusal, AlreadyRegistered):
        metrics.registration("duplicate")


async def cancel(request: Request[AppState]) -> Response:
    body = await read_json(request, RegistrationRequest)
    async with crud.connection_for(request) as conn:
        await registrations.cancel(
            conn, caller_of(request), body.event_id, body.user_id, lock_wait=lock_wait(request)
        )
    return json(CANCELLED)


get = crud.fetch(registrations.get)
STATUS_FILTER = {"status": get_args(LiveStatus)}  # ?status=active (default) or waitlisted
list_by_user = crud.fetch_page_of(registrations.list_by_user, STATUS_FILTER)
list_by_event = crud.fetch_page_of(registrations.list_by_event, STATUS_FILTER)
