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
import msgspec

from eventreg import sql, testhooks
from eventreg.caller import Caller
from eventreg.db import Conn, atomic, event_lock, promoted, rows
from eventreg.errors import (
    AlreadyRegistered,
    CancellationClosed,
    EventFull,
    EventNotFound,
    Forbidden,
    NotRegistered,
    RegistrationClosed,
    RegistrationNotFound,
    RegistrationNotOpen,
    UserNotFound,
)
from eventreg.structs import Registration

Q = sql.load("registrations")


async def register(
    conn: Conn,
    caller: Caller,
    event_id: int,
    user_id: int,
    *,
    waitlist: bool = False,
    lock_wait: float | None = None,
) -> Registration:
    """A seat, or with `waitlist` a place in the queue of a full event. `lock_wait` bounds
    the whole wait for the event lock (s); see `cancel`."""
    if not caller.is_user(user_id):  # decided on the caller alone: says nothing of user_id
        raise Forbidden("a user registers only themselves", field="user_id")
    async with atomic(conn):
        user = await conn.fetchrow(Q["share_lock_user"], user_id, event_id)
        if user is None:
            raise UserNotFound(f"user {user_id} does not exist", field="user_id")
        # Committed state read just now: answering from it is as correct as under the lock.
        _refuse(event_id, user_id, user["registered_hint"], user["not_open_hint"],
                user["closed_hint"], full=user["seats_hint"] == 0 and not waitlist)  # fmt: skip
        with event_lock("register"):
            event = await conn.fetchrow(Q["lock_event"], event_id, user_id, timeout=lock_wait)
        if (hooks := testhooks.ARMED.get()) is not None:  # only with EVENTREG_TEST_HOOKS=1
            await testhooks.after_lock(hooks)
        if event is None:
            raise EventNotFound(f"event {event_id} does not exist", field="event_id")
        _refuse(event_id, user_id, event["already_registered"], event["not_open_yet"],
                event["closed"], full=False)  # fmt: skip
        if await conn.fetchval(Q["take_seat"], event_id) is not None:
            return await _insert(conn, Q["insert_registration"], event_id, user_id)
        position = await conn.fetchval(Q["join_queue"], event_id) if waitlist else None
        if position is None:
            raise EventFull(f"event {event_id} has no seats left")
        queued = await _insert(conn, Q["insert_queued_registration"], event_id, user_id)
    return msgspec.structs.replace(queued, waitlist_position=position)


def _refuse(
    event_id: int, user_id: int, registered: bool, not_open: bool, closed: bool, full: bool
) -> None:
    if registered:
        raise AlreadyRegistered(f"user {user_id} is already registered for event {event_id}")
    if not_open:
        raise RegistrationNotOpen(f"registration for event {event_id} has not opened yet")
    if closed:
        raise RegistrationClosed(f"registration for event {event_id} has closed")
    if full:
        raise EventFull(f"event {event_id} has no seats left")


async def _insert(conn: Conn, query: str, event_id: int, user_id: int) -> Registration:
    try:
        row = await conn.fetchrow(query, event_id, user_id)
    # Reachable: lock_event reads already_registered with the snapshot it took before
    # waiting for the lock, so a registration the holder committed meanwhile is seen here.
    except asyncpg.UniqueViolationError:
        raise AlreadyRegistered(f"user {user_id} is already registered") from None
    assert row is not None
    return rows.registration(row)


async def cancel(
    conn: Conn, caller: Caller, event_id: int, user_id: int, *, lock_wait: float | None = None
) -> None:
    """Cancel a seat (the head of the queue takes it, in this transaction) or leave the
    queue; exactly once either way.

    PostgreSQL's lock_timeout bounds each lock wait, but a queued row lock waits twice
    (the tuple lock behind the first waiter, then the holder's transaction), so the
    statement gets `lock_wait` as a client-side timeout too: one bound for the whole wait.
    """
    async with atomic(conn):
        with event_lock("cancel"):
            event = await conn.fetchrow(Q["lock_event_for_cancel"], event_id, timeout=lock_wait)
        if event is None:
            raise EventNotFound(f"event {event_id} does not exist", field="event_id")
        if not caller.is_user(user_id) and not caller.organizes(event["organizer_id"]):
            raise Forbidden("only the holder, the event's organizer or an admin may cancel")
        if event["cancellation_closed"]:
            raise CancellationClosed(f"cancelling for event {event_id} has closed")
        if not await release(conn, event_id, user_id, waiting=event["waitlisted"]):
            raise NotRegistered(f"user {user_id} has no registration for event {event_id}")


async def release(conn: Conn, event_id: int, user_id: int, *, waiting: int) -> bool:
    """Under the event's lock: cancel the user's live entry, if any. A seat goes to the
    head of the `waiting` queue; a place in the queue just closes up."""
    was = await conn.fetchval(Q["cancel_registration"], event_id, user_id)
    if was == "active":
        await settle(conn, event_id, freed=1, waiting=waiting)
    elif was == "waitlisted":
        await settle(conn, event_id, left=1)
    return was is not None


async def settle(
    conn: Conn, event_id: int, *, freed: int = 0, waiting: int = 0, left: int = 0
) -> int:
    """Under the event's lock: `freed` seats come free, and go first to the `waiting`
    queue, in arrival order; `left` entries have left the queue. Returns how many were
    promoted. Every path that frees a seat ends here, so no seat is ever free while
    someone waits (and the database's CHECK would refuse it if one were)."""
    moved = min(freed, waiting)
    await conn.execute(Q["settle_seats"], event_id, freed, moved, left)
    if moved:
        await conn.execute(Q["promote_head"], event_id, moved)
        promoted(moved)
    return moved


async def get(conn: Conn, caller: Caller, registration_id: int) -> Registration:
    row = await conn.fetchrow(Q["get_registration"], registration_id)
    if row is None or not (
        caller.is_user(row["user_id"]) or caller.organizes(row["e_organizer_id"])
    ):
        raise RegistrationNotFound(f"registration {registration_id} does not exist")
    return rows.registration(row, with_user=True, with_event=True)


async def list_by_user(
    conn: Conn, caller: Caller, user_id: int, after: int, limit: int, status: str = "active"
) -> list[Registration]:
    """All of them for the user or an admin; an organizer sees those at their events, and
    when there are none the user is missing to them, as to anyone else."""
    only_at = None if caller.may_act_for(user_id) else caller.user_id or -1
    found = await conn.fetch(
        Q["list_registrations_by_user"], user_id, after, limit, only_at, status
    )
    if not found and (only_at is not None or not await conn.fetchval(Q["user_exists"], user_id)):
        raise UserNotFound(f"user {user_id} does not exist")
    return [rows.registration(r, with_event=True) for r in found]


async def list_by_event(
    conn: Conn, caller: Caller, event_id: int, after: int, limit: int, status: str = "active"
) -> list[Registration]:
    """Names and emails of the people coming: for the event's organizer and admins."""
    organizer = await conn.fetchval(Q["event_organizer"], event_id)
    if organizer is None:
        raise EventNotFound(f"event {event_id} does not exist")
    if not caller.organizes(organizer):
        raise Forbidden(f"only the organizer of event {event_id} or an admin sees who comes")
    found = await conn.fetch(Q["list_registrations_by_event"], event_id, after, limit, status)
    return [rows.registration(r, with_user=True) for r in found]
