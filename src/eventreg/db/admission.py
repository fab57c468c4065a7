"""Group admission: many registrations for one event in one transaction.

The shape of a single registration, once for the whole group: the users' share locks, one
`SELECT … FOR UPDATE` of the event, one conditional UPDATE of its seats (and queue), one
multi-row INSERT, one COMMIT. Each member still gets the answer it would have got alone,
decided in arrival order under the lock: a seat, a place in the queue, or its own refusal.
One member's refusal never fails the others; a failure of the transaction fails them all,
and then none of them took a seat.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgspec

from eventreg import sql, testhooks
from eventreg.caller import OPEN
from eventreg.db import Conn, event_lock, registrations, rows
from eventreg.db.idempotency import Answer
from eventreg.errors import (
    AlreadyRegistered,
    ApiError,
    EventFull,
    EventNotFound,
    KeyInFlight,
    KeyReused,
    RegistrationClosed,
    RegistrationNotOpen,
    UserNotFound,
)
from eventreg.structs import Registration

Q = sql.load("admission")

Outcome = Registration | Answer | ApiError  # a new registration, a replay, or a refusal


@dataclass(frozen=True, slots=True)
class Key:
    """A member's Idempotency-Key: whose it is, the key, and the request's fingerprint."""

    scope: str
    key: str
    fingerprint: bytes


@dataclass(frozen=True, slots=True)
class Member:
    user_id: int
    waitlist: bool = False
    key: Key | None = None


async def admit(
    conn: Conn,
    event_id: int,
    members: Sequence[Member],
    *,
    answer: Callable[[Registration], Answer],
    key_ttl: float,
    lock_wait: float | None = None,
) -> list[Outcome]:
    """One outcome per member, in order. `answer` turns a new registration into the stored
    answer of its Idempotency-Key, exactly as the response will be sent."""
    if len(members) == 1 and members[0].key is None:  # alone: the single path's statements
        return [await _alone(conn, event_id, members[0], lock_wait)]
    out: list[Outcome | None] = [None] * len(members)
    async with conn.transaction():
        await _hold_keys(conn, members, out)
        # Holding a key means whoever held it before has committed or rolled back, so its
        # stored answer (if any) is visible now: read before the event lock, not under it.
        await _replays(conn, members, out)
        users = _users(members, out)
        live = {r["id"] for r in await conn.fetch(Q["share_lock_users"], users)}
        with event_lock("group"):
            event = await conn.fetchrow(
                Q["lock_event_for_group"], event_id, users, timeout=lock_wait
            )
        if (hooks := testhooks.ARMED.get()) is not None:  # only with EVENTREG_TEST_HOOKS=1
            await testhooks.after_lock(hooks)
        if event is None:
            return [o or EventNotFound(f"event {event_id} does not exist", field="event_id")
                    for o in out]  # fmt: skip
        admitted = _decide(event_id, event, members, out, live, set(event["live_users"]))
        if admitted:
            await _insert(conn, event_id, event, admitted, members, out)
            await _store_keys(conn, members, out, answer, key_ttl)
    return [o for o in out if o is not None]


async def _alone(conn: Conn, event_id: int, m: Member, lock_wait: float | None) -> Outcome:
    """A group of one is a single registration: the same four statements (with their
    early answers for a repeat or a sold-out event before the lock), no group overhead."""
    try:
        return await registrations.register(
            conn, OPEN, event_id, m.user_id, waitlist=m.waitlist, lock_wait=lock_wait
        )  # the caller was checked by the route, before the group
    except ApiError as refusal:
        return refusal


def _users(members: Sequence[Member], out: list[Outcome | None]) -> list[int]:
    return [m.user_id for m, o in zip(members, out, strict=True) if o is None]


async def _hold_keys(conn: Conn, members: Sequence[Member], out: list[Outcome | None]) -> None:
    keyed = [(i, m.key) for i, m in enumerate(members) if m.key is not None]
    if not keyed:
        return
    held = await conn.fetch(
        Q["try_lock_keys"], [k.scope for _, k in keyed], [k.key for _, k in keyed]
    )
    for (i, _), row in zip(keyed, held, strict=True):
        if not row["held"]:
            out[i] = KeyInFlight("a request with this Idempotency-Key is still running")


async def _replays(conn: Conn, members: Sequence[Member], out: list[Outcome | None]) -> None:
    keyed = [(i, m.key) for i, m in enumerate(members) if m.key is not None and out[i] is None]
    if not keyed:
        return
    found = await conn.fetch(Q["find_keys"], [k.scope for _, k in keyed], [k.key for _, k in keyed])
    stored = {(r["scope"], r["key"]): r for r in found}
    for i, key in keyed:
        if (row := stored.get((key.scope, key.key))) is None:
            continue
        if row["fingerprint"] != key.fingerprint:
            out[i] = KeyReused("this Idempotency-Key was used for a different request")
        else:
            out[i] = Answer(row["status"], row["body"].encode(), row["location"])


def _decide(
    event_id: int,
    event: rows.Row,
    members: Sequence[Member],
    out: list[Outcome | None],
    live: set[int],
    taken: set[int],
) -> list[int]:
    """Refusals into `out`, in arrival order; returns the admitted members' indexes."""
    seats, admitted, seen = event["available_seats"], [], set(taken)
    for i, m in enumerate(members):
        if out[i] is not None:
            continue
        refusal = _refusal(event_id, event, m, live, seen)
        if refusal is None and seats == 0 and not m.waitlist:
            refusal = EventFull(f"event {event_id} has no seats left")
        if refusal is not None:
            out[i] = refusal
            continue
        seen.add(m.user_id)
        seats -= 1 if seats else 0
        admitted.append(i)
    return admitted


