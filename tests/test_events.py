"""Events: creation rules, reads with the organizer embedded, edits that keep seats true."""

from __future__ import annotations

from typing import TypeAlias

import asyncpg
import httpx

from tests.factories import make_event, make_user, register

Db: TypeAlias = "asyncpg.Connection[asyncpg.Record]"


async def test_create_sets_seats_and_embeds_organizer(client: httpx.AsyncClient) -> None:
    organizer = await make_user(client, role="organizer")
    response = await client.post(
        "/api/v1/events",
        json={"title": "Tech Talk", "capacity": 10, "organizer_id": organizer["id"]},
    )
    assert response.status_code == 201
    body = response.json()
    assert (body["capacity"], body["available_seats"]) == (10, 10)
    assert body["organizer"] == organizer
    assert (await client.get(f"/api/v1/events/{body['id']}")).json() == body


async def test_organizer_must_exist_and_be_an_organizer(client: httpx.AsyncClient, db: Db) -> None:
    attendee = await make_user(client)
    missing = await client.post(
        "/api/v1/events", json={"title": "T", "capacity": 1, "organizer_id": 999}
    )
    assert (missing.status_code, missing.json()["code"]) == (422, "organizer_not_found")
    wrong_role = await client.post(
        "/api/v1/events", json={"title": "T", "capacity": 1, "organizer_id": attendee["id"]}
    )
    assert (wrong_role.status_code, wrong_role.json()["code"]) == (422, "not_an_organizer")
    assert await db.fetchval("SELECT count(*) FROM events") == 0


async def test_capacity_and_read_only_fields_are_validated(client: httpx.AsyncClient) -> None:
    organizer = await make_user(client, role="organizer")
    base = {"title": "T", "organizer_id": organizer["id"]}
    for capacity in (0, -1, 1_000_001, True, 7.5, "7"):
        response = await client.post("/api/v1/events", json={**base, "capacity": capacity})
        assert response.status_code == 422, capacity
        assert response.json()["field"] == "capacity"
    top = await client.post("/api/v1/events", json={**base, "capacity": 1_000_000})
    assert top.status_code == 201
    sneaky = await client.post(
        "/api/v1/events", json={**base, "capacity": 5, "available_seats": 500}
    )
    assert (sneaky.status_code, sneaky.json()["field"]) == (422, "available_seats")


async def test_capacity_change_moves_seats_by_the_delta(client: httpx.AsyncClient, db: Db) -> None:
    event = await make_event(client, capacity=10)
    for _ in range(3):
        await register(client, (await make_user(client))["id"], event["id"])
    raised = await client.put(f"/api/v1/events/{event['id']}", json={"capacity": 20})
    assert (raised.json()["capacity"], raised.json()["available_seats"]) == (20, 17)
    lowered = await client.patch(f"/api/v1/events/{event['id']}", json={"capacity": 3})
    assert (lowered.json()["capacity"], lowered.json()["available_seats"]) == (3, 0)
    too_low = await client.put(f"/api/v1/events/{event['id']}", json={"capacity": 2})
    assert (too_low.status_code, too_low.json()["code"]) == (409, "capacity_below_registrations")
    row = await db.fetchrow(
        "SELECT capacity, available_seats, consistent FROM event_occupancy WHERE event_id = $1",
        event["id"],
    )
    assert row is not None
    assert tuple(row) == (3, 0, True)


async def test_put_keeps_unmentioned_fields(client: httpx.AsyncClient) -> None:
    event = await make_event(client, capacity=4)
    response = await client.put(f"/api/v1/events/{event['id']}", json={"title": "Renamed"})
    body = response.json()
    assert body["title"] == "Renamed"
    assert (body["capacity"], body["organizer_id"]) == (4, event["organizer_id"])
    assert body["created_at"] == event["created_at"]
    readonly = await client.put(f"/api/v1/events/{event['id']}", json={"id": 99})
    assert readonly.status_code == 422


async def test_change_organizer_checks_role(client: httpx.AsyncClient) -> None:
    event, attendee = await make_event(client), await make_user(client)
    other = await make_user(client, role="organizer")
    refused = await client.put(
        f"/api/v1/events/{event['id']}", json={"organizer_id": attendee["id"]}
    )
    assert refused.json()["code"] == "not_an_organizer"
    moved = await client.put(f"/api/v1/events/{event['id']}", json={"organizer_id": other["id"]})
    assert moved.json()["organizer"]["id"] == other["id"]


async def test_delete_cancels_registrations(client: httpx.AsyncClient, db: Db) -> None:
    event, user = await make_event(client, capacity=2), await make_user(client)
    await register(client, user["id"], event["id"])
    response = await client.delete(f"/api/v1/events/{event['id']}")
    assert response.json() == {"message": "event deleted successfully"}
    active = await db.fetchval("SELECT count(*) FROM registrations WHERE status = 'active'")
    assert active == 0
    assert (await client.get(f"/api/v1/events/{event['id']}")).status_code == 404
    assert (await client.delete(f"/api/v1/events/{event['id']}")).status_code == 404
    assert (await client.get(f"/api/v1/registrations/user/{user['id']}")).json() == []


async def test_list_and_by_organizer(client: httpx.AsyncClient) -> None:
    organizer = await make_user(client, role="organizer")
    mine = [await make_event(client, organizer_id=organizer["id"]) for _ in range(2)]
    other = await make_event(client)
    listed = (await client.get("/api/v1/events")).json()
    assert [e["id"] for e in listed] == [mine[0]["id"], mine[1]["id"], other["id"]]
    assert all("organizer" in e for e in listed)
    by_org = (await client.get(f"/api/v1/events/organizer/{organizer['id']}")).json()
    assert [e["id"] for e in by_org] == [e["id"] for e in mine]
    assert all("organizer" not in e for e in by_org)
    unknown = await client.get("/api/v1/events/organizer/999999")
    assert unknown.status_code == 404
    no_id = await client.get("/api/v1/events/organizer")
    assert (no_id.status_code, no_id.json()["code"]) == (400, "invalid_id")
