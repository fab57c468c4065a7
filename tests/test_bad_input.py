"""Bad request bodies (plan B1-B10) against every route that reads one.

Each table row is sent as real bytes with explicit headers, and must get its documented
problem+json answer while the database stays exactly as it was.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import pytest
from asgi_lifespan import LifespanManager
from starlette.types import Message

from eventreg.app import create_app
from eventreg.config import Settings
from tests.bad_input import API, JSON, Db, World, check_problem, make_world, send, snapshot

MAX_BODY = 64 * 1024


@dataclass(frozen=True, slots=True)
class BodyRoute:
    method: str
    template: str  # the OpenAPI path
    valid: Callable[[World], JSON]  # a body that would succeed (the positive control)
    ok: int

    def url(self, world: World) -> str:
        item = world.attendee if "/users/" in self.template else world.event
        return self.template.replace("{id}", str(item))

    @property
    def operation(self) -> tuple[str, str]:
        return self.method, self.template

    def __str__(self) -> str:
        return f"{self.method} {self.template}"


ROUTES = [
    BodyRoute("POST", f"{API}/users", lambda w: {"name": "Ann", "email": "ann@example.com"}, 201),
    BodyRoute("PUT", f"{API}/users/{{id}}", lambda w: {"name": "Ann B"}, 200),
    BodyRoute("PATCH", f"{API}/users/{{id}}", lambda w: {"email": "b@example.com"}, 200),
    BodyRoute(
        "POST",
        f"{API}/events",
        lambda w: {"title": "Gig", "capacity": 10, "organizer_id": w.organizer},
        201,
    ),
    BodyRoute("PUT", f"{API}/events/{{id}}", lambda w: {"capacity": 10}, 200),
    BodyRoute("PATCH", f"{API}/events/{{id}}", lambda w: {"title": "Renamed"}, 200),
    BodyRoute(
        "POST", f"{API}/registrations", lambda w: {"user_id": w.other, "event_id": w.event}, 201
    ),
    BodyRoute(
        "DELETE",
        f"{API}/registrations",
        lambda w: {"user_id": w.attendee, "event_id": w.event},
        200,
    ),
]
by_route = pytest.mark.parametrize("route", ROUTES, ids=str)


@pytest.fixture
async def world(client: httpx.AsyncClient) -> World:
    return await make_world(client)


# B1-B4: bodies that are not JSON at all, or not a JSON object (status, code).
NOT_AN_OBJECT: list[tuple[str, bytes, int, str]] = [
    ("B1 truncated", b'{"user_id": 1,', 400, "malformed_json"),
    ("B1 empty", b"", 400, "malformed_json"),
    ("B1 whitespace", b" \n\t ", 400, "malformed_json"),
    ("B1 null", b"null", 422, "validation_failed"),
    ("B1 array", b"[]", 422, "validation_failed"),
    ("B1 string", b'"x"', 422, "validation_failed"),
    ("B1 number", b"1", 422, "validation_failed"),
    ("B1 true", b"true", 422, "validation_failed"),
    ("B1 single quotes", b"{'name': 'x'}", 400, "malformed_json"),
    ("B1 trailing comma", b'{"title": "x",}', 400, "malformed_json"),
    ("B1 comment", b'{/* c */ "title": "x"}', 400, "malformed_json"),
    ("B1 two documents", b"{}{}", 400, "malformed_json"),
    ("B1 trailing garbage", b"{} x", 400, "malformed_json"),
    ("B2 invalid UTF-8", b'{"name": "\xff"}', 400, "malformed_json"),
    ("B2 overlong UTF-8", b'{"name": "\xc0\xaf"}', 400, "malformed_json"),
    ("B2 UTF-8 surrogate", b'{"name": "\xed\xa0\x80"}', 400, "malformed_json"),
    ("B2 latin-1", '{"name": "Zoë"}'.encode("latin-1"), 400, "malformed_json"),
    ("B2 UTF-16", '{"name": "x"}'.encode("utf-16"), 400, "malformed_json"),
    ("B3 nested 1000", b"[" * 1000 + b"]" * 1000, 400, "malformed_json"),
    ("B3 unclosed 1000", b"[" * 1000, 400, "malformed_json"),
    ("B3 nested 30000", b"[" * 30000 + b"]" * 30000, 400, "malformed_json"),
    (
        "B3 nested in a field",
        b'{"name": ' + b"[" * 1000 + b"]" * 1000 + b"}",
        400,
        "malformed_json",
    ),
    ("B3 objects 5000", b'{"a":' * 5000 + b"1" + b"}" * 5000, 400, "malformed_json"),
    ("B4 NaN", b'{"capacity": NaN}', 400, "malformed_json"),
    ("B4 Infinity", b'{"capacity": Infinity}', 400, "malformed_json"),
    ("B4 -Infinity", b'{"capacity": -Infinity}', 400, "malformed_json"),
    ("B4 5000 digits", b'{"capacity": ' + b"9" * 5000 + b"}", 422, "validation_failed"),
    ("B4 1e400", b'{"capacity": 1e400}', 422, "validation_failed"),
    ("B4 hex", b'{"capacity": 0x10}', 400, "malformed_json"),
    ("B4 leading zero", b'{"capacity": 010}', 400, "malformed_json"),
    ("B4 plus sign", b'{"capacity": +1}', 400, "malformed_json"),
    ("B10 BOM", b'\xef\xbb\xbf{"name": "x"}', 400, "malformed_json"),
]


async def not_an_object(client: httpx.AsyncClient, route: BodyRoute, world: World) -> None:
    for case, body, status, code in NOT_AN_OBJECT:
        response = await send(client, route.method, route.url(world), body)
        check_problem(response, status, code, operation=route.operation, case=case)


# B4-B8: one field of an otherwise good body is wrong. Values by the field's kind.
ID_VALUES: list[Any] = [
    True, False, None, 7.5, 1.0000001, "7", "", [], {}, [7], {"id": 7},
    0, -1, -0.0, 2**63, -(2**63), 2**64, 10**30, 1e19, 1e400,
]  # fmt: skip
CAPACITY_VALUES: list[Any] = [
    True, None, 7.5, "7", [], {}, 0, -1, 1_000_001, 2_147_483_648, 2**63, 1e10, 1e400,
]  # fmt: skip
TEXT_VALUES: list[Any] = [
    None, 7, True, [], {}, ["x"], "", " ", "\t\n\r", "\u00a0\u3000", "\x1f\x1c",
    "a\x00b", "\x00", "x" * 256, "x" * 10_000, "é" * 256,
]  # fmt: skip
EMAIL_VALUES: list[Any] = [
    *TEXT_VALUES, "plain", "a@b", "@b.co", "a@.co ", "a b@c.de", "a@b@c.de", "a\x00@b.co",
    "a\u3000@b.co", "x" * 251 + "@b.co",
]  # fmt: skip
ROLE_VALUES: list[Any] = [None, "", "superuser", "Organizer", " organizer", 1, True, ["attendee"]]
BAD_VALUES = {
    "user_id": ID_VALUES,
    "event_id": ID_VALUES,
    "organizer_id": ID_VALUES,
    "capacity": CAPACITY_VALUES,
    "name": TEXT_VALUES,
    "title": TEXT_VALUES,
    "email": EMAIL_VALUES,
    "role": ROLE_VALUES,
}
# Every field any body route accepts, so each route is probed with all of them.
ALL_FIELDS = {"name": "N", "email": "n@example.com", "role": "attendee", "title": "T",
              "capacity": 3, "organizer_id": 1, "user_id": 1, "event_id": 1}  # fmt: skip


async def bad_field_values(client: httpx.AsyncClient, route: BodyRoute, world: World) -> None:
    """B4-B8: each field the route reads, set to each bad value of its kind."""
    good = route.valid(world)
    fields = set(good) | ({"name", "email", "role"} if "users" in route.template else set())
    fields |= {"title", "capacity", "organizer_id"} if "events" in route.template else set()
    for name in sorted(fields):
        for value in BAD_VALUES[name]:
            body = msgspec.json.encode({**good, name: value})
            response = await send(client, route.method, route.url(world), body)
            check_problem(
                response, 422, "validation_failed", operation=route.operation,
                field=name, case=(name, value),
            )  # fmt: skip


async def missing_and_extra_fields(
    client: httpx.AsyncClient, route: BodyRoute, world: World
) -> None:
    """B7: required fields missing, and fields the body does not have (mass assignment)."""
    good = route.valid(world)
    url = route.url(world)
    if route.method in ("POST", "DELETE"):  # PUT/PATCH bodies are partial: nothing required
        for name in good:
            body = msgspec.json.encode({k: v for k, v in good.items() if k != name})
            response = await send(client, route.method, url, body)
            check_problem(response, 422, "validation_failed", operation=route.operation,
                          field=name, case=f"without {name}")  # fmt: skip
    extras = {"id": 1, "available_seats": 999, "created_at": "2020-01-01T00:00:00Z",
              "deleted_at": None, "status": "cancelled", "organizer": {"id": 1},
              "x": 1, "Name": "x", "": 0}  # fmt: skip
    for name, value in extras.items():
        if name in good:
            continue
        body = msgspec.json.encode({**good, name: value})
        response = await send(client, route.method, url, body)
        check_problem(response, 422, "validation_failed", operation=route.operation,
                      field=name or None, case=f"extra {name!r}")  # fmt: skip


async def wrong_content_types(client: httpx.AsyncClient, route: BodyRoute, world: World) -> None:
    """B10: only application/json (or a +json type) is read: anything else is 415."""
    body = msgspec.json.encode(route.valid(world))
    for content_type in [
        None, "", "text/plain", "text/json", "application/xml", "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded", "application/octet-stream", "application/jsonx",
        "application", "*/*", "json",
    ]:  # fmt: skip
        response = await send(client, route.method, route.url(world), body, content_type)
        check_problem(response, 415, "unsupported_media_type", operation=route.operation,
                      case=content_type)  # fmt: skip
    for coding in ("gzip", "br", "deflate", "identity, gzip"):  # bodies we would misread
        response = await client.request(
            route.method, route.url(world), content=body,
            headers={"content-type": "application/json", "content-encoding": coding},
        )  # fmt: skip
        check_problem(response, 415, "unsupported_media_type", operation=route.operation,
                      case=coding)  # fmt: skip


async def oversized(client: httpx.AsyncClient, route: BodyRoute, world: World) -> None:
    """B8/B9: a body over 64 KiB is refused before it is parsed, declared or chunked."""
    url = route.url(world)
    padded = msgspec.json.encode({**route.valid(world), "name": "x" * MAX_BODY})
    for size in (MAX_BODY + 1, 1024 * 1024 + 1):
        big = b" " * (size - 2) + b"{}"
        check_problem(await send(client, route.method, url, big), 413, "payload_too_large",
                      operation=route.operation, case=size)  # fmt: skip
    check_problem(await send(client, route.method, url, padded), 413, "payload_too_large",
                  operation=route.operation, case="long string")  # fmt: skip

    async def chunks(count: int) -> AsyncIterator[bytes]:
        for _ in range(count):
            yield b" " * 8192

    for count in (9, 200):  # 72 KiB and 1.6 MB, no Content-Length
        response = await client.request(
            route.method, url, content=chunks(count), headers={"content-type": "application/json"}
        )
        assert "content-length" not in response.request.headers
        check_problem(response, 413, "payload_too_large", operation=route.operation,
                      case=f"{count} chunks")  # fmt: skip


@by_route
async def test_bad_bodies_are_refused_and_change_nothing(
    client: httpx.AsyncClient, db: Db, world: World, route: BodyRoute
) -> None:
    before = await snapshot(db)
    await not_an_object(client, route, world)
    await bad_field_values(client, route, world)
    await missing_and_extra_fields(client, route, world)
    await wrong_content_types(client, route, world)
    await oversized(client, route, world)
    assert await snapshot(db) == before
    # The positive control: the good body succeeds, so the bad part alone caused each refusal.
    # Padded to exactly the limit and sent as a JSON variant, it also shows both are read.
    content_type = {
        "POST": "application/json; charset=utf-8",
        "PUT": "Application/JSON",
        "PATCH": "application/merge-patch+json",
        "DELETE": "application/json;charset=UTF-8",
    }[route.method]
    body = msgspec.json.encode(route.valid(world))
    padded = body + b" " * (MAX_BODY - len(body))
    response = await send(client, route.method, route.url(world), padded, content_type)
    assert response.status_code == route.ok, response.text
    assert await snapshot(db) != before


async def test_integral_numbers_are_integers(client: httpx.AsyncClient, db: Db) -> None:
    """B5: 7.0 and 7e0 are the integer 7 (as JSON Schema says); 7.5 and "7" are not."""
    organizer = (await client.post(f"{API}/users", json={
        "name": "O", "email": "o@example.com", "role": "organizer"})).json()["id"]  # fmt: skip
    body = f'{{"title": "T", "capacity": 7.0e0, "organizer_id": {organizer}.0}}'.encode()
    response = await send(client, "POST", f"{API}/events", body)
    assert response.status_code == 201, response.text
    assert (response.json()["capacity"], response.json()["organizer_id"]) == (7, organizer)
    row = await db.fetchrow("SELECT capacity, available_seats FROM events")
    assert row is not None
    assert tuple(row) == (7, 7)


async def test_duplicate_keys_take_the_last_value(client: httpx.AsyncClient) -> None:
    """B7: as in Python's json and msgspec, the last of duplicate keys wins (documented)."""
    body = b'{"name": "first", "email": "dup@example.com", "name": "last"}'
    response = await send(client, "POST", f"{API}/users", body)
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "last"