def _refusal(
    event_id: int, event: rows.Row, m: Member, live: set[int], seen: set[int]
) -> ApiError | None:
    if m.user_id not in live:
        return UserNotFound(f"user {m.user_id} does not exist", field="user_id")
    if m.user_id in seen:  # already in the database, or earlier in this group
        return AlreadyRegistered(f"user {m.user_id} is already registered for event {event_id}")
    if event["not_open_yet"]:
        return RegistrationNotOpen(f"registration for event {event_id} has not opened yet")
    if event["closed"]:
        return RegistrationClosed(f"registration for event {event_id} has closed")
    return None


async def _insert(
    conn: Conn,
    event_id: int,
    event: rows.Row,
    admitted: list[int],
    members: Sequence[Member],
    out: list[Outcome | None],
) -> None:
    """The conditional UPDATE, then one INSERT; the first admitted take the free seats,
    the rest join the end of the queue."""
    seats = event["available_seats"]
    statuses = ["active" if n < seats else "waitlisted" for n in range(len(admitted))]
    active = statuses.count("active")
    if await conn.fetchval(Q["admit_group"], event_id, active, len(admitted) - active) is None:
        raise AssertionError("seats counted under the lock were not there")  # unreachable
    users = [members[i].user_id for i in admitted]
    made = {r["user_id"]: r for r in await conn.fetch(Q["insert_group"], event_id, users, statuses)}
    position = event["waitlisted"]  # the queue's length before this group
    for i in admitted:
        registration = rows.registration(made[members[i].user_id])
        if registration.status == "waitlisted":
            position += 1
            registration = msgspec.structs.replace(registration, waitlist_position=position)
        out[i] = registration


async def _store_keys(
    conn: Conn,
    members: Sequence[Member],
    out: list[Outcome | None],
    answer: Callable[[Registration], Answer],
    ttl: float,
) -> None:
    stored = [(m.key, answer(o)) for m, o in zip(members, out, strict=True)
              if m.key is not None and isinstance(o, Registration)]  # fmt: skip
    if not stored:
        return
    await conn.execute(
        Q["store_keys"],
        [k.scope for k, _ in stored], [k.key for k, _ in stored],
        [k.fingerprint for k, _ in stored], [a.status for _, a in stored],
        [a.location for _, a in stored], [a.body.decode() for _, a in stored], ttl,
    )  # fmt: skip
