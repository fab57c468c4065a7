"""Service endpoints: the index and a health check that asks the database."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from eventreg.db import AppState, connection
from eventreg.errors import Unavailable
from eventreg.http import json
from eventreg.structs import Health, Index

INDEX = Index(
    message="Event Registration API",
    version="1.0",
    endpoints={
        "users": "/api/v1/users",
        "events": "/api/v1/events",
        "registrations": "/api/v1/registrations",
        "health": "/health",
        "openapi": "/openapi.json",
    },
)


async def index(_: Request[AppState]) -> Response:
    return json(INDEX)


async def health(request: Request[AppState]) -> Response:
    try:
        async with connection(request.state) as conn:
            await conn.fetchval("SELECT 1", timeout=1)
    except Exception as exc:
        raise Unavailable(f"database check failed: {type(exc).__name__}") from None
    return json(Health(status="ok"))
