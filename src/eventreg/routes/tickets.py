"""Tickets, check-in and door tokens (issue 9): /api/v1/registrations/{id}/ticket…,
/api/v1/registrations/{id}/check-in, /api/v1/events/{id}/check-ins…,
/api/v1/events/{id}/door-tokens, and the public keys at /.well-known/ticket-keys."""

from __future__ import annotations

import io
from collections import Counter
from datetime import UTC, datetime
from typing import Annotated

import msgspec
import segno
from starlette.requests import Request
from starlette.responses import Response

from eventreg import metrics
from eventreg.auth import caller_of
from eventreg.db import AppState, tickets
from eventreg.errors import ApiError, InvalidQuery
from eventreg.http import json, path_id, read_json
from eventreg.routes import crud
from eventreg.structs import DoorTokenRequest, Scan, ScanBatch, Ticket

BATCH_BODY_BYTES = 256 * 1024  # 1,000 scans of the longest codes, written compactly
_Since = Annotated[datetime, msgspec.Meta(tz=True)]
# The public keys change only when the configuration does (a restart): scanners and
# caches may keep them a while.
KEYS_CACHE = {"Cache-Control": "public, max-age=300"}
QR_CACHE = {"Cache-Control": "private, max-age=300"}


async def _ticket(request: Request[AppState]) -> Ticket:
    registration_id = path_id(request)
    async with crud.connection_for(request) as conn:
        return await tickets.ticket(
            conn, caller_of(request), request.state["tickets"], registration_id
        )


async def ticket(request: Request[AppState]) -> Response:
    return json(await _ticket(request))


async def ticket_svg(request: Request[AppState]) -> Response:
    out = io.BytesIO()
    _qr(await _ticket(request)).save(out, kind="svg", scale=6, border=4, xmldecl=False)
    return Response(out.getvalue(), 200, QR_CACHE, "image/svg+xml")


async def ticket_png(request: Request[AppState]) -> Response:
    out = io.BytesIO()
    _qr(await _ticket(request)).save(out, kind="png", scale=8, border=4)
    return Response(out.getvalue(), 200, QR_CACHE, "image/png")


def _qr(made: Ticket) -> segno.QRCode:
    """Error correction M (15% of the symbol may be lost): a phone screen's glare or a
    creased print still scans. A code fits a version 6 or 7 symbol (41 or 45 modules a
    side), depending on the length of its ids."""
    return segno.make(made.code, error="m", micro=False)


async def keys(request: Request[AppState]) -> Response:
    return json(request.state["tickets"].jwks(), headers=KEYS_CACHE)


async def check_in(request: Request[AppState]) -> Response:
    event_id = path_id(request)
    body = await read_json(request, Scan)
    try:
        async with crud.connection_for(request) as conn:
            done = await tickets.check_in(
                conn, caller_of(request), request.state["tickets"], event_id, body.code
            )
    except ApiError as refusal:  # a scan refused (forged, cancelled, another event…)
        metrics.check_in(refusal.code)
        raise
    metrics.check_in(done.code)
    if done.code == "already_checked_in":
        return json(done)
    where = f"/api/v1/registrations/{done.registration_id}/check-in"
    return json(done, 201, {"Location": where})


async def upload(request: Request[AppState]) -> Response:
    event_id = path_id(request)
    body = await read_json(request, ScanBatch)
    async with crud.connection_for(request) as conn:
        result = await tickets.upload(
            conn, caller_of(request), request.state["tickets"], event_id, body.scans
        )
    for code, count in Counter(o.code for o in result.outcomes).items():
        metrics.check_in(code, "batch", count)
    return json(result)


async def revoked(request: Request[AppState]) -> Response:
    event_id = path_id(request)
    since = _since(request.query_params.get("since"))
    async with crud.connection_for(request) as conn:
        return json(await tickets.revoked(conn, caller_of(request), event_id, since))


def _since(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        since = msgspec.json.decode(msgspec.json.encode(raw), type=_Since)
        return since.astimezone(UTC)  # a year 9999 with a negative offset overflows here
    except (msgspec.ValidationError, OverflowError):
        raise InvalidQuery(
            "`since` must be an RFC 3339 time with its offset, e.g. 2026-11-25T19:00:00Z",
            field="since",
        ) from None


async def issue_door_token(request: Request[AppState]) -> Response:
    event_id = path_id(request)
    body = await read_json(request, DoorTokenRequest)
    async with crud.connection_for(request) as conn:
        made = await tickets.issue_door_token(conn, caller_of(request), event_id, body)
    return json(made, 201, {"Location": f"/api/v1/tokens/{made.id}"})


summary = crud.fetch(tickets.summary)
get_check_in = crud.fetch(tickets.get_check_in)
_undo = crud.delete(tickets.undo, "check-in undone")


async def undo(request: Request[AppState]) -> Response:
    answer = await _undo(request)
    metrics.check_in("undone")
    return answer


list_door_tokens = crud.fetch_page_of(tickets.list_door_tokens)
