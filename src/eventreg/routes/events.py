"""/api/v1/events"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from eventreg.db import AppState, connection, events
from eventreg.http import json, page, page_params, path_id, read_json
from eventreg.structs import EventPatch, Message, NewEvent


async def create(request: Request[AppState]) -> Response:
    body = await read_json(request, NewEvent)
    async with connection(request.state) as conn:
        event = await events.create(conn, body)
    return json(event, 201)


async def list_all(request: Request[AppState]) -> Response:
    after, limit = page_params(request)
    async with connection(request.state) as conn:
        found = await events.list_page(conn, after, limit + 1)
    return page(request, found, limit)


async def get(request: Request[AppState]) -> Response:
    event_id = path_id(request)
    async with connection(request.state) as conn:
        event = await events.get(conn, event_id)
    return json(event)


async def update(request: Request[AppState]) -> Response:
    event_id = path_id(request)
    body = await read_json(request, EventPatch)
    async with connection(request.state) as conn:
        event = await events.update(conn, event_id, body)
    return json(event)


async def delete(request: Request[AppState]) -> Response:
    event_id = path_id(request)
    async with connection(request.state) as conn:
        await events.delete(conn, event_id)
    return json(Message("event deleted successfully"))


async def list_by_organizer(request: Request[AppState]) -> Response:
    organizer_id = path_id(request)
    after, limit = page_params(request)
    async with connection(request.state) as conn:
        found = await events.list_by_organizer(conn, organizer_id, after, limit + 1)
    return page(request, found, limit)
