"""/api/v1/users"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from eventreg.db import AppState, connection, users
from eventreg.http import json, page, page_params, path_id, read_json
from eventreg.structs import Message, NewUser, UserPatch


async def create(request: Request[AppState]) -> Response:
    body = await read_json(request, NewUser)
    async with connection(request.state) as conn:
        user = await users.create(conn, body)
    return json(user, 201)


async def list_all(request: Request[AppState]) -> Response:
    after, limit = page_params(request)
    async with connection(request.state) as conn:
        found = await users.list_page(conn, after, limit + 1)
    return page(request, found, limit)


async def get(request: Request[AppState]) -> Response:
    user_id = path_id(request)
    async with connection(request.state) as conn:
        user = await users.get(conn, user_id)
    return json(user)


async def update(request: Request[AppState]) -> Response:
    user_id = path_id(request)
    body = await read_json(request, UserPatch)
    async with connection(request.state) as conn:
        user = await users.update(conn, user_id, body)
    return json(user)


async def delete(request: Request[AppState]) -> Response:
    user_id = path_id(request)
    async with connection(request.state) as conn:
        await users.delete(conn, user_id)
    return json(Message("user deleted successfully"))
