"""The ASGI application: routes, error handlers, and a pool that lives as long as the app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from eventreg import logs, metrics
from eventreg.auth import record_use, record_use_forever
from eventreg.config import Settings
from eventreg.db import AppState, connection, idempotency, pool_figures
from eventreg.db.replica import Replica, Watch
from eventreg.errors import HANDLERS
from eventreg.observe import Observe
from eventreg.ratelimit import RateLimit
from eventreg.routes import ROUTES
from eventreg.routes.admission import Groups
from eventreg.ticketcodes import Keyring, load_keyring
from eventreg.tokencache import TokenCache

log = logging.getLogger("eventreg")


def server_settings(settings: Settings) -> dict[str, str]:
    """Per-connection limits: nothing waits on a lock or a query forever."""
    return {
        "application_name": "eventreg",
        "lock_timeout": str(settings.lock_timeout_ms),
        "statement_timeout": str(settings.statement_timeout_ms),
        "idle_in_transaction_session_timeout": str(settings.idle_in_transaction_timeout_ms),
    }


async def keep_session(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """Pool release hook that sends nothing: the default runs asyncpg's reset query
    (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL) after every request, a round trip
    that took a fifth of the server's CPU in a profile of GET /events/{id}; without it
    that endpoint served about twice the requests per second. The app never changes
    session state (no SET, LISTEN, advisory locks or cursors outside a transaction), and
    asyncpg still rolls back an open transaction and drops a closed connection first.
    """


def create_pool(settings: Settings, url: str = "") -> asyncpg.Pool[asyncpg.Record]:
    # min_size connections are opened lazily on first use (see lifespan), so the API can
    # start while the database is down and recover by itself when it comes back.
    return asyncpg.create_pool(
        url or settings.database_url,
        min_size=0,
        max_size=settings.pool_max_size,
        max_inactive_connection_lifetime=60,
        command_timeout=settings.statement_timeout_ms / 1000 + 1,
        server_settings=server_settings(settings),
        reset=keep_session,
    )


def app_state(pool: asyncpg.Pool[asyncpg.Record], settings: Settings) -> AppState:
    """What every request sees as request.state: one per worker process."""
    return {
        "pool": pool,
        "settings": settings,
        "tokens": TokenCache(settings.auth_cache_seconds),
        "signups": RateLimit(settings.rate_signup_per_minute),
        "attempts": RateLimit(settings.rate_register_per_minute),
        "groups": Groups(settings.group_max, stall=settings.lock_timeout_ms / 1000 or 1.0),
        "tickets": keyring(settings),
        "replica": None,
    }


def keyring(settings: Settings) -> Keyring:
    """The ticket keys; a configuration that cannot be used stops the start, readably."""
    try:
        return load_keyring(
            settings.ticket_signing_key, settings.ticket_key_file, settings.ticket_key_create,
            settings.ticket_retired_keys,
        )  # fmt: skip
    except ValueError as exc:
        raise SystemExit(f"ticket keys: {exc}") from None


SWEEP_BATCH, SWEEP_BATCHES = 1000, 20  # at most 20,000 expired keys a round, 1,000 a statement


async def sweep_keys_forever(state: AppState) -> None:
    """Delete expired Idempotency-Keys now and then. Every worker runs this; an advisory
    lock lets one sweep at a time, and each statement deletes a bounded batch."""
    every = state["settings"].idempotency_sweep_seconds
    while every > 0:
        await asyncio.sleep(every * random.uniform(0.5, 1.0))  # workers drift apart
        try:
            deleted = await sweep_keys(state)
        except Exception as exc:  # the database is down, say: try again next round
            log.warning("sweeping expired idempotency keys failed: %r", exc)
        else:
            if deleted:
                log.info("deleted %d expired idempotency keys", deleted)


async def sweep_keys(state: AppState) -> int:
    """One round: batches until none is full, at most SWEEP_BATCHES of them."""
    total = 0
    async with connection(state) as conn:
        for _ in range(SWEEP_BATCHES):
            deleted = await idempotency.sweep(conn, SWEEP_BATCH)
            total += deleted or 0
            if deleted is None or deleted < SWEEP_BATCH:
                break
    return total


async def metrics_forever(state: AppState) -> None:
    """Once a second, this worker's share of /metrics: its request counts, its pools."""
    while True:
        metrics.TALLY.fold()
        pool_figures(state).publish()
        await asyncio.sleep(1)


async def close_pool(pool: asyncpg.Pool[asyncpg.Record]) -> None:
    try:
        await asyncio.wait_for(pool.close(), timeout=10)
    except TimeoutError:
        log.warning("pool did not close in 10 s; terminating its connections")
        pool.terminate()


def create_app(settings: Settings) -> Starlette:
    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[AppState]:
        pool = await create_pool(settings)
        state = app_state(pool, settings)
        chores = [sweep_keys_forever(state), record_use_forever(state)]
        if settings.database_read_url:
            watch = {**server_settings(settings), "application_name": "eventreg-watch"}
            replica = state["replica"] = Replica(
                await create_pool(settings, settings.database_read_url),
                Watch(settings.database_url, watch), Watch(settings.database_read_url, watch),
                settings.read_max_lag_ms,
            )  # fmt: skip
            chores.append(replica.watch_forever())
        if settings.metrics:
            chores.append(metrics_forever(state))
        tasks = [asyncio.create_task(chore) for chore in chores]
        try:
            yield state
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(record_use(state), timeout=2)
            if state["replica"] is not None:
                await state["replica"].close()
            await close_pool(pool)
            if logs.REQUESTS is not None:
                logs.REQUESTS.flush()
            metrics.TALLY.fold()
            metrics.worker_exits()

    app = App(
        settings, routes=ROUTES, exception_handlers=HANDLERS, lifespan=lifespan,
        middleware=cors(settings.cors_origins),
    )  # fmt: skip
    app.router.redirect_slashes = False  # one spelling per URL; /users/ is a JSON 404
    return app


class App(Starlette):
    """Starlette with eventreg.observe outside everything, its error middleware included,
    so the request id and the request line cover every answer, 500s too."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        self.settings = settings
        super().__init__(**kwargs)

    def build_middleware_stack(self) -> ASGIApp:
        return Observe(super().build_middleware_stack(), self.settings)


def cors(origins: tuple[str, ...]) -> list[Middleware]:
    """CORS for the configured browser origins, answered before routing (preflights
    included). None configured: no middleware at all, so no cost and no CORS headers.
    Tokens travel in Authorization, never in cookies, so credentials stay off."""
    if not origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=list(origins),
            allow_methods=list(CORS_METHODS),
            allow_headers=list(CORS_REQUEST_HEADERS),
            expose_headers=list(CORS_EXPOSED_HEADERS),
            max_age=600,
        )
    ]


CORS_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
CORS_REQUEST_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key", "X-Request-Id")
CORS_EXPOSED_HEADERS = ("Location", "Link", "Retry-After", "WWW-Authenticate", "X-Request-Id")


def app_from_env() -> Starlette:
    """Entry point for `uvicorn --factory eventreg.app:app_from_env`: a serving process, so
    it also sets up the process's log lines (eventreg.logs)."""
    settings = Settings.from_env()
    logs.configure(settings.log_format, settings.access_log)
    return create_app(settings)
