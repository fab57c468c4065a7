"""/api/v1/tokens: a signed-in user's own tokens."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from eventreg.auth import caller_of
from eventreg.db import AppState, tokens
from eventreg.errors import Forbidden
from eventreg.http import json, path_id, read_json
from eventreg.routes import crud
from eventreg.structs import Message, TokenRequest

REVOKED = Message("token revoked")


async def issue(request: Request[AppState]) -> Response:
    caller = caller_of(request)
    if caller.user_id is None:  # open mode: nobody to issue a token to
        raise Forbidden("tokens belong to users; EVENTREG_AUTH=open has none")
    body = await read_json(request, TokenRequest)
    async with crud.connection_for(request) as conn:
        made = await tokens.issue(conn, caller.user_id, body)
    return crud.created(request, made)


async def revoke(request: Request[AppState]) -> Response:
    token_id = path_id(request)
    async with crud.connection_for(request) as conn:
        owner = await tokens.revoke(conn, caller_of(request), token_id)
    request.state["tokens"].forget_user(owner)
    return json(REVOKED)


list_mine = crud.fetch_page(tokens.list_page)
