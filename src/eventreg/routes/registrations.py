"""/api/v1/registrations"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from eventreg import testhooks
from eventreg.db import AppState, connection, registrations
from eventreg.http import json, page, page_params, path_id, read_json
from eventreg.structs import Message, RegistrationRequest


async def register(request: Request[AppState]) -> Response:
    body = await read_json(request, RegistrationRequest)
    if request.state["settings"].test_hooks:
        testhooks.arm(request.headers)
    async with connection(request.state) as conn:
        registration = await registrations.register(conn, body.event_id, body.user_id)
    return json(registration, 201)


async def cancel(request: Request[AppState]) -> Response:
    body = await read_json(request, RegistrationRequest)
    async with connection(request.state) as conn:
        await registrations.cancel(conn, body.event_id, body.user_id)
    return json(Message("registration cancelled successfully"))


async def get(request: Request[AppState]) -> Response:
    registration_id = path_id(request)
    async with connection(request.state) as conn:
        registration = await registrations.get(conn, registration_id)
    return json(registration)


async def list_by_user(request: Request[AppState]) -> Response:
    user_id = path_id(request)
    after, limit = page_params(request)
    async with connection(request.state) as conn:
        found = await registrations.list_by_user(conn, user_id, after, limit + 1)
    return page(request, found, limit)


async def list_by_event(request: Request[AppState]) -> Response:
    event_id = path_id(request)
    after, limit = page_params(request)
    async with connection(request.state) as conn:
        found = await registrations.list_by_event(conn, event_id, after, limit + 1)
    return page(request, found, limit)
