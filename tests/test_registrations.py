"""Registration and cancellation: statuses, bodies, and the rows behind them."""

from __future__ import annotations

import asyncio
from typing import TypeAlias

import asyncpg
import httpx

from tests.factories import cancel, make_event, make_user, register

Db: TypeAlias = "asyncpg.Connection[asyncpg.Record]"


async def seats(db: Db, event_id: int) -> tuple[int, int]:
    """(available_seats, active registrations) straight from PostgreSQL."""
    row = await db.fetchrow(
        "SELECT available_seats, active_registrations FROM event_occupancy WHERE event_id = $1",
        event_id,
    )
    assert row is not None
    return row["available_seats"], row["active_registrations"]


async def test_register_takes_a_seat(client: httpx.AsyncClient, db: Db) -> None:
    user, event = await make_user(client), await make_event(client, capacity=3)
    response = await register(client, user["id"], event["id"])
    assert response.status_code == 201
    body = response.json()
    assert (body["user_id"], body["event_id"]) == (user["id"], event["id"])
    assert set(body) == {"id", "user_id", "event_id", "status", "created_at", "updated_at"}
    assert response.headers["location"] == f"/api/v1/registrations/{body['id']}"
    assert await seats(db, event["id"]) == (2, 1)


async def test_full_event_is_409_event_full(client: httpx.AsyncClient, db: Db) -> None:
    event = await make_event(client, capacity=1)
    first, second = await make_user(client), await make_user(client)
    assert (await register(client, first["id"], event["id"])).status_code == 201
    response = await register(client, second["id"], event["id"])
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "event_full"
    assert await seats(db, event["id"]) == (0, 1)


async def test_duplicate_is_409_already_registered(client: httpx.AsyncClient, db: Db) -> None:
    user, event = await make_user(client), await make_event(client, capacity=5)
    await register(client, user["id"], event["id"])
    response = await register(client, user["id"], event["id"])
    assert response.status_code == 409
    assert response.json()["code"] == "already_registered"
    assert await seats(db, event["id"]) == (4, 1)


async def test_duplicate_on_full_event_says_already_registered(client: httpx.AsyncClient) -> None:
    user, event = await make_user(client), await make_event(client, capacity=1)
    await register(client, user["id"], event["id"])
    response = await register(client, user["id"], event["id"])
    assert response.json()["code"] == "already_registered"


async def test_unknown_user_or_event_is_404(client: httpx.AsyncClient, db: Db) -> None:
    user, event = await make_user(client), await make_event(client)
    missing_user = await register(client, 999_999, event["id"])
    assert (missing_user.status_code, missing_user.json()["code"]) == (404, "user_not_found")
    missing_event = await register(client, user["id"], 999_999)
    assert (missing_event.status_code, missing_event.json()["code"]) == (404, "event_not_found")
    assert await db.fetchval("SELECT count(*) FROM registrations") == 0


async def test_cancel_releases_the_seat_once(client: httpx.AsyncClient, db: Db) -> None:
    user, event = await make_user(client), await make_event(client, capacity=2)
    await register(client, user["id"], event["id"])
    response = await cancel(client, user["id"], event["id"])
    assert response.status_code == 200
    assert response.json() == {"message": "registration cancelled successfully"}
    again = await cancel(client, user["id"], event["id"])
    assert (again.status_code, again.json()["code"]) == (404, "not_registered")
    assert await seats(db, event["id"]) == (2, 0)


async def test_cancel_when_never_registered_changes_nothing(
    client: httpx.AsyncClient, db: Db
) -> None:
    user, event = await make_user(client), await make_event(client, capacity=2)
    response = await cancel(client, user["id"], event["id"])
    assert (response.status_code, response.json()["code"]) == (404, "not_registered")
    assert await seats(db, event["id"]) == (2, 0)


async def test_reregister_after_cancel(client: httpx.AsyncClient, db: Db) -> None:
    user, event = await make_user(client), await make_event(client, capacity=1)
    await register(client, user["id"], event["id"])
    await cancel(client, user["id"], event["id"])
    response = await register(client, user["id"], event["id"])
    assert response.status_code == 201
    assert await seats(db, event["id"]) == (0, 1)
    statuses = await db.fetch("SELECT status FROM registrations ORDER BY id")
    assert [r["status"] for r in statuses] == ["cancelled", "active"]


async def test_get_registration_embeds_user_and_event(client: httpx.AsyncClient) -> None:
    user, event = await make_user(client), await make_event(client)
    created = (await register(client, user["id"], event["id"])).json()
    response = await client.get(f"/api/v1/registrations/{created['id']}")
    assert response.status_code == 200
    body = response.json()
    assert body["user"]["email"] == user["email"]
    assert body["event"]["title"] == event["title"]
    assert "organizer" not in body["event"]
    await cancel(client, user["id"], event["id"])
    gone = await client.get(f"/api/v1/registrations/{created['id']}")
    assert (gone.status_code, gone.json()["code"]) == (404, "registration_not_found")


async def test_lists_by_user_and_by_event(client: httpx.AsyncClient) -> None:
    event = await make_event(client, capacity=5)
    users = [await make_user(client) for _ in range(3)]
    for u in users:
        await register(client, u["id"], event["id"])
    by_event = (await client.get(f"/api/v1/registrations/event/{event['id']}")).json()
    assert [r["user"]["id"] for r in by_event] == [u["id"] for u in users]
    by_user = (await client.get(f"/api/v1/registrations/user/{users[0]['id']}")).json()
    assert [r["event"]["id"] for r in by_user] == [event["id"]]
    assert (await client.get("/api/v1/registrations/user/999999")).status_code == 404
    assert (await client.get("/api/v1/registrations/event/999999")).status_code == 404


# -- real concurrency: many clients at once against one pool and one database --------------
async def test_fifty_users_race_for_ten_seats(client: httpx.AsyncClient, db: Db) -> None:
    event = await make_event(client, capacity=10)
    users = [await make_user(client) for _ in range(50)]
    responses = await asyncio.gather(*(register(client, u["id"], event["id"]) for u in users))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] * 10 + [409] * 40
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"event_full"}
    assert await seats(db, event["id"]) == (0, 10)


async def test_one_user_racing_itself_gets_one_seat(client: httpx.AsyncClient, db: Db) -> None:
    user, event = await make_user(client), await make_event(client, capacity=50)
    responses = await asyncio.gather(
        *(register(client, user["id"], event["id"]) for _ in range(30))
    )
    assert sorted(r.status_code for r in responses) == [201] + [409] * 29
    assert await seats(db, event["id"]) == (49, 1)


async def test_concurrent_cancels_release_one_seat(client: httpx.AsyncClient, db: Db) -> None:
    user, event = await make_user(client), await make_event(client, capacity=100)
    await register(client, user["id"], event["id"])
    responses = await asyncio.gather(*(cancel(client, user["id"], event["id"]) for _ in range(20)))
    assert sorted(r.status_code for r in responses) == [200] + [404] * 19
    assert await seats(db, event["id"]) == (100, 0)
