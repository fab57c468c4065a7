"""Shared database types and the one way routes get a connection."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, TypeAlias, TypedDict

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from eventreg import logs, metrics, testhooks
from eventreg.config import Settings
from eventreg.errors import LockTimeout, PoolTimeout
from eventreg.ratelimit import RateLimit
from eventreg.ticketcodes import Keyring
from eventreg.tokencache import TokenCache

if TYPE_CHECKING:
    from eventreg.db.replica import Replica

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
    replica: Replica | None  # DATABASE_READ_URL's pool and lag watch, when it is set


def atomic(conn: Conn) -> AbstractAsyncContextManager[Any]:
    """The transaction of one unit of work; inside a caller's transaction, that one.

    An idempotent request (Idempotency-Key) runs the unit of work and the write of its key
    in one transaction that the route opens. Joining it rather than nesting a SAVEPOINT
    keeps the event's row lock as short as without a key; a unit of work therefore never
    catches a database error and carries on inside the transaction.
    """
    return nullcontext() if conn.is_in_transaction() else conn.transaction()


@asynccontextmanager
async def connection(state: AppState, pool: Pool | None = None) -> AsyncIterator[Conn]:
    """A pooled connection, acquired with a timeout (a full pool becomes a 503, not a hang).

    Release can fail after the work has committed (the reset query hits a dead connection);
    the pool then discards the connection. That must not turn a committed registration into
    an error response, so a release failure is logged and swallowed here. `pool`: another
    pool than the primary's (the replica's).
    """
    pool, settings = pool or state["pool"], state["settings"]
    try:
        conn = await pool.acquire(timeout=settings.acquire_timeout_ms / 1000)
    except TimeoutError as exc:
        raise PoolTimeout("no pooled connection came free in time") from exc
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


@contextmanager
def event_lock(by: str) -> Iterator[None]:
    """Around the statement that takes an event's row lock: how long it took (the metric
    eventreg_event_lock_wait_seconds), and a client-side timeout told apart as LockTimeout."""
    start = time.perf_counter()
    try:
        yield
    except TimeoutError as exc:
        raise LockTimeout("the event's lock was not free in time") from exc
    finally:
        metrics.lock_waited(by, time.perf_counter() - start)


def promoted(count: int) -> None:
    """`count` waiting registrations took seats in the current request's transaction; they
    are counted once its answer shows that the transaction committed (eventreg.observe)."""
    if count and (current := logs.CURRENT.get()) is not None:
        current.promoted += count


def pool_figures(state: AppState) -> metrics.Pools:
    """This worker's pools now: open connections, those in use, and the most allowed."""
    named = [("primary", state["pool"])]
    if (replica := state["replica"]) is not None:
        named.append(("replica", replica.pool))
    most = state["settings"].pool_max_size
    return metrics.Pools([(name, pool.get_size(), pool.get_size() - pool.get_idle_size(), most)
                          for name, pool in named])  # fmt: skip
