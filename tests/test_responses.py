"""Responses that do not trust the client, and messages a person can read (issue 7)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import TypeAlias

import asyncpg
import httpx
import msgspec
import pytest
from asgi_lifespan import LifespanManager

from eventreg.app import create_app
from eventreg.config import Settings
from eventreg.structs import INVISIBLE, NewUser
from tests.factories import make_event, make_user, register

API = "/api/v1"
Db: TypeAlias = "asyncpg.Connection[asyncpg.Record]"


async def test_next_link_is_relative_whatever_the_host_header(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        await make_user(client)
    response = await client.get(
        f"{API}/users?limit=2", headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example"}
    )
    link = response.headers["link"]
    assert link.startswith(f"<{API}/users?"), link
    assert "evil" not in link
    assert "//" not in link
    following = await client.get(link[1 : link.index(">")])
    assert following.status_code == 200
    assert len(following.json()) == 1


BLANK_LOOKING = [
    "\u200b",  # zero-width space
    "\u200b\u200c\u200d\u2060",  # zero-width joiners and word joiner
    "\u3164\u3164",  # Hangul filler: a "letter" that renders as nothing
    "\u2800",  # braille blank
    "\u202e\u202d",  # bidi overrides
    "\ufe0f",  # a variation selector alone
    "\U000e0041\U000e0042",  # tag characters
    "\u00ad",  # soft hyphen
]


@pytest.mark.parametrize("text", BLANK_LOOKING)
async def test_invisible_names_and_titles_are_refused(
    client: httpx.AsyncClient, db: Db, text: str
) -> None:
    user = await client.post(f"{API}/users", json={"name": text, "email": "a@b.co"})
    assert (user.status_code, user.json()["field"]) == (422, "name")
    assert "visible" in user.json()["detail"]
    organizer = await make_user(client, role="organizer")
    body = {"title": f" {text} ", "capacity": 1, "organizer_id": organizer["id"]}
    event = await client.post(f"{API}/events", json=body)
    assert (event.status_code, event.json()["field"]) == (422, "title")
    renamed = await client.patch(f"{API}/users/{organizer['id']}", json={"name": text})
    assert renamed.status_code == 422
    assert await db.fetchval("SELECT count(*) FROM users") == 1
    assert await db.fetchval("SELECT count(*) FROM events") == 0


@pytest.mark.parametrize("text", ["\u200ba", "é", "\u3164x", "東京", "\U0001f600", "a\u200b"])
async def test_one_visible_character_is_enough(client: httpx.AsyncClient, text: str) -> None:
    response = await client.post(f"{API}/users", json={"name": text, "email": "a@b.co"})
    assert response.status_code == 201, response.text


def _edges_of_invisible() -> list[str]:
    """Every character at either edge of a run of invisible ones, and its neighbours."""
    invisible = re.compile(f"[{INVISIBLE}]")
    scan = [*range(1, 0x20000), *range(0xE0000, 0xE0200)]
    flags = [invisible.fullmatch(chr(cp)) is not None for cp in scan]
    edges = {scan[i + d] for i in range(1, len(scan)) if flags[i] != flags[i - 1] for d in (-1, 0)}
    return [chr(cp) for cp in sorted(edges)]


async def test_database_refuses_blank_looking_names_by_itself(db: Db) -> None:
    """The constraint holds for SQL that bypasses the API, and agrees with the Python rule."""
    for char in [*_edges_of_invisible(), *BLANK_LOOKING]:
        text = f"{char}\u200b{char}"
        python_ok = _accepted_by_python(text)
        refused_by = await _constraint_refusing(db, text)
        assert refused_by in {None, "users_name_visible", "users_name_not_blank"}
        assert python_ok == (refused_by is None), repr(text)


def _accepted_by_python(text: str) -> bool:
    try:
        msgspec.convert({"name": text, "email": "a@b.co"}, NewUser)
    except msgspec.ValidationError:
        return False
    return True


class _Rollback(Exception):
    pass


async def _constraint_refusing(db: Db, name: str) -> str | None:
    """The constraint that refuses a user with this name, or None (nothing is kept)."""
    try:
        async with db.transaction():
            await db.execute("INSERT INTO users (name, email) VALUES ($1, 'x@y.io')", name)
            raise _Rollback
    except _Rollback:
        return None
    except asyncpg.CheckViolationError as exc:
        return exc.constraint_name


async def test_patch_that_changes_nothing_keeps_updated_at(client: httpx.AsyncClient) -> None:
    user = await make_user(client)
    same = {"name": user["name"], "email": user["email"], "role": user["role"]}
    for body in ({}, same, {"name": user["name"]}):
        response = await client.patch(f"{API}/users/{user['id']}", json=body)
        assert response.json()["updated_at"] == user["updated_at"], body
    event = await make_event(client)
    for body in ({}, {"capacity": event["capacity"], "title": event["title"]}):
        response = await client.patch(f"{API}/events/{event['id']}", json=body)
        assert response.json()["updated_at"] == event["updated_at"], body
    changed = await client.patch(f"{API}/events/{event['id']}", json={"capacity": 11})
    assert changed.json()["updated_at"] > event["updated_at"]


READABLE = [
    ("users", {"name": "a", "email": "not-an-email"}, "email must look like name@example.org"),
    ("users", {"name": "a", "email": "a@b.co", "role": "boss"}, "role must be one of attendee"),
    ("users", {"name": "a", "email": "a@b.co", "id": 3}, "id is not accepted here"),
    ("users", {"name": "a"}, "email is required"),
    ("users", {"name": 5, "email": "a@b.co"}, "name must be a string, got an integer"),
    ("users", [], "the body must be an object, got an array"),
    ("events", {"title": "t", "capacity": 0, "organizer_id": 1}, "at least 1"),
    ("events", {"title": "t", "capacity": 10**7, "organizer_id": 1}, "at most 1000000"),
    ("events", {"title": "x" * 300, "capacity": 1, "organizer_id": 1}, "at most 255 characters"),
]


@pytest.mark.parametrize(("collection", "body", "says"), READABLE)
async def test_validation_messages_are_words(
    client: httpx.AsyncClient, collection: str, body: object, says: str
) -> None:
    response = await client.post(f"{API}/{collection}", json=body)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert says in detail
    assert "regex" not in detail
    assert "`$" not in detail
    assert len(detail) < 200


async def test_capacity_conflict_says_how_many_are_registered(client: httpx.AsyncClient) -> None:
    event = await make_event(client, capacity=5)
    for _ in range(3):
        assert (await register(client, (await make_user(client))["id"], event["id"])).is_success
    response = await client.patch(f"{API}/events/{event['id']}", json={"capacity": 2})
    assert response.status_code == 409
    assert "3 seats already registered" in response.json()["detail"]
    assert response.json()["code"] == "capacity_below_registrations"


@pytest.fixture
async def cors_client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(database_url=database_url, cors_origins=("https://app.example",))
    async with LifespanManager(create_app(settings)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


async def test_cors_preflight_and_simple_requests(cors_client: httpx.AsyncClient) -> None:
    preflight = await cors_client.options(
        f"{API}/registrations",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    listed = await cors_client.get(f"{API}/events", headers={"Origin": "https://app.example"})
    assert listed.headers["access-control-allow-origin"] == "https://app.example"
    assert "Location" in listed.headers["access-control-expose-headers"]
    other = await cors_client.options(
        f"{API}/events",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert other.status_code == 400
    assert "access-control-allow-origin" not in other.headers


async def test_no_cors_headers_unless_configured(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{API}/events", headers={"Origin": "https://app.example"})
    assert "access-control-allow-origin" not in response.headers


async def test_large_lists_are_gzipped_when_accepted(client: httpx.AsyncClient) -> None:
    for _ in range(30):
        await make_user(client)
    plain = await client.get(f"{API}/users", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.headers["vary"] == "Accept-Encoding"
    zipped = await client.get(f"{API}/users", headers={"Accept-Encoding": "br, gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert int(zipped.headers["content-length"]) < len(plain.content) / 3
    assert zipped.json() == plain.json()  # httpx decodes it
    refused = await client.get(f"{API}/users", headers={"Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in refused.headers
    small = await client.get(f"{API}/users?limit=1", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in small.headers
