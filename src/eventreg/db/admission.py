"""Group admission: many registrations for one event in one transaction.

The shape of a single registration, once for the whole group: the users' share locks, one
`SELECT … FOR UPDATE` of the event, one conditional UPDATE of its seats (and queue), one
multi-row INSERT, one COMMIT. The members' Idempotency-Keys ride on these: the answers of
those expected to get a seat are stored by the lock statement before it waits (the lock
holder's time sets a hot event's rate), the others' by the INSERT. Each member
still gets the answer it would have got alone, decided in arrival order under the lock: a
seat, a place in the queue, or its own refusal. One member's refusal never fails the
others; a failure of the transaction fails them all, and then none of them took a seat.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
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
from eventreg.structs import Registration, RegistrationStatus

Q = sql.load("admission")
RACED = frozenset({"registrations_one_live_per_user", "idempotency_keys_pkey"})


@dataclass(frozen=True, slots=True)
class Made:
    """A new registration and its answer, encoded once: sent as the response, and stored
    with the member's Idempotency-Key when it has one."""

    registration: Registration
    answer: Answer


Outcome = Made | Answer | ApiError  # a new registration, a replay, or a refusal


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
        return [await _alone(conn, event_id, members[0], answer, lock_wait)]
    try:
        return await _group(conn, event_id, members, answer, key_ttl, lock_wait)
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name not in RACED:
            raise
    # A member registered, or a key answered, by another transaction after lock_members
    # looked (see there). Nothing was written; that transaction has committed, so the
    # group's second run sees it: it refuses that member, or replays that answer.
    return await _group(conn, event_id, members, answer, key_ttl, lock_wait)


async def _group(
    conn: Conn,
    event_id: int,
    members: Sequence[Member],
    answer: Callable[[Registration], Answer],
    key_ttl: float,
    lock_wait: float | None,
) -> list[Outcome]:
    out: list[Outcome | None] = [None] * len(members)
    async with conn.transaction():
        everyone = [m.user_id for m in members]
        keys = [m.key for m in members if m.key is not None]
        locked = await conn.fetchrow(
            Q["lock_members"], everyone, [k.scope for k in keys], [k.key for k in keys],
            event_id,
        )  # fmt: skip
        assert locked is not None  # one row, always
        expired = _keys_answered(members, out, locked["held"], locked["stored"])
        live, registered = set(locked["live"]), set(locked["registered"])
        early = _seats_expected(event_id, members, out, locked, live, registered, expired, answer)
        with event_lock("group"):
            event = await _lock_event(conn, event_id, locked["made_at"], members, early,
                                      key_ttl, lock_wait)  # fmt: skip
        if (hooks := testhooks.ARMED.get()) is not None:  # only with EVENTREG_TEST_HOOKS=1
            await testhooks.after_lock(hooks)
        if event is None:  # a retry of a registration made before still gets its answer
            await _unstore(conn, members, list(early))
            return [o or EventNotFound(f"event {event_id} does not exist", field="event_id")
                    for o in out]  # fmt: skip
        made_at = locked["made_at"]
        if event["opened_since"]:  # made before the opening: made now, when admitted
            await _unstore(conn, members, list(early))
            early, made_at = {}, event["locked_at"]
        admitted = _decide(event_id, event, members, out, live, registered)
        if expired:
            await conn.execute(
                Q["delete_expired_keys"], [k.scope for k in expired], [k.key for k in expired]
            )
        await _insert(conn, event_id, event, locked["ids"], made_at, admitted, members, out,
                      early, answer, key_ttl)  # fmt: skip
    return [o for o in out if o is not None]


def _seats_expected(
    event_id: int,
    members: Sequence[Member],
    out: list[Outcome | None],
    locked: rows.Row,
    live: set[int],
    registered: set[int],
    expired: list[Key],
    answer: Callable[[Registration], Answer],
) -> dict[int, Made]:
    """The new registrations of the keyed members that will get a seat if the event's free
    seats, read before the lock, are still there under it (as they are but at a sell-out):
    their answers are stored while the lock is awaited. An expired key is left to the
    INSERT under the lock, after its old row is deleted."""
    seats, made_at, seen = locked["seats"] or 0, locked["made_at"], set(registered)
    early: dict[int, Made] = {}
    for i, m in enumerate(members):
        if seats == 0:
            break
        if out[i] is not None or m.user_id not in live or m.user_id in seen:
            continue  # answered already, or refused under the lock
        seen.add(m.user_id)
        seats -= 1
        if m.key is not None and m.key not in expired:
            registration = Registration(
                id=locked["ids"][i], user_id=m.user_id, event_id=event_id, status="active",
                created_at=made_at, updated_at=made_at,
            )  # fmt: skip
            early[i] = Made(registration, answer(registration))
    return early


