"""Events: create, read, change capacity or details, and (soft-)delete.

Authorization: events are public to read. An organizer creates events as their own
organizer; only the event's organizer or an admin changes or deletes it (403 for anyone
else, since the event itself is visible), and only an admin moves it to another organizer.
"""

from __future__ import annotations

from datetime import datetime

from msgspec import UNSET

from eventreg import sql
from eventreg.caller import Caller
from eventreg.db import Conn, atomic, registrations, rows
from eventreg.db.rows import Row
from eventreg.errors import (
    CapacityBelowRegistrations,
    EventNotFound,
    Forbidden,
    NotAnOrganizer,
    OrganizerNotFound,
    Unprocessable,
    UserNotFound,
)
from eventreg.structs import Event, EventPatch, NewEvent, given, window_in_order

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


async def create(conn: Conn, caller: Caller, new: NewEvent) -> Event:
    if not caller.admin and caller.role != "organizer":
        raise Forbidden("only organizers and admins create events")
    if not caller.organizes(new.organizer_id):
        raise Forbidden("an organizer creates events as their own organizer", field="organizer_id")
    async with atomic(conn):
        await _check_organizer(conn, new.organizer_id)
        event_id = await conn.fetchval(
            Q["insert_event"], new.title, new.capacity, new.organizer_id,
            new.registration_opens_at, new.registration_closes_at, new.cancellation_closes_at,
        )  # fmt: skip
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


async def update(conn: Conn, caller: Caller, event_id: int, patch: EventPatch) -> Event:
    """Change only the given fields. A capacity change moves available_seats by the same
    delta; new seats go to the head of the queue first, in this transaction."""
    organizer_id, capacity = given(patch.organizer_id), given(patch.capacity)
    async with atomic(conn):
        if organizer_id is not None:  # users before events: the lock order every writer keeps
            await _check_organizer(conn, organizer_id)
        locked = await _lock_as_organizer(conn, caller, event_id)
        if organizer_id not in (None, locked["organizer_id"]) and not caller.admin:
            raise Forbidden(
                "only an admin moves an event to another organizer", field="organizer_id"
            )
        change = _capacity_change(locked, capacity)
        await conn.execute(
            Q["update_event"], event_id, given(patch.title), capacity, organizer_id, min(change, 0)
        )
        if change > 0:
            await registrations.settle(conn, event_id, freed=change, waiting=locked["waitlisted"])
        if windows := _windows(locked, patch):
            await conn.execute(Q["set_windows"], event_id, *windows)
        row = await conn.fetchrow(Q["get_event"], event_id)
    assert row is not None
    return rows.event_with_organizer(row)


def _capacity_change(locked: Row, capacity: int | None) -> int:
    if capacity is None:
        return 0
    if capacity < locked["taken"]:  # the seats CHECK is the backstop
        raise CapacityBelowRegistrations(
            f"capacity {capacity} is below the {locked['taken']} seats already registered;"
            f" the lowest capacity possible now is {locked['taken']}",
            field="capacity",
        )
    change: int = capacity - locked["capacity"]
    return change


def _windows(locked: Row, patch: EventPatch) -> tuple[datetime | None, ...] | None:
    """The three windows after the patch, or None when the patch names none of them."""
    names = ("registration_opens_at", "registration_closes_at", "cancellation_closes_at")
    if all(getattr(patch, n) is UNSET for n in names):
        return None
    after = tuple(locked[n] if getattr(patch, n) is UNSET else getattr(patch, n) for n in names)
    try:
        window_in_order(after[0], after[1])
    except ValueError as exc:
        raise Unprocessable(str(exc), field="registration_closes_at") from None
    return after


async def delete(conn: Conn, caller: Caller, event_id: int) -> None:
    """Soft-delete; active registrations are cancelled and the seats released, atomically."""
    async with atomic(conn):
        await _lock_as_organizer(conn, caller, event_id)
        await conn.execute(Q["cancel_event_registrations"], event_id)
        await conn.execute(Q["soft_delete_event"], event_id)


async def _lock_as_organizer(conn: Conn, caller: Caller, event_id: int) -> Row:
    """Lock the live event for a change by its organizer or an admin."""
    locked = await conn.fetchrow(Q["lock_event_for_change"], event_id)
    if locked is None:
        raise EventNotFound(f"event {event_id} does not exist")
    if not caller.organizes(locked["organizer_id"]):
        raise Forbidden(f"only the organizer of event {event_id} or an admin may change it")
    return locked
