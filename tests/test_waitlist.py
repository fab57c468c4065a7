"""The waitlist and registration windows (issue 10), through the API, checked in the rows."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

import asyncpg
import httpx
import pytest

from tests.factories import cancel, make_event, make_user
from tests.reliability.queue import queue_violations

Db: TypeAlias = "asyncpg.Connection[asyncpg.Record]"
API = "/api/v1"


async def join(client: httpx.AsyncClient, user: int, event: int, queue: bool = True) -> Any:
    body = {"user_id": user, "event_id": event, "waitlist": queue}
    return await client.post(f"{API}/registrations", json=body)


async def users(client: httpx.AsyncClient, n: int) -> list[int]:
    return [(await make_user(client))["id"] for _ in range(n)]


async def full_event(
    client: httpx.AsyncClient, seats: int, queued: int
) -> tuple[int, list[int], list[int]]:
    """An event with every seat taken and `queued` users waiting, in that order."""
    event = (await make_event(client, capacity=seats))["id"]
    seated, waiting = await users(client, seats), await users(client, queued)
    for u in seated:
        assert (await join(client, u, event)).status_code == 201
    for position, u in enumerate(waiting, 1):
        queued_response = await join(client, u, event)
        assert queued_response.status_code == 202, queued_response.text
        assert queued_response.json()["waitlist_position"] == position
    return event, seated, waiting


async def statuses(db: Db, event: int) -> dict[int, str]:
    found = await db.fetch(
        "SELECT user_id, status FROM registrations WHERE event_id = $1 AND status <> 'cancelled'",
        event,
    )
    return {r["user_id"]: r["status"] for r in found}


async def counters(db: Db, event: int) -> tuple[int, int]:
    row = await db.fetchrow("SELECT available_seats, waitlisted FROM events WHERE id = $1", event)
    assert row is not None
    return row["available_seats"], row["waitlisted"]


async def test_a_full_event_queues_only_those_who_ask(client: httpx.AsyncClient, db: Db) -> None:
    event, _, _ = await full_event(client, seats=1, queued=0)
    ann, bob = await users(client, 2)
    refused = await join(client, ann, event, queue=False)
    assert (refused.status_code, refused.json()["code"]) == (409, "event_full")
    queued = await join(client, ann, event)
    assert queued.status_code == 202
    body = queued.json()
    assert (body["status"], body["waitlist_position"]) == ("waitlisted", 1)
    assert queued.headers["location"] == f"{API}/registrations/{body['id']}"
    again = await join(client, ann, event)
    assert (again.status_code, again.json()["code"]) == (409, "already_registered")
    assert (await join(client, bob, event)).json()["waitlist_position"] == 2
    shown = (await client.get(f"{API}/registrations/{body['id']}")).json()
    assert (shown["status"], shown["waitlist_position"]) == ("waitlisted", 1)
    assert (await client.get(f"{API}/events/{event}")).json()["waitlisted"] == 2
    assert await counters(db, event) == (0, 2)


async def test_a_free_seat_with_room_needs_no_queue(client: httpx.AsyncClient) -> None:
    event = (await make_event(client, capacity=2))["id"]
    (ann,) = await users(client, 1)
    seated = await join(client, ann, event)
    assert (seated.status_code, seated.json()["status"]) == (201, "active")


async def test_cancelling_a_seat_promotes_the_head_in_the_same_transaction(
    client: httpx.AsyncClient, db: Db
) -> None:
    event, seated, waiting = await full_event(client, seats=2, queued=3)
    assert (await cancel(client, seated[0], event)).status_code == 200
    now = await statuses(db, event)
    assert now[waiting[0]] == "active"
    assert [now[w] for w in waiting[1:]] == ["waitlisted", "waitlisted"]
    assert await counters(db, event) == (0, 2)
    promoted = await db.fetchrow(
        "SELECT id, promoted_from, promoted_at FROM registrations WHERE user_id = $1",
        waiting[0],
    )
    assert promoted is not None
    assert promoted["promoted_from"] == 1
    shown = (await client.get(f"{API}/registrations/{promoted['id']}")).json()
    assert (shown["status"], shown["promoted_from"]) == ("active", 1)
    assert "promoted_at" in shown
    second = await db.fetchval(
        "SELECT id FROM registrations WHERE user_id = $1 AND status = 'waitlisted'", waiting[1]
    )
    assert (await client.get(f"{API}/registrations/{second}")).json()["waitlist_position"] == 1


async def test_leaving_the_queue_moves_no_seat(client: httpx.AsyncClient, db: Db) -> None:
    event, _, waiting = await full_event(client, seats=1, queued=3)
    assert (await cancel(client, waiting[1], event)).status_code == 200
    assert await counters(db, event) == (0, 2)
    assert waiting[1] not in await statuses(db, event)
    third = await db.fetchval(
        "SELECT id FROM registrations WHERE user_id = $1 AND status = 'waitlisted'", waiting[2]
    )
    assert (await client.get(f"{API}/registrations/{third}")).json()["waitlist_position"] == 2


async def test_a_capacity_raise_promotes_as_many_as_the_new_seats(
    client: httpx.AsyncClient, db: Db
) -> None:
    event, _, waiting = await full_event(client, seats=2, queued=5)
    raised = await client.patch(f"{API}/events/{event}", json={"capacity": 5})
    assert raised.json()["waitlisted"] == 2
    now = await statuses(db, event)
    assert [now[w] for w in waiting] == ["active"] * 3 + ["waitlisted"] * 2
    positions = await db.fetch(
        "SELECT promoted_from FROM registrations WHERE promoted_from IS NOT NULL ORDER BY id"
    )
    assert [r["promoted_from"] for r in positions] == [1, 2, 3]
    await client.patch(f"{API}/events/{event}", json={"capacity": 20})
    assert await counters(db, event) == (13, 0)


async def test_deleting_a_seated_user_promotes_and_deleting_a_queued_one_does_not(
    client: httpx.AsyncClient, db: Db
) -> None:
    event, seated, waiting = await full_event(client, seats=1, queued=3)
    assert (await client.delete(f"{API}/users/{waiting[1]}")).status_code == 200
    assert await counters(db, event) == (0, 2)
    assert (await client.delete(f"{API}/users/{seated[0]}")).status_code == 200
    assert (await statuses(db, event))[waiting[0]] == "active"
    assert await counters(db, event) == (0, 1)


async def test_deleting_the_event_empties_its_queue(client: httpx.AsyncClient, db: Db) -> None:
    event, _, _ = await full_event(client, seats=1, queued=2)
    assert (await client.delete(f"{API}/events/{event}")).status_code == 200
    assert await statuses(db, event) == {}
    assert await counters(db, event) == (1, 0)


async def test_lists_filter_by_status(client: httpx.AsyncClient) -> None:
    event, seated, waiting = await full_event(client, seats=1, queued=2)
    by_event = f"{API}/registrations/event/{event}"
    active = (await client.get(by_event)).json()
    queued = (await client.get(f"{by_event}?status=waitlisted")).json()
    assert [r["user_id"] for r in active] == seated
    assert [r["user_id"] for r in queued] == waiting
    mine = (await client.get(f"{API}/registrations/user/{waiting[0]}?status=waitlisted")).json()
    assert [r["event_id"] for r in mine] == [event]
    bad = await client.get(f"{by_event}?status=cancelled")
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_query")


async def test_the_database_refuses_a_free_seat_while_anyone_waits(
    client: httpx.AsyncClient, db: Db
) -> None:
    event, _, _ = await full_event(client, seats=1, queued=1)
    with pytest.raises(asyncpg.CheckViolationError, match="events_no_free_seat_while_queued"):
        await db.execute("UPDATE events SET available_seats = 1 WHERE id = $1", event)


async def test_ten_cancel_at_once_and_the_first_ten_queued_get_the_seats(
    client: httpx.AsyncClient, db: Db
) -> None:
    """200 queue on a 10-seat event; the 10 seated cancel at the same instant."""
    event, seated, waiting = await full_event(client, seats=10, queued=200)
    answers = await asyncio.gather(*(cancel(client, u, event) for u in seated))
    assert [a.status_code for a in answers] == [200] * 10
    promoted = await db.fetch(
        "SELECT user_id FROM registrations WHERE event_id = $1 AND promoted_at IS NOT NULL"
        " ORDER BY promoted_at, id",
        event,
    )
    assert [r["user_id"] for r in promoted] == waiting[:10]  # in arrival order
    assert await counters(db, event) == (0, 190)
    still = await db.fetchval(
        "SELECT min(id) FROM registrations WHERE event_id = $1 AND status = 'waitlisted'", event
    )
    first_still = await db.fetchval("SELECT id FROM registrations WHERE user_id = $1", waiting[10])
    assert still == first_still


# -- registration windows ---------------------------------------------------------------------
def at(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


async def test_registering_outside_the_window_is_refused(client: httpx.AsyncClient) -> None:
    organizer = (await make_user(client, role="organizer"))["id"]
    body = {"title": "W", "capacity": 5, "organizer_id": organizer}
    soon = await client.post(f"{API}/events", json={**body, "registration_opens_at": at(3600)})
    past = await client.post(f"{API}/events", json={**body, "registration_closes_at": at(-1)})
    assert soon.json()["registration_opens_at"]
    (ann,) = await users(client, 1)
    early = await join(client, ann, soon.json()["id"], queue=False)
    late = await join(client, ann, past.json()["id"])
    assert (early.status_code, early.json()["code"]) == (409, "registration_not_open")
    assert (late.status_code, late.json()["code"]) == (409, "registration_closed")
    reopened = await client.patch(
        f"{API}/events/{soon.json()['id']}", json={"registration_opens_at": None}
    )
    assert "registration_opens_at" not in reopened.json()
    assert (await join(client, ann, soon.json()["id"])).status_code == 201


async def test_cancelling_closes_at_its_own_time(client: httpx.AsyncClient, db: Db) -> None:
    event = (await make_event(client, capacity=3))["id"]
    (ann,) = await users(client, 1)
    assert (await join(client, ann, event)).status_code == 201
    await client.patch(f"{API}/events/{event}", json={"cancellation_closes_at": at(-1)})
    refused = await cancel(client, ann, event)
    assert (refused.status_code, refused.json()["code"]) == (409, "cancellation_closed")
    assert await counters(db, event) == (2, 0)


@pytest.mark.parametrize(
    "window",
    [
        {
            "registration_opens_at": "2030-01-02T00:00:00Z",
            "registration_closes_at": "2030-01-01T00:00:00Z",
        },
        {"registration_opens_at": "2030-01-01T00:00:00"},  # no offset: which zone?
        {"registration_closes_at": "next week"},
    ],
)
async def test_bad_windows_are_422(client: httpx.AsyncClient, window: dict[str, str]) -> None:
    organizer = (await make_user(client, role="organizer"))["id"]
    body = {"title": "W", "capacity": 5, "organizer_id": organizer, **window}
    response = await client.post(f"{API}/events", json=body)
    assert response.status_code == 422, response.text


async def test_a_patch_cannot_put_the_window_out_of_order(client: httpx.AsyncClient) -> None:
    organizer = (await make_user(client, role="organizer"))["id"]
    made = await client.post(
        f"{API}/events",
        json={"title": "W", "capacity": 5, "organizer_id": organizer,
              "registration_closes_at": "2030-01-01T00:00:00Z"},
    )  # fmt: skip
    response = await client.patch(
        f"{API}/events/{made.json()['id']}", json={"registration_opens_at": "2031-01-01T00:00:00Z"}
    )
    assert (response.status_code, response.json()["field"]) == (422, "registration_closes_at")


async def test_a_window_opening_under_a_rush_accepts_nothing_early(
    client: httpx.AsyncClient, db: Db
) -> None:
    """300 clients hammer an event that opens in 1 s: none is in before, 40 are after. Each
    retries `registration_not_open` and 503 (the in-process pool is small) until it is
    answered for good."""
    organizer = (await make_user(client, role="organizer"))["id"]
    opens = datetime.now(UTC) + timedelta(seconds=1)
    made = await client.post(
        f"{API}/events",
        json={"title": "Rush", "capacity": 40, "organizer_id": organizer,
              "registration_opens_at": opens.isoformat()},
    )  # fmt: skip
    event = made.json()["id"]
    people = await db.fetch(
        "INSERT INTO users (name, email) SELECT 'r' || g, 'r' || g || '@rush.example'"
        " FROM generate_series(1, 300) g RETURNING id"
    )

    async def hammer(user: int) -> int:
        for _ in range(400):
            response = await join(client, user, event, queue=False)
            retry = response.status_code == 503 or (  # busy pool on a small box: retry
                response.status_code == 409 and response.json()["code"] == "registration_not_open"
            )
            if not retry:
                status: int = response.status_code
                return status
            await asyncio.sleep(0.01)
        return 0

    outcomes = await asyncio.gather(*(hammer(r["id"]) for r in people))
    assert sorted(set(outcomes)) == [201, 409]
    assert outcomes.count(201) == 40
    earliest = await db.fetchval(
        "SELECT min(created_at) FROM registrations WHERE event_id = $1", event
    )
    assert earliest >= opens
    assert await counters(db, event) == (0, 0)


async def test_the_queue_checker_sees_a_broken_queue(client: httpx.AsyncClient, db: Db) -> None:
    """The I9/I10 checker of the reliability series catches what it is there for."""
    event, _, waiting = await full_event(client, seats=1, queued=3)
    assert await queue_violations(db, [event]) == []
    await db.execute(  # the last in the queue promoted over the first two, uncounted
        "UPDATE registrations SET status = 'active', promoted_at = now(), promoted_from = 3"
        " WHERE user_id = $1",
        waiting[2],
    )
    found = await queue_violations(db, [event])
    assert {v.split(":")[0] for v in found} == {"I9", "I10"}
