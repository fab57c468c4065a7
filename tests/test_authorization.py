"""The BOLA sweep: every operation of the route table, as every kind of caller, on objects
that belong to someone else (issue 8).

The expected answer comes from the rule each operation declares (`Operation.access`), not
from a table written here, so the code is held to what the OpenAPI document says. Each
(operation, caller) case gets its own fresh objects; after every refusal the database must
be exactly as before (tokens' last_used_at aside, see tests/bad_input.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias

import asyncpg
import httpx
import pytest

from eventreg.caller import ADMIN, ANYONE, DOOR, ORGANIZER, SELF, SIGNED_IN, Access
from eventreg.db import tokens
from eventreg.routes import RESOURCES, Operation
from eventreg.structs import TokenRequest
from tests.bad_input import snapshot
from tests.tickets import KEYS

Db: TypeAlias = "asyncpg.Connection[asyncpg.Record]"
API = "/api/v1"

# Who calls. The three dead tokens belong to the owner (revoked, expired) or to a user
# deleted with psql (token left unrevoked: the lookup must still refuse it).
# A door token (issue 9) checks tickets in at one event: `door` at `event`, `other_door`
# at `free_event`; both are refused everything else.
KINDS = (
    "anonymous", "owner", "other_attendee", "organizer", "other_organizer", "admin",
    "revoked", "expired", "deleted_user", "door", "other_door",
)  # fmt: skip
DEAD = {"revoked", "expired", "deleted_user"}
DOORS = {"door", "other_door"}


@dataclass(frozen=True, slots=True)
class World:
    """The owner holds `registration` at `event`, organized by `organizer`, and it is
    checked in; another attendee holds `fresh`, not checked in. `free_event` has seats and no
    registration of the owner's. `owner_token_id` is the owner's token."""

    owner: int
    organizer: int
    event: int
    free_event: int
    registration: int
    owner_token_id: int
    secrets: dict[str, str]
    fresh: int = 0


async def _user(db: Db, name: str, role: str = "attendee") -> int:
    user_id: int = await db.fetchval(
        "INSERT INTO users (name, email, role) VALUES ($1, $1 || '@sweep.example', $2)"
        " RETURNING id",
        f"{name}-{await db.fetchval('SELECT count(*) FROM users')}",
        role,
    )
    return user_id


async def _event(db: Db, organizer: int) -> int:
    event_id: int = await db.fetchval(
        "INSERT INTO events (title, capacity, available_seats, organizer_id)"
        " VALUES ('Sweep', 5, 5, $1) RETURNING id",
        organizer,
    )
    return event_id


async def _token(db: Db, user_id: int) -> tuple[int, str]:
    made = await tokens.issue(db, user_id, TokenRequest(name="sweep"))
    assert made.token
    return made.id, made.token


async def _seat(db: Db, event: int, user: int) -> int:
    registration: int = await db.fetchval(
        "WITH seat AS (UPDATE events SET available_seats = available_seats - 1 WHERE id = $1)"
        " INSERT INTO registrations (event_id, user_id) VALUES ($1, $2) RETURNING id",
        event,
        user,
    )
    return registration


async def _door_token(db: Db, user_id: int, event: int) -> str:
    made, secret = await _token(db, user_id)
    await db.execute("UPDATE api_tokens SET check_in_event_id = $2 WHERE id = $1", made, event)
    return secret


async def make_world(db: Db) -> World:
    owner, other = await _user(db, "owner"), await _user(db, "other")
    organizer = await _user(db, "organizer", "organizer")
    other_organizer = await _user(db, "other-organizer", "organizer")
    admin, gone = await _user(db, "admin", "admin"), await _user(db, "gone")
    event, free_event = await _event(db, organizer), await _event(db, other_organizer)
    registration, fresh = await _seat(db, event, owner), await _seat(db, event, other)
    await db.execute(
        "INSERT INTO check_ins (registration_id, event_id, scanned_at, source)"
        " VALUES ($1, $2, now(), 'scan')",
        registration,
        event,
    )
    secrets: dict[str, str] = {}
    owner_token_id, secrets["owner"] = await _token(db, owner)
    for kind, user in [("other_attendee", other), ("organizer", organizer),
                       ("other_organizer", other_organizer), ("admin", admin),
                       ("deleted_user", gone)]:  # fmt: skip
        secrets[kind] = (await _token(db, user))[1]
    revoked_id, secrets["revoked"] = await _token(db, owner)
    await db.execute("UPDATE api_tokens SET revoked_at = now() WHERE id = $1", revoked_id)
    expired_id, secrets["expired"] = await _token(db, owner)
    await db.execute(
        "UPDATE api_tokens SET created_at = now() - interval '2 days',"
        " expires_at = now() - interval '1 second' WHERE id = $1",
        expired_id,
    )
    await db.execute("UPDATE users SET deleted_at = now() WHERE id = $1", gone)
    secrets["door"] = await _door_token(db, organizer, event)
    secrets["other_door"] = await _door_token(db, other_organizer, free_event)
    return World(owner, organizer, event, free_event, registration, owner_token_id, secrets, fresh)


Request = tuple[str, Any]  # (path with ids filled in, JSON body or None)
NOW = datetime.now(UTC).isoformat()
CASES: dict[tuple[str, str], Callable[[World], Request]] = {
    ("/", "GET"): lambda w: ("/", None),
    ("/health", "GET"): lambda w: ("/health", None),
    ("/openapi.json", "GET"): lambda w: ("/openapi.json", None),
    ("/metrics", "GET"): lambda w: ("/metrics", None),
    (f"{API}/users", "GET"): lambda w: (f"{API}/users", None),
    (f"{API}/users", "POST"): lambda w: (
        f"{API}/users",
        {"name": "N", "email": f"new{w.owner}@x.io"},
    ),
    (f"{API}/users/me", "GET"): lambda w: (f"{API}/users/me", None),
    (f"{API}/users/{{id}}", "GET"): lambda w: (f"{API}/users/{w.owner}", None),
    (f"{API}/users/{{id}}", "PUT"): lambda w: (f"{API}/users/{w.owner}", {"name": "New"}),
    (f"{API}/users/{{id}}", "PATCH"): lambda w: (f"{API}/users/{w.owner}", {"name": "New"}),
    (f"{API}/users/{{id}}", "DELETE"): lambda w: (f"{API}/users/{w.owner}", None),
    (f"{API}/tokens", "GET"): lambda w: (f"{API}/tokens", None),
    (f"{API}/tokens", "POST"): lambda w: (f"{API}/tokens", {"name": "another"}),
    (f"{API}/tokens/{{id}}", "DELETE"): lambda w: (f"{API}/tokens/{w.owner_token_id}", None),
    (f"{API}/events", "GET"): lambda w: (f"{API}/events", None),
    (f"{API}/events", "POST"): lambda w: (
        f"{API}/events",
        {"title": "T", "capacity": 3, "organizer_id": w.organizer},
    ),
    (f"{API}/events/organizer/{{id}}", "GET"): lambda w: (
        f"{API}/events/organizer/{w.organizer}",
        None,
    ),
    (f"{API}/events/{{id}}", "GET"): lambda w: (f"{API}/events/{w.event}", None),
    (f"{API}/events/{{id}}", "PUT"): lambda w: (f"{API}/events/{w.event}", {"title": "New"}),
    (f"{API}/events/{{id}}", "PATCH"): lambda w: (f"{API}/events/{w.event}", {"title": "New"}),
    (f"{API}/events/{{id}}", "DELETE"): lambda w: (f"{API}/events/{w.event}", None),
    (f"{API}/registrations", "POST"): lambda w: (
        f"{API}/registrations",
        {"user_id": w.owner, "event_id": w.free_event},
    ),
    (f"{API}/registrations", "DELETE"): lambda w: (
        f"{API}/registrations",
        {"user_id": w.owner, "event_id": w.event},
    ),
    (f"{API}/registrations/user/{{id}}", "GET"): lambda w: (
        f"{API}/registrations/user/{w.owner}",
        None,
    ),
    (f"{API}/registrations/event/{{id}}", "GET"): lambda w: (
        f"{API}/registrations/event/{w.event}",
        None,
    ),
    (f"{API}/registrations/{{id}}", "GET"): lambda w: (
        f"{API}/registrations/{w.registration}",
        None,
    ),
    # issue 9
    ("/.well-known/ticket-keys", "GET"): lambda w: ("/.well-known/ticket-keys", None),
    (f"{API}/registrations/{{id}}/ticket", "GET"): lambda w: (
        f"{API}/registrations/{w.registration}/ticket",
        None,
    ),
    (f"{API}/registrations/{{id}}/ticket.svg", "GET"): lambda w: (
        f"{API}/registrations/{w.registration}/ticket.svg",
        None,
    ),
    (f"{API}/registrations/{{id}}/ticket.png", "GET"): lambda w: (
        f"{API}/registrations/{w.registration}/ticket.png",
        None,
    ),
    (f"{API}/registrations/{{id}}/check-in", "GET"): lambda w: (
        f"{API}/registrations/{w.registration}/check-in",
        None,
    ),
    (f"{API}/registrations/{{id}}/check-in", "DELETE"): lambda w: (
        f"{API}/registrations/{w.registration}/check-in",
        None,
    ),
    (f"{API}/events/{{id}}/check-ins", "POST"): lambda w: (
        f"{API}/events/{w.event}/check-ins",
        {"code": KEYS.sign(w.fresh, w.event)},
    ),
    (f"{API}/events/{{id}}/check-ins/batch", "POST"): lambda w: (
        f"{API}/events/{w.event}/check-ins/batch",
        {"scans": [{"code": KEYS.sign(w.fresh, w.event), "scanned_at": NOW}]},
    ),
    (f"{API}/events/{{id}}/check-ins/summary", "GET"): lambda w: (
        f"{API}/events/{w.event}/check-ins/summary",
        None,
    ),
    (f"{API}/events/{{id}}/check-ins/revoked", "GET"): lambda w: (
        f"{API}/events/{w.event}/check-ins/revoked",
        None,
    ),
    (f"{API}/events/{{id}}/door-tokens", "GET"): lambda w: (
        f"{API}/events/{w.event}/door-tokens",
        None,
    ),
    (f"{API}/events/{{id}}/door-tokens", "POST"): lambda w: (
        f"{API}/events/{w.event}/door-tokens",
        {"name": "gate"},
    ),
}
OPERATIONS = [(r.path, method, op) for r in RESOURCES for method, op in r.operations.items()]


def test_every_operation_has_a_sweep_case() -> None:
    """A new route cannot skip the sweep: it fails here until it has a case."""
    assert set(CASES) == {(path, method) for path, method, _ in OPERATIONS}


def relations(kind: str) -> set[str]:
    """What a caller of this kind is to the objects of a World."""
    if kind in DOORS:  # not even "anyone": a door token is good for its door only
        return {DOOR} if kind == "door" else set()
    found = {ANYONE} if kind == "anonymous" else {ANYONE, SIGNED_IN}
    found |= {"owner": {SELF}, "organizer": {ORGANIZER}, "admin": {ADMIN}}.get(kind, set())
    return found


def expected(access: Access, op: Operation, kind: str) -> tuple[int, str | None]:
    """(status, problem code) the rule promises; code None for a success."""
    if kind in DEAD:
        return 401, "invalid_token"
    if kind in DOORS and DOOR not in access.who:
        return 403, "forbidden"
    if relations(kind) & set(access.who):
        return op.status, None
    if kind == "anonymous":
        return 401, "missing_token"
    return access.refusal, "forbidden" if access.refusal == 403 else None


@pytest.mark.parametrize(
    ("path", "method", "op"), OPERATIONS, ids=[f"{m} {p}" for p, m, _ in OPERATIONS]
)
async def test_sweep(
    tokens_client: httpx.AsyncClient, db: Db, path: str, method: str, op: Operation
) -> None:
    leaks = []
    for kind in KINDS:
        world = await make_world(db)
        url, body = CASES[path, method](world)
        headers = {} if kind == "anonymous" else {"Authorization": f"Bearer {world.secrets[kind]}"}
        before = await snapshot(db)
        response = await tokens_client.request(method, url, json=body, headers=headers)
        status, code = expected(op.access, op, kind)
        if response.status_code != status:
            leaks.append(f"{kind}: {response.status_code} {response.text[:200]}, wanted {status}")
            continue
        if code is not None:
            assert response.json()["code"] == code, (kind, response.text)
        if status >= 400:
            assert await snapshot(db) == before, f"{kind}: a refused request changed the database"
        if status == 401:
            assert response.headers["www-authenticate"].startswith("Bearer")
    assert leaks == []
