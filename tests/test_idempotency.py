"""Idempotency-Key (issue 11): one effect per key, whatever the retries, committed with it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import asyncpg
import httpx
import pytest

from eventreg.admin import create_admin
from eventreg.app import sweep_keys
from eventreg.config import Settings
from eventreg.db import idempotency
from tests.bad_input import snapshot

Db: TypeAlias = "asyncpg.Connection[asyncpg.Record]"
API = "/api/v1"


def bearer(token: str, key: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return headers


@dataclass(frozen=True, slots=True)
class World:
    admin: str  # token
    organizer: int
    organizer_token: str
    attendee: int
    attendee_token: str
    event: int  # organized by `organizer`, 5 seats, `attendee` registered
    other_event: int  # 5 seats, nobody registered


async def make_world(c: httpx.AsyncClient, database_url: str) -> World:
    admin = await create_admin(database_url, "Root", "root@x.io")
    assert admin.token
    org = await c.post(
        f"{API}/users",
        json={"name": "O", "email": "o@x.io", "role": "organizer"},
        headers=bearer(admin.token),
    )
    ann = await c.post(f"{API}/users", json={"name": "A", "email": "a@x.io"})
    o, a = org.json(), ann.json()
    events = []
    for title in ("E", "F"):
        made = await c.post(
            f"{API}/events",
            json={"title": title, "capacity": 5, "organizer_id": o["id"]},
            headers=bearer(o["token"]),
        )
        events.append(made.json()["id"])
    registered = await c.post(
        f"{API}/registrations",
        json={"user_id": a["id"], "event_id": events[0]},
        headers=bearer(a["token"]),
    )
    assert registered.status_code == 201
    return World(admin.token, o["id"], o["token"], a["id"], a["token"], *events)


Case = Callable[[World], tuple[str, str, Any, str]]  # -> method, path, body, token
WRITES: dict[str, Case] = {
    "sign up": lambda w: ("POST", "/users", {"name": "N", "email": "n@x.io"}, ""),
    "create user": lambda w: (
        "POST", "/users", {"name": "P", "email": "p@x.io", "role": "organizer"}, w.admin,
    ),
    "put user": lambda w: ("PUT", f"/users/{w.attendee}", {"name": "A2"}, w.attendee_token),
    "patch user": lambda w: ("PATCH", f"/users/{w.attendee}", {"name": "A3"}, w.admin),
    # By an admin: a user deleting themselves has no token left to retry with (401).
    "delete user": lambda w: ("DELETE", f"/users/{w.attendee}", None, w.admin),
    "create event": lambda w: (
        "POST", "/events", {"title": "G", "capacity": 3, "organizer_id": w.organizer},
        w.organizer_token,
    ),
    "put event": lambda w: ("PUT", f"/events/{w.event}", {"capacity": 9}, w.organizer_token),
    "patch event": lambda w: ("PATCH", f"/events/{w.event}", {"title": "E2"}, w.admin),
    "delete event": lambda w: ("DELETE", f"/events/{w.event}", None, w.organizer_token),
    "register": lambda w: (
        "POST", "/registrations", {"user_id": w.attendee, "event_id": w.other_event},
        w.attendee_token,
    ),
    "cancel": lambda w: (
        "DELETE", "/registrations", {"user_id": w.attendee, "event_id": w.event},
        w.attendee_token,
    ),
    "make token": lambda w: ("POST", "/tokens", {"name": "x"}, w.attendee_token),
}  # fmt: skip


def same_answer(responses: list[httpx.Response]) -> None:
    """Identical status, Location and body; secrets aside (a replay shows a new one)."""
    first = responses[0]
    # A token's own answer is replaced whole on a replay (new secret, so new id and prefix).
    differ = {"token", "id", "prefix", "created_at"} if "prefix" in first.json() else {"token"}
    for r in responses:
        assert r.status_code == first.status_code, r.text
        if "prefix" not in first.json():
            assert r.headers.get("location") == first.headers.get("location")
        body, expected = r.json(), first.json()
        for name in differ:
            body.pop(name, None)
            expected.pop(name, None)
        assert body == expected


@pytest.mark.parametrize("name", list(WRITES))
async def test_fifty_concurrent_retries_have_one_effect(
    tokens_client: httpx.AsyncClient, database_url: str, db: Db, name: str
) -> None:
    world = await make_world(tokens_client, database_url)
    method, path, body, token = WRITES[name](world)
    headers = bearer(token, "retry-1") if token else {"Idempotency-Key": "retry-1"}

    async def send() -> httpx.Response:
        return await tokens_client.request(method, f"{API}{path}", json=body, headers=headers)

    before = await snapshot(db)
    concurrent = await asyncio.gather(*(send() for _ in range(50)))
    assert concurrent[0].is_success, concurrent[0].text
    after_first = await snapshot(db)
    assert after_first != before
    ran = [r for r in concurrent if r.is_success and "idempotent-replayed" not in r.headers]
    assert len(ran) == 1  # exactly one execution
    # The others replayed, or (when the first held the key past the lock timeout on a busy
    # machine) were told to retry, as a client would, and then replay.
    waited = [r for r in concurrent if r.status_code == 409]
    assert all(r.json()["code"] == "idempotency_key_in_flight" for r in waited)
    concurrent = [r for r in concurrent if r.status_code != 409]
    later = [await send() for _ in range(3 + len(waited))]
    assert all(r.headers["idempotent-replayed"] == "true" for r in later)
    same_answer([*concurrent, *later])
    if "token" not in concurrent[0].text:  # a replay that shows a new secret writes it
        assert await snapshot(db) == after_first
    assert await db.fetchval("SELECT count(*) FROM idempotency_keys") == 1


async def test_a_replayed_sign_up_shows_a_new_secret_and_revokes_the_lost_one(
    tokens_client: httpx.AsyncClient, db: Db
) -> None:
    headers = {"Idempotency-Key": "signup"}
    body = {"name": "N", "email": "n@x.io"}
    first = await tokens_client.post(f"{API}/users", json=body, headers=headers)
    again = await tokens_client.post(f"{API}/users", json=body, headers=headers)
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["token"] != first.json()["token"]
    old, new = first.json()["token"], again.json()["token"]
    assert (await tokens_client.get(f"{API}/users/me", headers=bearer(old))).status_code == 401
    assert (await tokens_client.get(f"{API}/users/me", headers=bearer(new))).is_success
    stored = await db.fetchval("SELECT body FROM idempotency_keys")
    assert old not in stored
    assert new not in stored
    assert "token" not in stored
    assert await db.fetchval("SELECT count(*) FROM users") == 1


async def test_same_key_other_request_is_422_and_changes_nothing(
    client: httpx.AsyncClient, db: Db
) -> None:
    headers = {"Idempotency-Key": "k"}
    made = await client.post(f"{API}/users", json={"name": "A", "email": "a@x.io"}, headers=headers)
    assert made.status_code == 201
    before = await snapshot(db)
    other = await client.post(
        f"{API}/users", json={"name": "B", "email": "b@x.io"}, headers=headers
    )
    assert (other.status_code, other.json()["code"]) == (422, "idempotency_key_reused")
    elsewhere = await client.patch(f"{API}/users/{made.json()['id']}", json={}, headers=headers)
    assert elsewhere.status_code == 422
    assert await snapshot(db) == before


async def test_keys_belong_to_their_caller(tokens_client: httpx.AsyncClient, db: Db) -> None:
    ann = (await tokens_client.post(f"{API}/users", json={"name": "A", "email": "a@x.io"})).json()
    bob = (await tokens_client.post(f"{API}/users", json={"name": "B", "email": "b@x.io"})).json()
    for who in (ann, bob):
        response = await tokens_client.post(
            f"{API}/tokens", json={"name": "same"}, headers=bearer(who["token"], "shared")
        )
        assert response.status_code == 201
        assert "idempotent-replayed" not in response.headers
    assert await db.fetchval("SELECT count(DISTINCT scope) FROM idempotency_keys") == 2


async def organized_event(client: httpx.AsyncClient, capacity: int) -> dict[str, Any]:
    """An organizer and an event of theirs with `capacity` seats (open mode)."""
    org = (await client.post(
        f"{API}/users", json={"name": "O", "email": "o@x.io", "role": "organizer"}
    )).json()  # fmt: skip
    event: dict[str, Any] = (await client.post(
        f"{API}/events", json={"title": "E", "capacity": capacity, "organizer_id": org["id"]}
    )).json()  # fmt: skip
    return event


async def test_failures_are_not_stored_so_a_retry_runs_again(
    client: httpx.AsyncClient, db: Db
) -> None:
    event = await organized_event(client, capacity=1)
    users = [(await client.post(f"{API}/users", json={"name": f"u{i}", "email": f"u{i}@x.io"}))
             .json()["id"] for i in range(2)]  # fmt: skip
    assert (await client.post(
        f"{API}/registrations", json={"user_id": users[0], "event_id": event["id"]}
    )).status_code == 201  # fmt: skip
    body = {"user_id": users[1], "event_id": event["id"]}
    full = await client.post(f"{API}/registrations", json=body, headers={"Idempotency-Key": "r"})
    assert full.status_code == 409
    assert await db.fetchval("SELECT count(*) FROM idempotency_keys") == 0
    await client.patch(f"{API}/events/{event['id']}", json={"capacity": 2})
    retry = await client.post(f"{API}/registrations", json=body, headers={"Idempotency-Key": "r"})
    assert retry.status_code == 201
    assert "idempotent-replayed" not in retry.headers


async def test_without_the_header_nothing_is_written(client: httpx.AsyncClient, db: Db) -> None:
    await client.post(f"{API}/users", json={"name": "A", "email": "a@x.io"})
    assert await db.fetchval("SELECT count(*) FROM idempotency_keys") == 0


@pytest.mark.parametrize("key", [b"", b"x" * 256, "caf\u00e9".encode(), b"tab\there", b"\x7f"])
async def test_bad_keys_are_400(client: httpx.AsyncClient, db: Db, key: bytes) -> None:
    before = await snapshot(db)
    response = await client.post(
        f"{API}/users",
        json={"name": "A", "email": "a@x.io"},
        headers=[(b"Idempotency-Key", key)],
    )
    assert (response.status_code, response.json()["code"]) == (400, "invalid_idempotency_key")
    assert await snapshot(db) == before


async def test_a_key_in_flight_past_the_lock_timeout_is_409(
    client: httpx.AsyncClient, database_url: str
) -> None:
    holder = await asyncpg.connect(database_url)
    try:
        async with holder.transaction():  # what a first request still running holds
            await holder.execute(idempotency.Q["lock_key"], "addr:127.0.0.1", "slow")
            response = await client.post(
                f"{API}/users",
                json={"name": "A", "email": "a@x.io"},
                headers={"Idempotency-Key": "slow"},
            )
    finally:
        await holder.close()
    assert (response.status_code, response.json()["code"]) == (409, "idempotency_key_in_flight")
    assert response.headers["retry-after"] == "1"


async def _insert_keys(db: Db, count: int, expired: bool) -> None:
    await db.execute(
        "INSERT INTO idempotency_keys (scope, key, fingerprint, status, body, created_at,"
        " expires_at) SELECT 'test', $3 || g, sha256(g::text::bytea), 201, '{}',"
        " now() - interval '2 days', now() + CASE WHEN $2 THEN interval '-1 day'"
        " ELSE interval '1 day' END FROM generate_series(1, $1) g",
        count,
        expired,
        "expired-" if expired else "live-",
    )


async def test_the_sweep_deletes_expired_keys_one_worker_at_a_time(
    database_url: str, db: Db
) -> None:
    await _insert_keys(db, 2500, expired=True)
    await _insert_keys(db, 10, expired=False)
    settings = Settings(database_url=database_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    state: Any = {"pool": pool, "settings": settings}
    try:
        async with db.transaction():  # another worker is sweeping
            assert await db.fetchval(idempotency.Q["try_sweep_lock"])
            assert await sweep_keys(state) == 0
        assert await db.fetchval("SELECT count(*) FROM idempotency_keys") == 2510
        async with pool.acquire() as conn:
            assert await idempotency.sweep(conn, 1000) == 1000  # one bounded batch
        assert await sweep_keys(state) == 1500
    finally:
        await pool.close()
    left = await db.fetch("SELECT key FROM idempotency_keys")
    assert sorted(r["key"] for r in left) == sorted(f"live-{i}" for i in range(1, 11))


async def test_an_expired_key_runs_afresh(client: httpx.AsyncClient, db: Db) -> None:
    headers = {"Idempotency-Key": "old"}
    first = await client.post(
        f"{API}/users", json={"name": "A", "email": "a@x.io"}, headers=headers
    )
    await db.execute("UPDATE idempotency_keys SET expires_at = created_at + interval '1 us'")
    await client.delete(f"{API}/users/{first.json()['id']}")
    again = await client.post(
        f"{API}/users", json={"name": "A", "email": "a@x.io"}, headers=headers
    )
    assert again.status_code == 201
    assert again.json()["id"] != first.json()["id"]
    assert "idempotent-replayed" not in again.headers


async def test_an_expired_registration_key_runs_afresh_in_a_group(
    client: httpx.AsyncClient, db: Db
) -> None:
    """A keyed registration goes through group admission, which stores its key with the
    registrations' INSERT: an expired row with the same key, not swept yet, is replaced by
    the new answer instead of refusing it."""
    event = await organized_event(client, capacity=3)
    user = (await client.post(f"{API}/users", json={"name": "A", "email": "a@x.io"})).json()
    body = {"user_id": user["id"], "event_id": event["id"]}
    headers = {"Idempotency-Key": "seat"}
    first = await client.post(f"{API}/registrations", json=body, headers=headers)
    assert first.status_code == 201
    assert (await client.request("DELETE", f"{API}/registrations", json=body)).status_code == 200
    await db.execute("UPDATE idempotency_keys SET expires_at = created_at + interval '1 us'")
    again = await client.post(f"{API}/registrations", json=body, headers=headers)
    assert again.status_code == 201
    assert "idempotent-replayed" not in again.headers
    assert again.json()["id"] != first.json()["id"]
    stored = await db.fetchrow("SELECT body, expires_at > now() AS live FROM idempotency_keys")
    assert stored is not None
    assert (stored["live"], stored["body"]) == (True, again.text)
    replay = await client.post(f"{API}/registrations", json=body, headers=headers)
    assert (replay.status_code, replay.text) == (201, again.text)
    assert replay.headers["idempotent-replayed"] == "true"


async def test_a_registration_whose_key_is_held_waits_for_it(
    client: httpx.AsyncClient, database_url: str, db: Db
) -> None:
    """Group admission never waits on another request's key, but the request does: it
    leaves the group, waits for the key as any keyed write does, and runs once the holder
    is done (the holder stored nothing, as a failed first request would)."""
    event = await organized_event(client, capacity=3)
    user = (await client.post(f"{API}/users", json={"name": "A", "email": "a@x.io"})).json()
    body = {"user_id": user["id"], "event_id": event["id"]}
    holder = await asyncpg.connect(database_url)
    try:
        tx = holder.transaction()
        await tx.start()  # what a first request still running holds
        await holder.execute(idempotency.Q["lock_key"], "addr:127.0.0.1", "held")
        retry = asyncio.create_task(
            client.post(f"{API}/registrations", json=body, headers={"Idempotency-Key": "held"})
        )
        await asyncio.sleep(0.3)
        assert not retry.done()  # waiting, not told 409 at once
        await tx.rollback()
        response = await retry
    finally:
        await holder.close()
    assert response.status_code == 201, response.text
    assert "idempotent-replayed" not in response.headers
    assert await db.fetchval("SELECT count(*) FROM idempotency_keys WHERE key = 'held'") == 1
