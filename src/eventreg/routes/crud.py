"""Endpoint shapes shared by the resources: each parses its input, runs one db function on a
pooled connection as the authenticated caller, and encodes the result. A route module is
then a list of one-liners. Db functions that every caller may run are wrapped in `public`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from eventreg.auth import caller_of
from eventreg.caller import Caller
from eventreg.db import AppState, Conn, connection
from eventreg.http import choice_param, json, page, page_params, path_id, read_json
from eventreg.structs import Message

Body = TypeVar("Body")
Endpoint = Callable[[Request[AppState]], Awaitable[Response]]
BOUND = "eventreg.connection"  # the request scope key of a connection in a route's transaction
REPLICA = "eventreg.replica"  # set when this request reads from the replica (routes.dispatch)


def connection_for(request: Request[AppState]) -> AbstractAsyncContextManager[Conn]:
    """The connection an endpoint works on: the one of the transaction an Idempotency-Key
    opened for this request, or one from the pool: the replica's when the route table allows
    it and the replica is fresh enough (routes.dispatch decides), else the primary's."""
    bound: Conn | None = request.scope.get(BOUND)
    if bound is not None:
        return nullcontext(bound)
    if request.scope.get(REPLICA) and (replica := request.state["replica"]) is not None:
        return connection(request.state, replica.pool)
    return connection(request.state)


def public(run: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """A db function that does not depend on who calls, in the shape the factories take."""

    async def as_anyone(conn: Conn, _: Caller, *args: Any) -> Any:
        return await run(conn, *args)

    return as_anyone


def create(body_type: type[Body], run: Callable[[Conn, Caller, Body], Awaitable[Any]]) -> Endpoint:
    """POST a body → 201 with what `run` made, and its URL in Location."""

    async def endpoint(request: Request[AppState]) -> Response:
        body = await read_json(request, body_type)
        async with connection_for(request) as conn:
            made = await run(conn, caller_of(request), body)
        return created(request, made)

    return endpoint


def created(request: Request[AppState], made: Any, status: int = 201) -> Response:
    """201 with the new thing, which lives at the collection's path plus its id."""
    return json(made, status, {"Location": f"{request.url.path}/{made.id}"})


def fetch(run: Callable[[Conn, Caller, int], Awaitable[Any]]) -> Endpoint:
    """GET /…/{id} → 200 with what `run` found."""

    async def endpoint(request: Request[AppState]) -> Response:
        item_id = path_id(request)
        async with connection_for(request) as conn:
            found = await run(conn, caller_of(request), item_id)
        return json(found)

    return endpoint


def fetch_page(run: Callable[[Conn, Caller, int, int], Awaitable[list[Any]]]) -> Endpoint:
    """GET a collection: one keyset page (one extra row fetched says whether more remain)."""

    async def endpoint(request: Request[AppState]) -> Response:
        after, limit = page_params(request)
        async with connection_for(request) as conn:
            found = await run(conn, caller_of(request), after, limit + 1)
        return page(request, found, limit)

    return endpoint


def fetch_page_of(
    run: Callable[..., Awaitable[list[Any]]], filters: Mapping[str, tuple[str, ...]] = {}
) -> Endpoint:
    """GET /…/{id}: one keyset page of what belongs to the thing with that id. `filters`
    are query parameters passed on by name, each with its choices (the first: default)."""

    async def endpoint(request: Request[AppState]) -> Response:
        owner_id = path_id(request)
        after, limit = page_params(request)
        chosen = {name: choice_param(request, name, choices) for name, choices in filters.items()}
        async with connection_for(request) as conn:
            found = await run(conn, caller_of(request), owner_id, after, limit + 1, **chosen)
        return page(request, found, limit)

    return endpoint


def update(
    body_type: type[Body], run: Callable[[Conn, Caller, int, Body], Awaitable[Any]]
) -> Endpoint:
    """PUT/PATCH /…/{id} with a partial body → 200 with the updated thing."""

    async def endpoint(request: Request[AppState]) -> Response:
        item_id = path_id(request)
        body = await read_json(request, body_type)
        async with connection_for(request) as conn:
            updated = await run(conn, caller_of(request), item_id, body)
        return json(updated)

    return endpoint


def delete(run: Callable[[Conn, Caller, int], Awaitable[None]], message: str) -> Endpoint:
    """DELETE /…/{id} → 200 with a confirmation message."""
    done = Message(message)

    async def endpoint(request: Request[AppState]) -> Response:
        item_id = path_id(request)
        async with connection_for(request) as conn:
            await run(conn, caller_of(request), item_id)
        return json(done)

    return endpoint
