"""Small helpers that create things through the API and return their JSON."""

from __future__ import annotations

import itertools
from typing import Any

import httpx

_seq = itertools.count(1)
JSON = dict[str, Any]


async def make_user(client: httpx.AsyncClient, role: str = "attendee", **fields: Any) -> JSON:
    n = next(_seq)
    body = {"name": f"User {n}", "email": f"user{n}@example.com", "role": role, **fields}
    response = await client.post("/api/v1/users", json=body)
    assert response.status_code == 201, response.text
    result: JSON = response.json()
    return result


async def make_event(
    client: httpx.AsyncClient, capacity: int = 10, organizer_id: int | None = None
) -> JSON:
    if organizer_id is None:
        organizer_id = (await make_user(client, role="organizer"))["id"]
    body = {"title": f"Event {next(_seq)}", "capacity": capacity, "organizer_id": organizer_id}
    response = await client.post("/api/v1/events", json=body)
    assert response.status_code == 201, response.text
    result: JSON = response.json()
    return result


async def register(client: httpx.AsyncClient, user_id: int, event_id: int) -> httpx.Response:
    return await client.post(
        "/api/v1/registrations", json={"user_id": user_id, "event_id": event_id}
    )


async def cancel(client: httpx.AsyncClient, user_id: int, event_id: int) -> httpx.Response:
    return await client.request(
        "DELETE", "/api/v1/registrations", json={"user_id": user_id, "event_id": event_id}
    )
