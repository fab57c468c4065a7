"""Shared database types and the one way routes get a connection."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any, TypeAlias, TypedDict

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from eventreg import testhooks
from eventreg.config import Settings
from eventreg.ratelimit import RateLimit
from eventreg.ticketcodes import Keyring
from eventreg.tokencache import TokenCache

Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"
Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"

log = logging.getLogger("eventreg.db")


class AppState(TypedDict):
    pool: Pool
    settings: Settings
    tokens: TokenCache
    signups: RateLimit  # per client address
    attempts: RateLimit  # registration attempts per user
    groups: Any  # eventreg.routes.admission.Groups (a route-layer object: typed there)
    tickets: Keyring  # signs ticket codes and verifies them


def atomic(conn: Conn) -> AbstractAsyncContextManager[Any]:
    """The transaction of one unit of work; inside a caller's transaction, that one.

    An idempotent request (Idempotency-Key) runs the unit of work and the write of its key
    in one transaction that the route opens. Joining it rather than nesting a SAVEPOINT
    keeps the event's row lock as short as without a key; a unit of work therefore never
    catches a database error and carries on inside the transaction.
    """
    return nullcontext() if conn.is_in_transaction() else conn.transaction()


@asynccontextmanager
async def connection(state: AppState) -> AsyncIterator[Conn]:
    """A pooled connection, acquired with a timeout (a full pool becomes a 503, not a hang).

    Release can fail after the work has committed (the reset query hits a dead connection);
    the pool then discards the connection. That must not turn a committed registration into
    an error response, so a release failure is logged and swallowed here.
    """
    pool, settings = state["pool"], state["settings"]
    conn = await pool.acquire(timeout=settings.acquire_timeout_ms / 1000)
    try:
        yield conn
        if (hooks := testhooks.ARMED.get()) is not None:  # only with EVENTREG_TEST_HOOKS=1
            await testhooks.before_release(hooks, conn, settings.database_url)
    except asyncpg.InternalClientError:
        # The driver's protocol state is broken (e.g. a FATAL read while idle when the server
        # shut down: "another operation (2) is in progress", P3). Never hand it out again.
        conn.terminate()
        raise
    finally:
        try:
            await pool.release(conn, timeout=settings.acquire_timeout_ms / 1000)
        except Exception as exc:  # the connection is gone; the pool has already dropped it
            log.warning("connection release failed after the request's work: %r", exc)
