"""Endpoint shapes shared by the resources: each parses its input, runs one db function on a
pooled connection, and encodes the result. A route module is then a list of one-liners."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from eventreg.db import AppState, Conn, connection
from eventreg.http import json, page, page_params, path_id, read_json
from eventreg.structs import Message

Body = TypeVar("Body")
Endpoint = Callable[[Request[AppState]], Awaitable[Response]]


def create(body_type: type[Body], run: Callable[[Conn, Body], Awaitable[Any]]) -> Endpoint:
    """POST a body → 201 with what `run` made, and its URL in Location."""

    async def endpoint(request: Request[AppState]) -> Response:
        body = await read_json(request, body_type)
        async with connection(request.state) as conn:
            made = await run(conn, body)
        return created(request, made)

    return endpoint


def created(request: Request[AppState], made: Any) -> Response:
    """201 with the new thing, which lives at the collection's path plus its id."""
    return json(made, 201, {"Location": f"{request.url.path}/{made.id}"})


def fetch(run: Callable[[Conn, int], Awaitable[Any]]) -> Endpoint:
    """GET /…/{id} → 200 with what `run` found."""

    async def endpoint(request: Request[AppState]) -> Response:
        item_id = path_id(request)
        async with connection(request.state) as conn:
            found = await run(conn, item_id)
        return json(found)

    return endpoint


def fetch_page(run: Callable[[Conn, int, int], Awaitable[list[Any]]]) -> Endpoint:
    """GET a collection: one keyset page (one extra row fetched says whether more remain)."""

    async def endpoint(request: Request[AppState]) -> Response:
        after, limit = page_params(request)
        async with connection(request.state) as conn:
            found = await run(conn, after, limit + 1)
        return page(request, found, limit)

    return endpoint


def fetch_page_of(run: Callable[[Conn, int, int, int], Awaitable[list[Any]]]) -> Endpoint:
    """GET /…/{id}: one keyset page of what belongs to the thing with that id."""

    async def endpoint(request: Request[AppState]) -> Response:
        owner_id = path_id(request)
        after, limit = page_params(request)
        async with connection(request.state) as conn:
            found = await run(conn, owner_id, after, limit + 1)
        return page(request, found, limit)

    return endpoint


def update(body_type: type[Body], run: Callable[[Conn, int, Body], Awaitable[Any]]) -> Endpoint:
    """PUT/PATCH /…/{id} with a partial body → 200 with the updated thing."""

    async def endpoint(request: Request[AppState]) -> Response:
        item_id = path_id(request)
        body = await read_json(request, body_type)
        async with connection(request.state) as conn:
            updated = await run(conn, item_id, body)
        return json(updated)

    return endpoint


def delete(run: Callable[[Conn, int], Awaitable[None]], message: str) -> Endpoint:
    """DELETE /…/{id} → 200 with a confirmation message."""
    done = Message(message)

    async def endpoint(request: Request[AppState]) -> Response:
        item_id = path_id(request)
        async with connection(request.state) as conn:
            await run(conn, item_id)
        return json(done)

    return endpoint
