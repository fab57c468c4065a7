"""Shared pieces of the ticket and check-in tests (issue 9): a small world made through the
API with tokens on, and the key the test apps sign with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

import asyncpg
import httpx

from eventreg.admin import create_admin
from eventreg.ticketcodes import Keyring, private_from_seed
from tests.conftest import TICKET_SEED

Db: TypeAlias = "asyncpg.Connection[asyncpg.Record]"
API = "/api/v1"
KEYS = Keyring.of(private_from_seed(TICKET_SEED, "test"))  # the test apps' own key


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass(frozen=True, slots=True)
class Door:
    """An event with `attendees` registered, its organizer, and a door token for it."""

    admin: str  # token
    organizer: int
    organizer_token: str
    event: int
    door_token: str
    door_token_id: int
    attendees: list[dict[str, Any]]  # each with "token" and "registration"
    other_event: int  # same organizer, nobody registered

    def code(self, i: int) -> str:
        return KEYS.sign(self.attendees[i]["registration"], self.event)

    async def scan(
        self, c: httpx.AsyncClient, code: str, token: str | None = None
    ) -> httpx.Response:
        return await c.post(
            f"{API}/events/{self.event}/check-ins",
            json={"code": code},
            headers=bearer(token or self.door_token),
        )


async def make_door(c: httpx.AsyncClient, database_url: str, attendees: int = 3) -> Door:
    admin = await create_admin(database_url, "Root", f"root{id(c)}@x.io")
    assert admin.token
    org = await c.post(
        f"{API}/users",
        json={"name": "Olga Organizer", "email": f"olga{id(c)}@x.io", "role": "organizer"},
        headers=bearer(admin.token),
    )
    o = org.json()
    events = []
    for title in ("Gala", "Other"):
        made = await c.post(
            f"{API}/events",
            json={"title": title, "capacity": attendees + 2, "organizer_id": o["id"]},
            headers=bearer(o["token"]),
        )
        assert made.status_code == 201, made.text
        events.append(made.json()["id"])
    people = []
    for i in range(attendees):
        a = (await c.post(f"{API}/users", json={"name": f"Ann {i}", "email": f"a{i}@x.io"})).json()
        reg = await c.post(
            f"{API}/registrations",
            json={"user_id": a["id"], "event_id": events[0]},
            headers=bearer(a["token"]),
        )
        assert reg.status_code == 201, reg.text
        people.append({**a, "registration": reg.json()["id"]})
    door = await c.post(
        f"{API}/events/{events[0]}/door-tokens",
        json={"name": "north door"},
        headers=bearer(o["token"]),
    )
    assert door.status_code == 201, door.text
    d = door.json()
    return Door(admin.token, o["id"], o["token"], events[0], d["token"], d["id"], people, events[1])


async def live_check_ins(db: Db, registration: int | None = None) -> int:
    n: int = await db.fetchval(
        "SELECT count(*) FROM check_ins WHERE undone_at IS NULL"
        " AND ($1::bigint IS NULL OR registration_id = $1)",
        registration,
    )
    return n
