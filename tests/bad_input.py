"""Shared pieces of the bad-input series (tests/test_bad_input*.py, plan items B1-B14).

A `World` is a small set of rows made through the API. Every bad request must leave the
database byte-for-byte as it was (`snapshot`), answer with the documented status and code
as problem+json, leak nothing from PostgreSQL, and use a code the OpenAPI document pins for
that operation and status.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, TypeAlias

import asyncpg
import httpx

from eventreg.openapi import document
from eventreg.routes import RESOURCES
from tests.factories import make_event, make_user, register

Db: TypeAlias = "asyncpg.Connection[asyncpg.Record]"
JSON = dict[str, Any]
API = "/api/v1"
DOC = document(RESOURCES)
PROBLEM_KEYS = {"type", "title", "status", "detail", "code"}
LEAKS = re.compile(
    r"SQLSTATE|asyncpg|psycopg|postgres|Traceback|File \"|violates|relation \"|syntax error"
    r"|ERROR:|DETAIL:|\bat 0x",
    re.IGNORECASE,
)
# One statement, so the tables are read in one snapshot: row counts, the seat total
# and a digest of every column of every row.
SNAPSHOT = """
SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM events),
       (SELECT count(*) FROM registrations),
       (SELECT coalesce(sum(available_seats), 0) FROM events),
       (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY id), '')) FROM users t),
       (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY id), '')) FROM events t),
       (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY id), '')) FROM registrations t),
       -- tokens without last_used_at, which authenticating a request may touch (once a
       -- minute), whatever the request then does
       (SELECT md5(coalesce(string_agg((t.id, t.user_id, t.name, t.secret_hash, t.prefix,
                                        t.created_at, t.expires_at, t.revoked_at)::text,
                                       '|' ORDER BY id), '')) FROM api_tokens t),
       (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY id), '')) FROM check_ins t)
"""


@dataclass(frozen=True, slots=True)
class World:
    organizer: int
    attendee: int  # registered for `event`
    other: int  # registered for nothing
    event: int
    registration: int


async def make_world(client: httpx.AsyncClient) -> World:
    organizer = (await make_user(client, role="organizer"))["id"]
    attendee, other = (await make_user(client))["id"], (await make_user(client))["id"]
    event = (await make_event(client, capacity=5, organizer_id=organizer))["id"]
    registered = await register(client, attendee, event)
    assert registered.status_code == 201, registered.text
    return World(organizer, attendee, other, event, registered.json()["id"])


async def snapshot(db: Db) -> tuple[Any, ...]:
    row = await db.fetchrow(SNAPSHOT)
    assert row is not None
    return tuple(row)


def check_problem(
    response: httpx.Response,
    status: int,
    code: str,
    *,
    operation: tuple[str, str] | None = None,
    field: str | None = None,
    case: object = "",
) -> JSON:
    """The response is the documented problem: status, code, shape, no leak, pinned in the doc.

    `operation` is (METHOD, OpenAPI path template); None for answers outside any operation
    (405, a route miss).
    """
    where = f"{response.request.method} {response.request.url.path} {case!r}"
    assert response.status_code == status, f"{where}: {response.status_code} {response.text}"
    assert response.headers["content-type"] == "application/problem+json", where
    body: JSON = response.json()
    assert body.keys() >= PROBLEM_KEYS, where
    assert (body["status"], body["code"]) == (status, code), f"{where}: {body}"
    assert not LEAKS.search(response.text), f"{where} leaks: {response.text}"
    if field is not None:
        assert body.get("field") == field, f"{where}: {body}"
    if operation is not None:
        method, template = operation
        declared = DOC["paths"][template][method.lower()]["responses"]
        assert str(status) in declared, f"{where}: {status} not in the OpenAPI document"
        schema = declared[str(status)]["content"]["application/problem+json"]["schema"]
        assert code in schema["allOf"][1]["properties"]["code"]["enum"], f"{where}: {code}"
    return body


async def send(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    content: bytes | None = None,
    content_type: str | None = "application/json",
) -> httpx.Response:
    """Exactly these bytes, with exactly this Content-Type (None: no header at all)."""
    headers = {"content-type": content_type} if content_type is not None else {}
    return await client.request(method, url, content=content, headers=headers)
