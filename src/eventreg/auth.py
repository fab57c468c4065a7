"""Authentication: from the Authorization header to a Caller, before any endpoint runs.

With EVENTREG_AUTH=open every request is the unrestricted caller and headers are ignored.
With tokens, a request without a token is anonymous (enough for public operations), and
a token that is sent must be valid, on every route: a client learns at once that its token
is dead. Lookups go through the worker's TokenCache.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from eventreg.caller import ANONYMOUS, OPEN, Access, Caller
from eventreg.db import AppState, connection, tokens
from eventreg.errors import InvalidToken, MissingToken, RateLimited
from eventreg.ratelimit import RateLimit, retry_after

CALLER = "eventreg.caller"  # the request scope key the Caller is kept under


async def authenticate(request: Request[AppState], access: Access) -> Caller:
    state = request.state
    if state["settings"].auth_mode == "open":
        return OPEN
    header = request.headers.get("authorization")
    if header is None:
        if not access.public:
            raise MissingToken("this operation needs `Authorization: Bearer <token>`")
        return ANONYMOUS
    scheme, _, secret = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise InvalidToken("send the token as `Authorization: Bearer <token>`")
    caller = await _lookup(state, tokens.digest(secret.strip()))
    if caller is None:  # never echo the token: it may be a real one, mistyped
        raise InvalidToken("the token is unknown, expired or revoked")
    return caller


async def _lookup(state: AppState, digest: bytes) -> Caller | None:
    cache = state["tokens"]
    if (entry := cache.get(digest)) is not None:
        return entry.caller
    async with connection(state) as conn:
        found = await tokens.authenticate(conn, digest)
    if found is None:
        cache.put(digest, None, None)
        return None
    caller = Caller(user_id=found.user_id, role=found.role, token_id=found.token_id)
    cache.put(digest, caller, found.expires_at)
    return caller


def caller_of(request: Request[Any]) -> Caller:
    caller: Caller = request.scope[CALLER]
    return caller


def limit(bucket: RateLimit, key: str, what: str) -> None:
    """429 with Retry-After when `key` has used up its share of `what`."""
    wait = bucket.take(key)
    if wait:
        raise RateLimited(f"too many {what}; retry in {retry_after(wait)} s", retry_after(wait))
