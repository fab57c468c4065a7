"""Bad path ids, query strings and methods (plan B11-B13), and strings that must be stored
exactly as sent: SQL-looking text (B14), emoji, right-to-left and NFC/NFD forms (B8)."""

from __future__ import annotations

import unicodedata

import httpx
import msgspec
import pytest

from eventreg.structs import MAX_ID
from tests.bad_input import API, Db, World, check_problem, make_world, send, snapshot

ID_PATHS = [
    ("GET", f"{API}/users/{{id}}"),
    ("PUT", f"{API}/users/{{id}}"),
    ("PATCH", f"{API}/users/{{id}}"),
    ("DELETE", f"{API}/users/{{id}}"),
    ("GET", f"{API}/events/{{id}}"),
    ("PUT", f"{API}/events/{{id}}"),
    ("PATCH", f"{API}/events/{{id}}"),
    ("DELETE", f"{API}/events/{{id}}"),
    ("GET", f"{API}/events/organizer/{{id}}"),
    ("GET", f"{API}/registrations/{{id}}"),
    ("GET", f"{API}/registrations/user/{{id}}"),
    ("GET", f"{API}/registrations/event/{{id}}"),
    # issue 9
    ("GET", f"{API}/registrations/{{id}}/ticket"),
    ("GET", f"{API}/registrations/{{id}}/ticket.svg"),
    ("GET", f"{API}/registrations/{{id}}/ticket.png"),
    ("GET", f"{API}/registrations/{{id}}/check-in"),
    ("DELETE", f"{API}/registrations/{{id}}/check-in"),
    ("GET", f"{API}/events/{{id}}/check-ins/summary"),
    ("GET", f"{API}/events/{{id}}/check-ins/revoked"),
    ("GET", f"{API}/events/{{id}}/door-tokens"),
]
# B11: as sent on the wire (percent-encoded where needed).
INVALID_IDS = [
    "abc", "-1", "0", "00", "1.5", "1e3", "0x10", "+1", "%201", "1%20", "%00", "1%00",
    "%EF%BC%91",  # fullwidth digit one
    "9223372036854775808", "18446744073709551616", "9" * 5000,
    "1%3BDROP%20TABLE%20users", "%27%20OR%201%3D1%20--", "true", "null", "%E2%80%8B1",
    "%FF", "1%C0%AF",  # not UTF-8 once decoded
]  # fmt: skip
UNKNOWN_IDS = ["2147483648", "4294967296", str(MAX_ID), "000999"]
NOT_FOUND_CODES = {
    "users": "user_not_found",
    "events": "event_not_found",
    "organizer": "user_not_found",
    "registrations": "registration_not_found",
    "user": "user_not_found",
    "event": "event_not_found",
}
BODIES = {
    "users": {"name": "New name"},
    "events": {"title": "New title"},
}


@pytest.fixture
async def world(client: httpx.AsyncClient) -> World:
    return await make_world(client)


@pytest.mark.parametrize(("method", "template"), ID_PATHS, ids=lambda x: str(x))
async def test_path_ids(
    client: httpx.AsyncClient, db: Db, world: World, method: str, template: str
) -> None:
    """Not a bigint from 1 to 2^63-1: 400 invalid_id. A valid id of nothing: 404."""
    before = await snapshot(db)
    words = template.split("/")
    body = msgspec.json.encode(BODIES[words[3]]) if method in ("PUT", "PATCH") else None
    for raw in INVALID_IDS:
        response = await send(client, method, template.replace("{id}", raw), body)
        check_problem(response, 400, "invalid_id", operation=(method, template), case=raw)
    owner = words[words.index("{id}") - 1]  # the collection the id belongs to
    code = NOT_FOUND_CODES[owner]
    for raw in UNKNOWN_IDS:
        response = await send(client, method, template.replace("{id}", raw), body)
        check_problem(response, 404, code, operation=(method, template), case=raw)
    # A "/" inside the id (encoded or not) or an empty id misses the route: a JSON 404.
    for raw in ("1%2F2", "1/2", ""):
        response = await send(client, method, template.replace("{id}", raw), body)
        check_problem(response, 404, "not_found", case=raw)
    assert await snapshot(db) == before


