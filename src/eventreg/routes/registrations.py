"""/api/v1/registrations"""

from __future__ import annotations

from typing import get_args

from starlette.requests import Request
from starlette.responses import Response

from eventreg import testhooks
from eventreg.auth import caller_of, limit
from eventreg.db import AppState, registrations
from eventreg.http import json, read_json
from eventreg.routes import crud
from eventreg.structs import LiveStatus, Message, NewRegistration, RegistrationRequest

CANCELLED = Message("registration cancelled successfully")


def lock_wait(request: Request[AppState]) -> float | None:
    """The most a request waits for an event's row lock, in seconds (None: no bound)."""
    return request.state["settings"].lock_timeout_ms / 1000 or None


async def register(request: Request[AppState]) -> Response:
    caller = caller_of(request)
    if caller.user_id is not None:  # before anything else: a refused attempt takes no seat
        limit(request.state["attempts"], str(caller.user_id), "registration attempts")
    body = await read_json(request, NewRegistration)
    if request.state["settings"].test_hooks:
        testhooks.arm(request.headers)
    async with crud.connection_for(request) as conn:
        registration = await registrations.register(
            conn, caller, body.event_id, body.user_id,
            waitlist=body.waitlist, lock_wait=lock_wait(request),
        )  # fmt: skip
    queued = registration.status == "waitlisted"  # 202: accepted, the seat is still to come
    return crud.created(request, registration, status=202 if queued else 201)


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
