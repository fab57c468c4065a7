"""Registrations: take a seat, give it back, and read who holds which seats.

Lock order, everywhere: the user row (shared) before the event row (exclusive). The event
row lock serializes every change to one event's seats and registrations, so what is read
under it stays true until COMMIT; the conditional UPDATE and the partial unique index are
the database's own guarantees on top of that.

Authorization: a user registers only themselves; a seat is cancelled by its holder, the
event's organizer or an admin (403 for anyone else). A registration is visible to its
holder, the event's organizer and admins; to anyone else it is missing.
"""

from __future__ import annotations

import asyncpg

from eventreg import sql, testhooks
from eventreg.caller import Caller
from eventreg.db import Conn, atomic, rows
from eventreg.errors import (
    AlreadyRegistered,
    EventFull,
    EventNotFound,
    Forbidden,
    NotRegistered,
    RegistrationNotFound,
    UserNotFound,
)
from eventreg.structs import Registration

Q = sql.load("registrations")


async def register(
    conn: Conn, caller: Caller, event_id: int, user_id: int, *, lock_wait: float | None = None
) -> Registration:
    """`lock_wait` bounds the whole wait for the event lock (s); see `cancel`."""
    if not caller.is_user(user_id):  # decided on the caller alone: says nothing of user_id
        raise Forbidden("a user registers only themselves", field="user_id")
    async with atomic(conn):
        user = await conn.fetchrow(Q["share_lock_user"], user_id, event_id)
        if user is None:
            raise UserNotFound(f"user {user_id} does not exist", field="user_id")
        # Committed state read just now: answering from it is as correct as under the lock.
        if user["registered_hint"]:
            raise AlreadyRegistered(f"user {user_id} is already registered for event {event_id}")
        if user["seats_hint"] == 0:
            raise EventFull(f"event {event_id} has no seats left")
        event = await conn.fetchrow(Q["lock_event"], event_id, user_id, timeout=lock_wait)
        if (hooks := testhooks.ARMED.get()) is not None:  # only with EVENTREG_TEST_HOOKS=1
            await testhooks.after_lock(hooks)
        if event is None:
            raise EventNotFound(f"event {event_id} does not exist", field="event_id")
        if event["already_registered"]:
            raise AlreadyRegistered(f"user {user_id} is already registered for event {event_id}")
        if await conn.fetchval(Q["take_seat"], event_id) is None:
            raise EventFull(f"event {event_id} has no seats left")
        try:
            row = await conn.fetchrow(Q["insert_registration"], event_id, user_id)
        except asyncpg.UniqueViolationError:  # unreachable under the lock; kept as a backstop
            raise AlreadyRegistered(f"user {user_id} is already registered") from None
    assert row is not None
    return rows.registration(row)


async def cancel(
    conn: Conn, caller: Caller, event_id: int, user_id: int, *, lock_wait: float | None = None
) -> None:
    """Cancel the active registration; its seat is released exactly once.

    PostgreSQL's lock_timeout bounds each lock wait, but a queued row lock waits twice
    (the tuple lock behind the first waiter, then the holder's transaction), so the
    statement gets `lock_wait` as a client-side timeout too: one bound for the whole wait.
    """
    async with atomic(conn):
        organizer = await conn.fetchval(Q["lock_event_for_cancel"], event_id, timeout=lock_wait)
        if organizer is None:
            raise EventNotFound(f"event {event_id} does not exist", field="event_id")
        if not caller.is_user(user_id) and not caller.organizes(organizer):
            raise Forbidden("only the holder, the event's organizer or an admin may cancel")
        if await conn.fetchval(Q["cancel_registration"], event_id, user_id) is None:
            raise NotRegistered(f"user {user_id} has no active registration for event {event_id}")
        await conn.execute(Q["release_seat"], event_id)


async def get(conn: Conn, caller: Caller, registration_id: int) -> Registration:
    row = await conn.fetchrow(Q["get_registration"], registration_id)
    if row is None or not (
        caller.is_user(row["user_id"]) or caller.organizes(row["e_organizer_id"])
    ):
        raise RegistrationNotFound(f"registration {registration_id} does not exist")
    return rows.registration(row, with_user=True, with_event=True)


async def list_by_user(
    conn: Conn, caller: Caller, user_id: int, after: int, limit: int
) -> list[Registration]:
    """All of them for the user or an admin; an organizer sees those at their events, and
    when there are none the user is missing to them, as to anyone else."""
    only_at = None if caller.may_act_for(user_id) else caller.user_id or -1
    found = await conn.fetch(Q["list_registrations_by_user"], user_id, after, limit, only_at)
    if not found and (only_at is not None or not await conn.fetchval(Q["user_exists"], user_id)):
        raise UserNotFound(f"user {user_id} does not exist")
    return [rows.registration(r, with_event=True) for r in found]


async def list_by_event(
    conn: Conn, caller: Caller, event_id: int, after: int, limit: int
) -> list[Registration]:
    """Names and emails of the people coming: for the event's organizer and admins."""
    organizer = await conn.fetchval(Q["event_organizer"], event_id)
    if organizer is None:
        raise EventNotFound(f"event {event_id} does not exist")
    if not caller.organizes(organizer):
        raise Forbidden(f"only the organizer of event {event_id} or an admin sees who comes")
    found = await conn.fetch(Q["list_registrations_by_event"], event_id, after, limit)
    return [rows.registration(r, with_user=True) for r in found]