LIST_PATHS = [  # (OpenAPI path, the World member its {id} names)
    (f"{API}/users", ""),
    (f"{API}/events", ""),
    (f"{API}/events/organizer/{{id}}", "organizer"),
    (f"{API}/registrations/user/{{id}}", "attendee"),
    (f"{API}/registrations/event/{{id}}", "event"),
]
BAD_QUERIES = [
    "limit=0", "limit=-1", "limit=1001", "limit=1000000000", "limit=abc", "limit=", "limit=1.5",
    "limit=1e2", "limit=%2B5", "limit=%201", "limit=" + "9" * 5000, "limit=1%3BDROP",
    "after=-1", "after=abc", "after=9223372036854775808", "after=", "after=1.0",
    "limit=10&limit=0", "limit=5&after=x", "limit=%FF", "after=%C0%AF",
]  # fmt: skip


@pytest.mark.parametrize(("template", "owner"), LIST_PATHS)
async def test_list_query_parameters(
    client: httpx.AsyncClient, world: World, template: str, owner: str
) -> None:
    """B12: limit is 1..1000 and after 0..2^63-1; anything else is 400 invalid_query, and
    unknown parameters (sort=…) are ignored rather than interpolated anywhere."""
    url = template.replace("{id}", str(getattr(world, owner))) if owner else template
    for query in BAD_QUERIES:
        response = await client.get(f"{url}?{query}")
        check_problem(response, 400, "invalid_query", operation=("GET", template), case=query)
    for query in ("limit=1000", "limit=1&after=0", f"after={MAX_ID}", "sort=name;DROP", "x=1"):
        response = await client.get(f"{url}?{query}")
        assert response.status_code == 200, (query, response.text)
        assert isinstance(response.json(), list)


METHOD_CASES = [  # (method, path, the Allow header's methods)
    ("PATCH", f"{API}/users", "GET, HEAD, POST"),
    ("PUT", f"{API}/users", "GET, HEAD, POST"),
    ("DELETE", f"{API}/events", "GET, HEAD, POST"),
    ("GET", f"{API}/registrations", "DELETE, POST"),
    ("PUT", f"{API}/registrations", "DELETE, POST"),
    ("POST", f"{API}/users/1", "DELETE, GET, HEAD, PATCH, PUT"),
    ("POST", f"{API}/events/1", "DELETE, GET, HEAD, PATCH, PUT"),
    ("DELETE", f"{API}/registrations/1", "GET, HEAD"),
    ("POST", "/health", "GET, HEAD"),
    ("OPTIONS", f"{API}/users", "GET, HEAD, POST"),
    ("TRACE", f"{API}/events", "GET, HEAD, POST"),
]
UNKNOWN_PATHS = [
    f"{API}/users/", f"{API}/events/1/", "/api/v1", "/api/v2/users", f"{API}/Users", "/%00",
]  # fmt: skip


async def test_unsupported_methods_are_405_with_allow(client: httpx.AsyncClient, db: Db) -> None:
    """B13: a path that exists with a method it lacks is 405 and says which it has."""
    before = await snapshot(db)
    for method, path, allow in METHOD_CASES:
        response = await send(client, method, path, b'{"name": "x"}')
        check_problem(response, 405, "method_not_allowed", case=(method, path))
        assert sorted(response.headers["allow"].split(", ")) == allow.split(", "), path
    assert await snapshot(db) == before


async def test_unknown_paths_are_json_404(client: httpx.AsyncClient) -> None:
    """B13: no redirects for a trailing slash, no case folding: one spelling per URL."""
    for path in UNKNOWN_PATHS:
        for method in ("GET", "POST"):
            response = await send(client, method, path, b"{}")
            check_problem(response, 404, "not_found", case=(method, path))


SQL_LOOKING = [
    "' OR 1=1 --",
    "1; DROP TABLE events",
    "Robert'); DROP TABLE users;--",
    '"; DELETE FROM registrations; --',
    "$1 $$ $$; SELECT pg_sleep(5)",
    "\\x27 UNION SELECT * FROM users",
]


