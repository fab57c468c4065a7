"""Identities and tokens (issue 8): sign-up, the token's life, roles, limits, and secrecy."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager

from eventreg import auth
from eventreg.admin import create_admin
from eventreg.app import app_state, create_app, create_pool
from eventreg.config import Settings, default_auth
from eventreg.db import tokens

Db: TypeAlias = "asyncpg.Connection[asyncpg.Record]"
API = "/api/v1"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def sign_up(client: httpx.AsyncClient, name: str = "Ann") -> dict[str, Any]:
    response = await client.post(f"{API}/users", json={"name": name, "email": f"{name}@x.io"})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


@asynccontextmanager
async def worker(url: str, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    """One more app instance on the same database: what a second worker process is."""
    settings = Settings(database_url=url, auth_mode="tokens", **overrides)
    async with LifespanManager(create_app(settings)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


async def test_sign_up_shows_the_token_once_and_stores_only_its_hash(
    tokens_client: httpx.AsyncClient, db: Db
) -> None:
    ann = await sign_up(tokens_client)
    token = ann.pop("token")
    assert token.startswith("evr_")
    assert len(token) == 4 + 43  # 256 random bits, URL-safe base64
    me = await tokens_client.get(f"{API}/users/me", headers=bearer(token))
    assert me.json() == ann  # no token in any later answer
    stored = await db.fetch("SELECT * FROM api_tokens WHERE user_id = $1", ann["id"])
    assert len(stored) == 1
    assert token not in repr([dict(r) for r in stored])
    assert stored[0]["prefix"] == token[:12]


async def test_open_mode_answers_as_the_reference_and_ignores_tokens(
    client: httpx.AsyncClient,
) -> None:
    made = await client.post(f"{API}/users", json={"name": "Bo", "email": "bo@x.io"})
    assert "token" not in made.json()
    user = await client.get(f"{API}/users/{made.json()['id']}", headers=bearer("evr_nonsense"))
    assert user.status_code == 200


async def test_missing_and_bad_tokens_are_401_with_a_challenge(
    tokens_client: httpx.AsyncClient,
) -> None:
    cases = {
        None: "missing_token",
        "Bearer evr_" + "A" * 43: "invalid_token",
        "Basic dXNlcjpwYXNz": "invalid_token",
        "Bearer ": "invalid_token",
    }
    for header, code in cases.items():
        headers = {} if header is None else {"Authorization": header}
        response = await tokens_client.get(f"{API}/users/me", headers=headers)
        assert (response.status_code, response.json()["code"]) == (401, code)
        assert response.headers["www-authenticate"].startswith('Bearer realm="eventreg"')
    public = await tokens_client.get(f"{API}/events", headers={"Authorization": "Bearer x"})
    assert public.status_code == 401  # a token that is sent is checked, even where optional


async def test_issue_list_and_revoke_tokens(tokens_client: httpx.AsyncClient, db: Db) -> None:
    first = (await sign_up(tokens_client))["token"]
    made = await tokens_client.post(
        f"{API}/tokens", json={"name": "laptop", "expires_in_days": 30}, headers=bearer(first)
    )
    assert made.status_code == 201
    second = made.json()
    assert made.headers["location"] == f"{API}/tokens/{second['id']}"
    assert second["expires_at"] is not None
    listed = (await tokens_client.get(f"{API}/tokens", headers=bearer(first))).json()
    assert [t["name"] for t in listed] == ["first token", "laptop"]
    assert all("token" not in t for t in listed)
    assert (await tokens_client.get(f"{API}/users/me", headers=bearer(second["token"]))).is_success
    revoked = await tokens_client.delete(f"{API}/tokens/{second['id']}", headers=bearer(first))
    assert revoked.json() == {"message": "token revoked"}
    after = await tokens_client.get(f"{API}/users/me", headers=bearer(second["token"]))
    assert (after.status_code, after.json()["code"]) == (401, "invalid_token")
    assert await db.fetchval(
        "SELECT revoked_at IS NOT NULL FROM api_tokens WHERE id = $1", second["id"]
    )


async def test_someone_elses_token_cannot_be_revoked_or_seen(
    tokens_client: httpx.AsyncClient,
) -> None:
    ann, bob = await sign_up(tokens_client, "ann"), await sign_up(tokens_client, "bob")
    bobs = (await tokens_client.get(f"{API}/tokens", headers=bearer(bob["token"]))).json()
    response = await tokens_client.delete(
        f"{API}/tokens/{bobs[0]['id']}", headers=bearer(ann["token"])
    )
    missing = await tokens_client.delete(f"{API}/tokens/999999", headers=bearer(ann["token"]))
    assert response.status_code == missing.status_code == 404
    assert response.json()["code"] == missing.json()["code"] == "token_not_found"
    assert (await tokens_client.get(f"{API}/users/me", headers=bearer(bob["token"]))).is_success


async def test_an_expired_token_stops_working_even_when_cached(
    tokens_client: httpx.AsyncClient, db: Db
) -> None:
    ann = await sign_up(tokens_client)
    await db.execute(
        "UPDATE api_tokens SET expires_at = now() + interval '1 second' WHERE user_id = $1",
        ann["id"],
    )
    assert (await tokens_client.get(f"{API}/users/me", headers=bearer(ann["token"]))).is_success
    await asyncio.sleep(1.2)  # the lookup above is cached for 5 s; its expiry is not
    late = await tokens_client.get(f"{API}/users/me", headers=bearer(ann["token"]))
    assert late.status_code == 401


async def test_deleting_a_user_kills_their_tokens(tokens_client: httpx.AsyncClient, db: Db) -> None:
    ann = await sign_up(tokens_client)
    headers = bearer(ann["token"])
    assert (await tokens_client.get(f"{API}/users/me", headers=headers)).is_success
    assert (await tokens_client.delete(f"{API}/users/{ann['id']}", headers=headers)).is_success
    assert (await tokens_client.get(f"{API}/users/me", headers=headers)).status_code == 401
    live = "SELECT count(*) FROM api_tokens WHERE user_id = $1 AND revoked_at IS NULL"
    assert await db.fetchval(live, ann["id"]) == 0


async def test_revocation_reaches_other_workers_within_the_cache_time(database_url: str) -> None:
    """The documented bound: another worker trusts its cached lookup for AUTH_CACHE_SECONDS."""
    async with (
        worker(database_url, auth_cache_seconds=0.5) as one,
        worker(database_url, auth_cache_seconds=0.5) as two,
    ):
        ann = await sign_up(one)
        headers = bearer(ann["token"])
        assert (await two.get(f"{API}/users/me", headers=headers)).is_success  # now cached
        mine = (await one.get(f"{API}/tokens", headers=headers)).json()[0]["id"]
        assert (await one.delete(f"{API}/tokens/{mine}", headers=headers)).is_success
        assert (await one.get(f"{API}/users/me", headers=headers)).status_code == 401
        assert (await two.get(f"{API}/users/me", headers=headers)).is_success  # stale, bounded
        await asyncio.sleep(0.6)
        assert (await two.get(f"{API}/users/me", headers=headers)).status_code == 401


async def test_only_an_admin_makes_organizers_or_changes_roles(
    tokens_client: httpx.AsyncClient, database_url: str, db: Db
) -> None:
    organizer = {"name": "Org", "email": "org@x.io", "role": "organizer"}
    anonymous = await tokens_client.post(f"{API}/users", json=organizer)
    assert (anonymous.status_code, anonymous.json()["code"]) == (403, "forbidden")
    ann = await sign_up(tokens_client)
    promoted = await tokens_client.patch(
        f"{API}/users/{ann['id']}", json={"role": "admin"}, headers=bearer(ann["token"])
    )
    assert promoted.status_code == 403
    renamed = await tokens_client.patch(
        f"{API}/users/{ann['id']}", json={"name": "Annie"}, headers=bearer(ann["token"])
    )
    assert renamed.json()["name"] == "Annie"
    admin = await create_admin(database_url, "Root", "root@x.io")
    assert admin.role == "admin"
    assert isinstance(admin.token, str)
    made = await tokens_client.post(f"{API}/users", json=organizer, headers=bearer(admin.token))
    assert made.status_code == 201
    assert made.json()["role"] == "organizer"
    assert "token" in made.json()  # the admin hands the organizer its first token
    assert await db.fetchval("SELECT count(*) FROM users WHERE role = 'organizer'") == 1


async def test_sign_up_is_rate_limited_per_address(database_url: str, db: Db) -> None:
    async with worker(database_url, rate_signup_per_minute=3) as c:
        statuses = [(await c.post(f"{API}/users", json={"name": f"u{i}", "email": f"u{i}@x.io"}))
                    for i in range(5)]  # fmt: skip
    assert [r.status_code for r in statuses] == [201, 201, 201, 429, 429]
    assert statuses[3].json()["code"] == "rate_limited"
    assert int(statuses[3].headers["retry-after"]) >= 1
    assert await db.fetchval("SELECT count(*) FROM users") == 3


async def test_registration_attempts_are_limited_per_user_and_take_no_seat(
    database_url: str, db: Db
) -> None:
    async with worker(database_url, rate_register_per_minute=2) as c:
        admin = await create_admin(database_url, "Root", "root@x.io")
        assert admin.token
        org = await c.post(
            f"{API}/users",
            json={"name": "O", "email": "o@x.io", "role": "organizer"},
            headers=bearer(admin.token),
        )
        event = await c.post(
            f"{API}/events",
            json={"title": "E", "capacity": 5, "organizer_id": org.json()["id"]},
            headers=bearer(org.json()["token"]),
        )
        ann = await sign_up(c)
        body = {"user_id": ann["id"], "event_id": event.json()["id"]}
        statuses = [
            (await c.post(f"{API}/registrations", json=body, headers=bearer(ann["token"])))
            for _ in range(3)
        ]
    assert [r.status_code for r in statuses] == [201, 409, 429]
    assert await db.fetchval("SELECT available_seats FROM events") == 4


async def test_tokens_never_reach_logs_or_error_bodies(
    tokens_client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ann = await sign_up(tokens_client)
    secret = ann["token"]
    bodies = []
    for headers in (bearer(secret), bearer(secret[:-1] + "x"), {"Authorization": secret}):
        for method, path in [("GET", "/users/me"), ("GET", "/users/999"), ("DELETE", "/tokens/9")]:
            response = await tokens_client.request(method, f"{API}{path}", headers=headers)
            bodies.append(response.text)
    assert all(secret[4:] not in body and secret[4:-1] not in body for body in bodies)
    assert secret[4:-1] not in caplog.text


def test_default_mode_is_open_only_on_loopback() -> None:
    assert [default_auth(h) for h in ("127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.5")] == [
        "open"
    ] * 5
    assert [default_auth(h) for h in ("0.0.0.0", "::", "10.0.0.7", "example.org")] == ["tokens"] * 4


async def test_concurrent_lookups_of_one_token_share_one_query_and_use_is_recorded_later(
    database_url: str, db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(database_url=database_url, auth_mode="tokens")
    pool = await create_pool(settings)
    state = app_state(pool, settings)
    asked = 0
    real = tokens.authenticate

    async def counted(conn: Any, digest: bytes) -> Any:
        nonlocal asked
        asked += 1
        return await real(conn, digest)

    monkeypatch.setattr(tokens, "authenticate", counted)
    try:
        admin = await create_admin(database_url, "Root", "root@x.io")
        assert admin.token
        digest = tokens.digest(admin.token)
        callers = await asyncio.gather(*(auth._lookup(state, digest) for _ in range(50)))
        assert asked == 1
        assert {c.user_id for c in callers if c} == {admin.id}
        used = "SELECT last_used_at FROM api_tokens WHERE user_id = $1"
        assert await db.fetchval(used, admin.id) is None  # not on the request's path
        await auth.record_use(state)
        first = await db.fetchval(used, admin.id)
        assert first is not None
        state["tokens"].entries.clear()  # looked up again within the minute: no new write
        await auth._lookup(state, digest)
        await auth.record_use(state)
        assert await db.fetchval(used, admin.id) == first
    finally:
        await pool.close()
