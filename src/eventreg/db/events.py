"""Events: create, read, change capacity or details, and (soft-)delete."""

from __future__ import annotations

import asyncpg

from eventreg import sql
from eventreg.db import Conn, rows
from eventreg.errors import (
    CapacityBelowRegistrations,
    EventNotFound,
    NotAnOrganizer,
    OrganizerNotFound,
    UserNotFound,
)
from eventreg.structs import Event, EventPatch, NewEvent, given

Q = sql.load("events")


async def _check_organizer(conn: Conn, organizer_id: int) -> None:
    """Share-lock the organizer (inside the caller's transaction) and check the role."""
    row = await conn.fetchrow(Q["share_lock_organizer"], organizer_id)
    if row is None:
        raise OrganizerNotFound(f"user {organizer_id} does not exist", field="organizer_id")
    if row["role"] != "organizer":
        raise NotAnOrganizer(
            f"user {organizer_id} has role {row['role']!r}, not 'organizer'", field="organizer_id"
        )


async def create(conn: Conn, new: NewEvent) -> Event:
    async with conn.transaction():
        await _check_organizer(conn, new.organizer_id)
        event_id = await conn.fetchval(Q["insert_event"], new.title, new.capacity, new.organizer_id)
        row = await conn.fetchrow(Q["get_event"], event_id)
    assert row is not None
    return rows.event_with_organizer(row)


async def get(conn: Conn, event_id: int) -> Event:
    row = await conn.fetchrow(Q["get_event"], event_id)
    if row is None:
        raise EventNotFound(f"event {event_id} does not exist")
    return rows.event_with_organizer(row)


async def list_page(conn: Conn, after: int, limit: int) -> list[Event]:
    return [rows.event_with_organizer(r) for r in await conn.fetch(Q["list_events"], after, limit)]


async def list_by_organizer(conn: Conn, organizer_id: int, after: int, limit: int) -> list[Event]:
    found = await conn.fetch(Q["list_events_by_organizer"], organizer_id, after, limit)
    if not found and not await conn.fetchval(Q["user_exists"], organizer_id):
        raise UserNotFound(f"user {organizer_id} does not exist")
    return [rows.event(r) for r in found]


async def update(conn: Conn, event_id: int, patch: EventPatch) -> Event:
    """Change only the given fields; capacity moves available_seats by the same delta."""
    try:
        return await _update(conn, event_id, patch)
    except asyncpg.CheckViolationError:  # rolled back; say how low the capacity may go
        held = await conn.fetchval(Q["count_active_registrations"], event_id)
        raise CapacityBelowRegistrations(
            f"capacity {given(patch.capacity)} is below the {held} seats already registered;"
            f" the lowest capacity possible now is {held}",
            field="capacity",
        ) from None


async def _update(conn: Conn, event_id: int, patch: EventPatch) -> Event:
    organizer_id = given(patch.organizer_id)
    async with conn.transaction():
        if organizer_id is not None:
            await _check_organizer(conn, organizer_id)
        updated = await conn.fetchval(
            Q["update_event"], event_id, given(patch.title), given(patch.capacity), organizer_id
        )
        if updated is None:
            raise EventNotFound(f"event {event_id} does not exist")
        row = await conn.fetchrow(Q["get_event"], event_id)
    assert row is not None
    return rows.event_with_organizer(row)


async def delete(conn: Conn, event_id: int) -> None:
    """Soft-delete; active registrations are cancelled and the seats released, atomically."""
    async with conn.transaction():
        if await conn.fetchval(Q["lock_event_for_delete"], event_id) is None:
            raise EventNotFound(f"event {event_id} does not exist")
        await conn.execute(Q["cancel_event_registrations"], event_id)
        await conn.execute(Q["soft_delete_event"], event_id)
