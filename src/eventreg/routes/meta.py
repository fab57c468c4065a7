"""Service endpoints: the index and a health check that asks the database."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from starlette.requests import Request
from starlette.responses import Response

from eventreg import metrics
from eventreg.auth import caller_of
from eventreg.db import AppState, connection, gauges, pool_figures
from eventreg.errors import Forbidden, NotFound, Unavailable, cause_of
from eventreg.http import json
from eventreg.structs import Health, Index

log = logging.getLogger("eventreg")

INDEX = Index(
    message="Event Registration API",
    version="1.0",
    endpoints={
        "users": "/api/v1/users",
        "events": "/api/v1/events",
        "registrations": "/api/v1/registrations",
        "health": "/health",
        "openapi": "/openapi.json",
        "docs": "/docs",
        "metrics": "/metrics",
    },
)


async def index(_: Request[AppState]) -> Response:
    return json(INDEX)


async def health(request: Request[AppState]) -> Response:
    try:
        async with connection(request.state) as conn:
            await conn.fetchval("SELECT 1", timeout=1)
    except Exception as exc:
        refusal = Unavailable(f"database check failed: {type(exc).__name__}")
        refusal.cause = cause_of(exc)
        raise refusal from None
    return json(Health(status="ok"))


async def metrics_text(request: Request[AppState]) -> Response:
    """GET /metrics: the Prometheus text. Admins only with tokens (routes.METRICS_READER):
    the figures say how busy the service is and which events sell."""
    state = request.state
    if not state["settings"].metrics:
        raise NotFound("metrics are off (METRICS=off)")
    if not caller_of(request).admin:
        raise Forbidden("metrics are for admins")
    metrics.TALLY.fold()
    pool_figures(state).publish()
    seats = metrics.Seats(await events_on_sale(state))
    body = await asyncio.to_thread(metrics.exposition, seats)
    return Response(body, media_type=metrics.CONTENT_TYPE)


async def events_on_sale(state: AppState) -> list[asyncpg.Record] | None:
    """The seat gauges' rows, from the primary; None when it does not answer in a second
    (the rest of /metrics matters most exactly then)."""
    limit = state["settings"].metrics_events
    if limit == 0:
        return []
    try:
        async with connection(state) as conn:
            return await gauges.events_on_sale(conn, limit, seconds=1)
    except Exception as exc:
        log.warning("/metrics could not read the events' seats: %r", exc)
        return None
