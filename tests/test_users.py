"""Users: every route's success and error paths, checked against the rows."""

from __future__ import annotations

from datetime import datetime
from typing import TypeAlias

import asyncpg
import httpx

from tests.factories import make_event, make_user, register

Db: TypeAlias = "asyncpg.Connection[asyncpg.Record]"


async def test_create_defaults_role_and_trims(client: httpx.AsyncClient, db: Db) -> None:
    response = await client.post("/api/v1/users", json={"name": "  Ada  ", "email": "ada@x.io"})
    assert response.status_code == 201
    body = response.json()
    assert (body["name"], body["role"]) == ("Ada", "attendee")
    assert set(body) == {"id", "name", "email", "role", "created_at", "updated_at"}
    assert response.headers["location"] == f"/api/v1/users/{body['id']}"
    assert (await client.get(response.headers["location"])).json() == body
    assert body["created_at"].endswith("Z")
    row = await db.fetchrow("SELECT name, role FROM users WHERE id = $1", body["id"])
    assert row is not None
    assert (row["name"], row["role"]) == ("Ada", "attendee")


async def test_duplicate_email_is_409_case_insensitive(client: httpx.AsyncClient, db: Db) -> None:
    await make_user(client, email="dup@example.com")
    response = await client.post(
        "/api/v1/users", json={"name": "Other", "email": "DUP@example.com"}
    )
    assert response.status_code == 409
    assert (response.json()["code"], response.json()["field"]) == ("email_taken", "email")
    assert await db.fetchval("SELECT count(*) FROM users") == 1


async def test_invalid_fields_are_422_naming_the_field(client: httpx.AsyncClient) -> None:
    cases = {
        "role": {"name": "a", "email": "a@b.co", "role": "superhero"},
        "email": {"name": "a", "email": "not-an-email"},
        "id": {"name": "a", "email": "a@b.co", "id": 7},
        "created_at": {"name": "a", "email": "a@b.co", "created_at": "2020-01-01T00:00:00Z"},
    }
    for field, body in cases.items():
        response = await client.post("/api/v1/users", json=body)
        assert response.status_code == 422, field
        assert response.json()["code"] == "validation_failed"
        assert field in response.json()["detail"]
    blank = await client.post("/api/v1/users", json={"name": "   ", "email": "a@b.co"})
    assert blank.status_code == 422
    assert "blank" in blank.json()["detail"]


async def test_get_and_list(client: httpx.AsyncClient) -> None:
    first, second = await make_user(client), await make_user(client)
    assert (await client.get(f"/api/v1/users/{first['id']}")).json() == first
    listed = (await client.get("/api/v1/users")).json()
    assert [u["id"] for u in listed] == [first["id"], second["id"]]
    missing = await client.get("/api/v1/users/424242")
    assert (missing.status_code, missing.json()["code"]) == (404, "user_not_found")


async def test_list_is_keyset_paginated_with_link(client: httpx.AsyncClient) -> None:
    made = [await make_user(client) for _ in range(5)]
    response = await client.get("/api/v1/users", params={"limit": 2})
    assert [u["id"] for u in response.json()] == [made[0]["id"], made[1]["id"]]
    link = response.headers["link"]
    assert link.endswith('>; rel="next"')
    assert f"after={made[1]['id']}" in link
    seen = [u["id"] for u in response.json()]
    while "link" in response.headers:
        next_url = response.headers["link"].split(">")[0].lstrip("<")
        response = await client.get(next_url)
        seen += [u["id"] for u in response.json()]
    assert seen == [u["id"] for u in made]
    bad = await client.get("/api/v1/users", params={"limit": 0})
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_query")


async def test_put_changes_only_given_fields(client: httpx.AsyncClient, db: Db) -> None:
    user = await make_user(client, name="Before")
    response = await client.put(f"/api/v1/users/{user['id']}", json={"name": "After"})
    assert response.status_code == 200
    body = response.json()
    assert (body["name"], body["email"], body["role"]) == ("After", user["email"], user["role"])
    assert body["created_at"] == user["created_at"]
    assert datetime.fromisoformat(body["updated_at"]) > datetime.fromisoformat(user["updated_at"])
    patched = await client.patch(f"/api/v1/users/{user['id']}", json={"role": "organizer"})
    assert patched.json()["role"] == "organizer"
    assert await db.fetchval("SELECT name FROM users WHERE id = $1", user["id"]) == "After"
    missing = await client.put("/api/v1/users/999999", json={"name": "Ghost"})
    assert missing.status_code == 404
    assert await db.fetchval("SELECT count(*) FROM users") == 1


async def test_put_to_taken_email_is_409(client: httpx.AsyncClient) -> None:
    first, second = await make_user(client), await make_user(client)
    response = await client.put(f"/api/v1/users/{second['id']}", json={"email": first["email"]})
    assert (response.status_code, response.json()["code"]) == (409, "email_taken")


async def test_organizer_with_events_cannot_be_demoted_or_deleted(
    client: httpx.AsyncClient,
) -> None:
    organizer = await make_user(client, role="organizer")
    await make_event(client, organizer_id=organizer["id"])
    demote = await client.put(f"/api/v1/users/{organizer['id']}", json={"role": "attendee"})
    assert (demote.status_code, demote.json()["code"]) == (409, "organizer_has_events")
    delete = await client.delete(f"/api/v1/users/{organizer['id']}")
    assert (delete.status_code, delete.json()["code"]) == (409, "organizer_has_events")


async def test_delete_cancels_registrations_and_frees_email(
    client: httpx.AsyncClient, db: Db
) -> None:
    user, event = await make_user(client, email="gone@example.com"), await make_event(client)
    await register(client, user["id"], event["id"])
    response = await client.delete(f"/api/v1/users/{user['id']}")
    assert response.status_code == 200
    assert response.json() == {"message": "user deleted successfully"}
    occupancy = await db.fetchrow(
        "SELECT available_seats, active_registrations, consistent FROM event_occupancy"
        " WHERE event_id = $1",
        event["id"],
    )
    assert occupancy is not None
    assert tuple(occupancy) == (event["capacity"], 0, True)
    assert (await client.get(f"/api/v1/users/{user['id']}")).status_code == 404
    assert (await client.delete(f"/api/v1/users/{user['id']}")).status_code == 404
    again = await client.post("/api/v1/users", json={"name": "New", "email": "gone@example.com"})
    assert again.status_code == 201