async def test_sql_looking_strings_are_stored_literally(client: httpx.AsyncClient, db: Db) -> None:
    """B14: every string field keeps SQL-looking text verbatim; no table is touched."""
    organizer = None
    for n, text in enumerate(SQL_LOOKING):
        email = f"x{n}'--@example.com"
        user = await client.post(
            f"{API}/users", json={"name": text, "email": email, "role": "organizer"}
        )
        assert user.status_code == 201, user.text
        organizer = user.json()["id"]
        event = await client.post(
            f"{API}/events", json={"title": text, "capacity": 2, "organizer_id": organizer}
        )
        assert event.status_code == 201, event.text
        assert (user.json()["name"], user.json()["email"]) == (text, email)
        assert event.json()["title"] == text
        patched = await client.patch(f"{API}/users/{organizer}", json={"name": text + " 2"})
        assert patched.json()["name"] == text + " 2"
    assert await db.fetchval("SELECT count(*) FROM users") == len(SQL_LOOKING)
    assert await db.fetchval("SELECT count(*) FROM events") == len(SQL_LOOKING)
    stored = await db.fetch("SELECT title FROM events ORDER BY id")
    assert [r["title"] for r in stored] == SQL_LOOKING


NFC = unicodedata.normalize("NFC", "Zoë Café")
NFD = unicodedata.normalize("NFD", "Zoë Café")
ROUND_TRIP = [
    "🎉 Launch party 🚀",
    "👩🏽‍💻 family: 👨‍👩‍👧‍👦",
    "مرحبا بالعالم",  # right to left
    "שלום \u202eevil\u202c",  # an explicit RTL override
    NFC,
    NFD,  # a different string from NFC: both are kept as sent, never normalized
    "e\u0301\u0301\u0301",  # stacked combining marks
    "tab\tinside",
    "\U0001d518\U0001d52b\U0001d526 astral plane",
]


async def test_unicode_round_trips_exactly(client: httpx.AsyncClient, db: Db) -> None:
    """B8: what is stored and returned is the exact code point sequence that was sent."""
    assert NFC != NFD
    for n, text in enumerate(ROUND_TRIP):
        created = await client.post(
            f"{API}/users", json={"name": text, "email": f"u{n}@example.com", "role": "organizer"}
        )
        assert created.status_code == 201, created.text
        user_id = created.json()["id"]
        event = await client.post(
            f"{API}/events", json={"title": text, "capacity": 1, "organizer_id": user_id}
        )
        fetched = await client.get(f"{API}/users/{user_id}")
        assert created.json()["name"] == fetched.json()["name"] == text
        assert event.json()["title"] == text
        stored = await db.fetchval("SELECT name FROM users WHERE id = $1", user_id)
        assert stored == text
    # Names that differ only by normalization are different names, and emails likewise.
    names = [r["name"] for r in await db.fetch("SELECT name FROM users ORDER BY id")]
    assert names == ROUND_TRIP


async def test_email_uniqueness_ignores_case(client: httpx.AsyncClient, db: Db) -> None:
    """B8 decision: emails compare case-insensitively (lower(email) is unique among live
    users); the spelling given is kept."""
    first = await client.post(f"{API}/users", json={"name": "A", "email": "Ann@Example.com"})
    assert first.json()["email"] == "Ann@Example.com"
    before = await snapshot(db)
    for email in ("ann@example.com", "ANN@EXAMPLE.COM", " ann@example.com "):
        response = await client.post(f"{API}/users", json={"name": "B", "email": email})
        if email.strip() != email:  # the pattern refuses surrounding whitespace outright
            check_problem(response, 422, "validation_failed", field="email", case=email)
        else:
            check_problem(response, 409, "email_taken", field="email", case=email)
    assert await snapshot(db) == before


async def test_surrogates_and_nul_never_reach_postgresql(client: httpx.AsyncClient, db: Db) -> None:
    """B8: a lone surrogate escape is malformed JSON (400); NUL is refused by validation
    (422), never PostgreSQL's 22021; and neither error echoes the raw value."""
    before = await snapshot(db)
    for body, status, code in [
        (b'{"name": "\\ud800", "email": "s@example.com"}', 400, "malformed_json"),
        (b'{"name": "\\udc00x", "email": "s@example.com"}', 400, "malformed_json"),
        (b'{"name": "x\\ud83d", "email": "s@example.com"}', 400, "malformed_json"),
        (b'{"name": "a\\u0000b", "email": "s@example.com"}', 422, "validation_failed"),
        (b'{"name": "ok", "email": "s\\u0000@example.com"}', 422, "validation_failed"),
    ]:
        response = await send(client, "POST", f"{API}/users", body)
        problem = check_problem(response, status, code, operation=("POST", f"{API}/users"),
                                case=body)  # fmt: skip
        assert "\x00" not in problem["detail"]
    assert await snapshot(db) == before
