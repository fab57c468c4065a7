"""Authentication: from the Authorization header to a Caller, before any endpoint runs.

With EVENTREG_AUTH=open every request is the unrestricted caller and headers are ignored.
With tokens, a request without a token is anonymous (enough for public operations), and
a token that is sent must be valid, on every route: a client learns at once that its token
is dead. Lookups go through the worker's TokenCache.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.requests import Request

from eventreg.caller import ANONYMOUS, DOOR, OPEN, Access, Caller
from eventreg.db import AppState, connection, tokens
from eventreg.errors import Forbidden, InvalidToken, MissingToken, RateLimited
from eventreg.ratelimit import RateLimit, retry_after

log = logging.getLogger("eventreg")
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
    if caller.door and DOOR not in access.who:  # issue 9: a door token's one power
        raise Forbidden("a door token only checks tickets in at its event")
    return caller


async def _lookup(state: AppState, digest: bytes) -> Caller | None:
    cache = state["tokens"]
    if (entry := cache.get(digest)) is not None:
        return entry.caller
    if (pending := cache.pending.get(digest)) is not None:  # asked already: share the answer
        return await asyncio.shield(pending)
    cache.pending[digest] = asyncio.get_running_loop().create_future()
    try:
        caller = await _ask_database(state, digest)
    except BaseException as exc:
        future = cache.pending.pop(digest)
        future.set_exception(exc if isinstance(exc, Exception) else ConnectionAbortedError())
        future.exception()  # read: nobody else may be waiting
        raise
    cache.pending.pop(digest).set_result(caller)
    return caller


async def _ask_database(state: AppState, digest: bytes) -> Caller | None:
    cache = state["tokens"]
    async with connection(state) as conn:
        found = await tokens.authenticate(conn, digest)
    if found is None:
        cache.put(digest, None, None)
        return None
    caller = Caller(
        user_id=found.user_id, role=found.role, token_id=found.token_id,
        check_in_event_id=found.check_in_event_id,  # issue 9: door tokens
    )  # fmt: skip
    cache.put(digest, caller, found.expires_at)
    cache.used.add(found.token_id)
    return caller


async def record_use_forever(state: AppState, every: float = 5.0) -> None:
    """Write the tokens' last use in bulk, off the requests' path, every `every` s."""
    while True:
        await asyncio.sleep(every)
        await record_use(state)


async def record_use(state: AppState) -> None:
    """The tokens looked up (not served from the cache) since the last round are marked
    used, at most once a minute each in the database."""
    cache = state["tokens"]
    if not cache.used:
        return
    batch, cache.used = list(cache.used), set()
    try:
        async with connection(state) as conn:
            await tokens.touch(conn, batch)
    except Exception as exc:  # the database is away: the next lookup marks it again
        log.warning("recording %d tokens' last use failed: %r", len(batch), exc)


def caller_of(request: Request[Any]) -> Caller:
    caller: Caller = request.scope[CALLER]
    return caller


def limit(bucket: RateLimit, key: str, what: str) -> None:
    """429 with Retry-After when `key` has used up its share of `what`."""
    wait = bucket.take(key)
    if wait:
        raise RateLimited(f"too many {what}; retry in {retry_after(wait)} s", retry_after(wait))
