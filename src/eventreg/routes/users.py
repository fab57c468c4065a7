"""/api/v1/users"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from eventreg.auth import caller_of, limit
from eventreg.db import AppState, users
from eventreg.http import json, path_id, read_json
from eventreg.routes import crud
from eventreg.routes.crud import Endpoint
from eventreg.structs import NewUser, UserPatch


async def create(request: Request[AppState]) -> Response:
    """Sign-up: limited per client address (per user with a token); admins are exempt."""
    caller = caller_of(request)
    if not caller.admin:
        key = str(caller.user_id) if caller.user_id else (request.client or ("?",))[0]
        limit(request.state["signups"], key, "sign-ups")
    body = await read_json(request, NewUser)
    async with crud.connection_for(request) as conn:
        made = await users.create(conn, caller, body)
    return crud.created(request, made)


async def me(request: Request[AppState]) -> Response:
    async with crud.connection_for(request) as conn:
        return json(await users.me(conn, caller_of(request)))


def forgetting(endpoint: Endpoint) -> Endpoint:
    """After a change to a user, this worker looks up their tokens afresh (role, deletion)."""

    async def changed(request: Request[AppState]) -> Response:
        response = await endpoint(request)
        request.state["tokens"].forget_user(path_id(request))
        return response

    return changed


list_all = crud.fetch_page(users.list_page)
get = crud.fetch(users.get)
update = forgetting(crud.update(UserPatch, users.update))
delete = forgetting(crud.delete(users.delete, "user deleted successfully"))