async def test_bounds_are_inclusive(client: httpx.AsyncClient) -> None:
    """B6: capacity 1 and 1 000 000 are accepted; 255-character text too."""
    user = {"name": "x" * 255, "email": "o@example.com", "role": "organizer"}
    organizer = (await client.post(f"{API}/users", json=user)).json()["id"]
    for capacity in (1, 1_000_000):
        response = await client.post(f"{API}/events", json={
            "title": "t" * 255, "capacity": capacity, "organizer_id": organizer})  # fmt: skip
        assert response.status_code == 201, response.text


async def test_a_client_that_disconnects_mid_body_gets_400_not_500(
    settings: Settings, db: Db
) -> None:
    """B9: the body stops half way (the client went away): no 500, no traceback, no row."""
    before = await snapshot(db)
    app = create_app(settings)
    sent: list[Message] = []
    messages: list[Message] = [
        {"type": "http.request", "body": b'{"name": "Half', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send_message(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": f"{API}/users", "raw_path": f"{API}/users".encode(),
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
        "server": ("test", 80), "headers": [(b"content-type", b"application/json")],
    }  # fmt: skip
    async with LifespanManager(app) as manager:
        await manager.app(scope, receive, send_message)
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 400
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert msgspec.json.decode(body)["code"] == "malformed_json"
    assert await snapshot(db) == before
