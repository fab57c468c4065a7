"""The schema: migrations apply and roll back, and the constraints stop overbooking on
their own, even for SQL that bypasses the application."""

from __future__ import annotations

from typing import TypeAlias

import asyncpg
import pytest

from eventreg import migrate

Db: TypeAlias = "asyncpg.Connection[asyncpg.Record]"


def test_rollback_then_reapply(database_url: str) -> None:
    rolled = migrate.rollback_all(database_url)
    assert rolled == [
        "0010.faster_key_check",
        "0009.tickets",
        "0008.waitlist",
        "0007.idempotency",
        "0006.tokens",
        "0005.visible_text",
        "0004.event_occupancy",
        "0003.registrations",
        "0002.events",
        "0001.users",
    ]
    assert migrate.apply(database_url) == list(reversed(rolled))
    assert migrate.apply(database_url) == []


async def _event(db: Db, capacity: int = 2) -> int:
    organizer = await db.fetchval(
        "INSERT INTO users (name, email, role) VALUES ('O', 'o@x.io', 'organizer') RETURNING id"
    )
    event_id: int = await db.fetchval(
        "INSERT INTO events (title, capacity, available_seats, organizer_id)"
        " VALUES ('E', $1, $1, $2) RETURNING id",
        capacity,
        organizer,
    )
    return event_id


async def test_seats_cannot_go_negative_or_above_capacity(db: Db) -> None:
    event_id = await _event(db)
    with pytest.raises(asyncpg.CheckViolationError, match="events_seats_within_capacity"):
        await db.execute("UPDATE events SET available_seats = -1 WHERE id = $1", event_id)
    with pytest.raises(asyncpg.CheckViolationError, match="events_seats_within_capacity"):
        await db.execute("UPDATE events SET available_seats = 3 WHERE id = $1", event_id)
    with pytest.raises(asyncpg.CheckViolationError, match="events_capacity_positive"):
        await db.execute("UPDATE events SET capacity = 0, available_seats = 0 WHERE id = $1",
                         event_id)  # fmt: skip


async def test_one_active_registration_per_user_and_event(db: Db) -> None:
    event_id = await _event(db)
    user_id = await db.fetchval(
        "INSERT INTO users (name, email) VALUES ('A', 'a@x.io') RETURNING id"
    )
    insert = (
        "INSERT INTO registrations (event_id, user_id, status, cancelled_at)"
        " VALUES ($1, $2, $3, $4)"
    )
    await db.execute(insert, event_id, user_id, "active", None)
    with pytest.raises(asyncpg.UniqueViolationError, match="registrations_one_live_per_user"):
        await db.execute(insert, event_id, user_id, "active", None)
    await db.execute("UPDATE registrations SET status = 'cancelled', cancelled_at = now()")
    await db.execute(insert, event_id, user_id, "active", None)  # re-register after cancel
    with pytest.raises(asyncpg.CheckViolationError, match="cancelled_at_iff_cancelled"):
        await db.execute(insert, event_id, user_id, "cancelled", None)


async def test_live_emails_unique_ignoring_case(db: Db) -> None:
    await db.execute("INSERT INTO users (name, email) VALUES ('A', 'Same@x.io')")
    with pytest.raises(asyncpg.UniqueViolationError, match="users_live_email_key"):
        await db.execute("INSERT INTO users (name, email) VALUES ('B', 'same@X.io')")
    await db.execute("UPDATE users SET deleted_at = now()")
    await db.execute("INSERT INTO users (name, email) VALUES ('B', 'same@X.io')")
    with pytest.raises(asyncpg.CheckViolationError, match="users_role_known"):
        await db.execute(
            "INSERT INTO users (name, email, role) VALUES ('C', 'c@x.io', 'superuser')"
        )


async def test_event_occupancy_reports_disagreement(db: Db) -> None:
    event_id = await _event(db, capacity=2)
    row = await db.fetchrow("SELECT * FROM event_occupancy WHERE event_id = $1", event_id)
    assert row is not None
    assert (row["capacity"], row["available_seats"], row["active_registrations"]) == (2, 2, 0)
    assert row["consistent"] is True
    await db.execute("UPDATE events SET available_seats = 1 WHERE id = $1", event_id)
    assert (
        await db.fetchval("SELECT consistent FROM event_occupancy WHERE event_id = $1", event_id)
        is False
    )


@pytest.mark.parametrize(
    ("key", "stored"),
    [("k", True), ("~ x" * 85, True), ("k" * 256, False), ("", False), ("caf\u00e9", False),
     ("tab\there", False), ("line\n", False)],
)  # fmt: skip
async def test_idempotency_keys_are_1_to_255_printable_ascii(
    db: Db, key: str, stored: bool
) -> None:
    """idempotency_keys_key_printable (0010 states it without a bounded repetition): the
    database holds the rule on its own."""
    insert = db.execute(
        "INSERT INTO idempotency_keys (scope, key, fingerprint, status, body, expires_at)"
        " VALUES ('addr:x', $1, sha256('x'), 201, '{}', now() + interval '1 hour')",
        key,
    )
    if stored:
        await insert
        assert await db.fetchval("SELECT key FROM idempotency_keys WHERE key = $1", key) == key
    else:
        with pytest.raises(asyncpg.CheckViolationError, match="idempotency_keys_key_printable"):
            await insert