async def _lock_event(
    conn: Conn,
    event_id: int,
    made_at: datetime,
    members: Sequence[Member],
    early: dict[int, Made],
    key_ttl: float,
    lock_wait: float | None,
) -> rows.Row | None:
    if not early:
        return await conn.fetchrow(Q["lock_event_for_group"], event_id, made_at, timeout=lock_wait)
    return await conn.fetchrow(
        Q["lock_event_storing_answers"], event_id, made_at, *_answer_arrays(members, early),
        key_ttl, timeout=lock_wait,
    )  # fmt: skip


async def _alone(
    conn: Conn,
    event_id: int,
    m: Member,
    answer: Callable[[Registration], Answer],
    lock_wait: float | None,
) -> Outcome:
    """A group of one is a single registration: the same four statements (with their
    early answers for a repeat or a sold-out event before the lock), no group overhead."""
    try:
        registration = await registrations.register(
            conn, OPEN, event_id, m.user_id, waitlist=m.waitlist, lock_wait=lock_wait
        )  # the caller was checked by the route, before the group
    except ApiError as refusal:
        return refusal
    return Made(registration, answer(registration))


def _keys_answered(
    members: Sequence[Member],
    out: list[Outcome | None],
    held: Sequence[bool],
    stored: Sequence[tuple[int, bytes, int, str | None, str, bool]],
) -> list[Key]:
    """Into `out`, for the members with a key: 409 if another request holds it (that
    request is still running), else its stored answer again, or 422 if the key was used
    for another request. `n` counts the keyed members from 1. Returns the held keys whose
    answer expired, to delete before they are stored anew."""
    keyed = [i for i, m in enumerate(members) if m.key is not None]
    for i, got in zip(keyed, held, strict=True):
        if not got:
            out[i] = KeyInFlight("a request with this Idempotency-Key is still running")
    expired = []
    for n, fingerprint, status, location, body, gone in stored:
        i = keyed[n - 1]
        key = members[i].key
        assert key is not None
        if out[i] is not None:
            continue
        if gone:
            expired.append(key)
        elif fingerprint != key.fingerprint:
            out[i] = KeyReused("this Idempotency-Key was used for a different request")
        else:
            out[i] = Answer(status, body.encode(), location)
    return expired


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
    seat_ids: Sequence[int],
    made_at: datetime,
    admitted: list[int],
    members: Sequence[Member],
    out: list[Outcome | None],
    early: dict[int, Made],
    answer: Callable[[Registration], Answer],
    key_ttl: float,
) -> None:
    """The conditional UPDATE, then one INSERT of the registrations and their keys' answers
    (those not stored before the lock); the first admitted take the free seats, the rest
    join the end of the queue. Answers stored before the lock that proved wrong go first."""
    seats = event["available_seats"]
    statuses: list[RegistrationStatus] = [
        "active" if n < seats else "waitlisted" for n in range(len(admitted))
    ]
    active = statuses.count("active")
    queue_ids = []
    if admitted:
        queue_ids = await conn.fetchval(Q["admit_group"], event_id, active, len(admitted) - active)
        if queue_ids is None:
            raise AssertionError("seats counted under the lock were not there")  # unreachable
    ids = [seat_ids[i] for i in admitted[:active]] + queue_ids
    position = event["waitlisted"]  # the queue's length before this group
    for i, id_, status in zip(admitted, ids, statuses, strict=True):
        if status == "active" and i in early:  # as expected: its answer is stored already
            out[i] = early[i]
            continue
        registration = Registration(
            id=id_, user_id=members[i].user_id, event_id=event_id, status=status,
            created_at=made_at, updated_at=made_at,
        )  # fmt: skip
        if status == "waitlisted":
            position += 1
            registration = msgspec.structs.replace(registration, waitlist_position=position)
        out[i] = Made(registration, answer(registration))
    await _unstore(conn, members, [i for i, made in early.items() if out[i] is not made])
    if not admitted:
        return
    keyed = {i: o for i, o in enumerate(out)  # new answers to keys, not stored yet
             if members[i].key and isinstance(o, Made) and o is not early.get(i)}  # fmt: skip
    await conn.execute(
        Q["insert_group"], event_id, ids, [members[i].user_id for i in admitted], statuses,
        made_at, *_answer_arrays(members, keyed), key_ttl,
    )  # fmt: skip


def _answer_arrays(members: Sequence[Member], made: dict[int, Made]) -> tuple[list[Any], ...]:
    """Scopes, keys, fingerprints, statuses, Locations and bodies of these members' answers,
    as the statements that store them take them."""
    keys = [members[i].key for i in made]
    answers = [m.answer for m in made.values()]
    return (
        [k.scope for k in keys if k], [k.key for k in keys if k],
        [k.fingerprint for k in keys if k], [a.status for a in answers],
        [a.location for a in answers], [a.body.decode() for a in answers],
    )  # fmt: skip


async def _unstore(conn: Conn, members: Sequence[Member], wrong: list[int]) -> None:
    """Delete the answers stored before the lock that the lock proved wrong (rare: a
    sell-out, a window that closed meanwhile, a vanished event)."""
    keys = [k for i in wrong if (k := members[i].key) is not None]
    if keys:
        await conn.execute(Q["unstore_answers"], [k.scope for k in keys], [k.key for k in keys])
