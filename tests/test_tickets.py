"""Tickets and check-in (issue 9): codes, QR images, scans, undo, batches, the summary,
the revoked list, door tokens, and cancelling after a check-in."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import segno

from eventreg.ticketcodes import Keyring
from tests.bad_input import snapshot
from tests.tickets import API, KEYS, Db, bearer, live_check_ins, make_door


async def test_a_ticket_has_a_code_the_public_keys_verify_and_a_qr_image(
    tokens_client: httpx.AsyncClient, database_url: str
) -> None:
    door = await make_door(tokens_client, database_url, attendees=1)
    ann = door.attendees[0]
    got = await tokens_client.get(
        f"{API}/registrations/{ann['registration']}/ticket", headers=bearer(ann["token"])
    )
    assert got.status_code == 200, got.text
    ticket = got.json()
    assert ticket["holder_name"] == "Ann 0"
    assert (ticket["status"], ticket["event"]["id"], ticket["checked_in_at"]) == (
        "active", door.event, None,
    )  # fmt: skip
    keys = (await tokens_client.get("/.well-known/ticket-keys")).json()
    assert keys["keys"][0]["status"] == "current"
    found = Keyring.from_jwks(keys).verify(ticket["code"])  # offline: no database, no server
    assert (found.registration_id, found.event_id) == (ann["registration"], door.event)
    assert len(ticket["code"]) < 120
    svg = await tokens_client.get(ticket["qr_svg"], headers=bearer(ann["token"]))
    png = await tokens_client.get(ticket["qr_png"], headers=bearer(ann["token"]))
    assert svg.headers["content-type"] == "image/svg+xml"
    assert svg.text.startswith("<svg")
    assert png.headers["content-type"] == "image/png"
    expected = io.BytesIO()
    segno.make(ticket["code"], error="m").save(expected, kind="png", scale=8, border=4)
    assert png.content == expected.getvalue()  # the QR symbol of exactly this code
    again = await tokens_client.get(
        f"{API}/registrations/{ann['registration']}/ticket", headers=bearer(door.organizer_token)
    )
    assert again.json()["code"] == ticket["code"]  # deterministic: computed, never stored


async def test_first_scan_checks_in_and_later_scans_say_who_and_when(
    tokens_client: httpx.AsyncClient, database_url: str, db: Db
) -> None:
    door = await make_door(tokens_client, database_url)
    first = await door.scan(tokens_client, door.code(0))
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["code"] == "checked_in"
    assert body["holder_name"] == "Ann 0"
    assert body["scanned_by"] == {
        "token_id": door.door_token_id, "token_name": "north door", "user_id": door.organizer,
    }  # fmt: skip
    assert first.headers["location"] == f"{API}/registrations/{body['registration_id']}/check-in"
    later = await door.scan(tokens_client, door.code(0), door.organizer_token)
    assert later.status_code == 200
    assert later.json()["code"] == "already_checked_in"
    assert later.json()["checked_in_at"] == body["checked_in_at"]
    assert later.json()["scanned_by"]["token_name"] == "north door"  # the first scanner
    assert await live_check_ins(db) == 1
    row = await db.fetchrow("SELECT * FROM check_ins")
    assert row is not None
    assert (row["registration_id"], row["event_id"], row["source"]) == (
        door.attendees[0]["registration"], door.event, "scan",
    )  # fmt: skip
    read = await tokens_client.get(
        f"{API}/registrations/{body['registration_id']}/check-in",
        headers=bearer(door.attendees[0]["token"]),
    )
    assert read.json()["checked_in_at"] == body["checked_in_at"]


async def test_refusals_have_their_codes_and_change_nothing(
    tokens_client: httpx.AsyncClient, database_url: str, db: Db
) -> None:
    door = await make_door(tokens_client, database_url)
    ann = door.attendees[1]
    cancelled = await tokens_client.request(
        "DELETE", f"{API}/registrations", json={"user_id": ann["id"], "event_id": door.event},
        headers=bearer(ann["token"]),
    )  # fmt: skip
    assert cancelled.status_code == 200
    before = await snapshot(db)
    cases = [
        (door.code(1), 409, "ticket_cancelled"),
        (KEYS.sign(door.attendees[0]["registration"], door.other_event), 409, "wrong_event"),
        ("1.00000000.1.1." + "A" * 86, 422, "invalid_ticket"),
        ("not a ticket", 422, "invalid_ticket"),
    ]
    for code, status, problem in cases:
        response = await door.scan(tokens_client, code, door.organizer_token)
        assert (response.status_code, response.json()["code"]) == (status, problem), code
        assert response.headers["content-type"] == "application/problem+json"
    assert await snapshot(db) == before
    assert await live_check_ins(db) == 0


async def test_a_waiting_registration_has_no_ticket(
    tokens_client: httpx.AsyncClient, database_url: str
) -> None:
    door = await make_door(tokens_client, database_url, attendees=1)
    await tokens_client.patch(
        f"{API}/events/{door.event}", json={"capacity": 1}, headers=bearer(door.organizer_token)
    )
    bob = (await tokens_client.post(f"{API}/users", json={"name": "Bob", "email": "b@x.io"})).json()
    queued = await tokens_client.post(
        f"{API}/registrations", json={"user_id": bob["id"], "event_id": door.event,
                                      "waitlist": True}, headers=bearer(bob["token"]),
    )  # fmt: skip
    assert queued.status_code == 202
    rid = queued.json()["id"]
    got = await tokens_client.get(f"{API}/registrations/{rid}/ticket", headers=bearer(bob["token"]))
    assert (got.status_code, got.json()["code"]) == (409, "ticket_not_issued")
    scan = await door.scan(tokens_client, KEYS.sign(rid, door.event))
    assert (scan.status_code, scan.json()["code"]) == (409, "ticket_not_issued")


async def test_undo_keeps_the_history_and_the_ticket_scans_again(
    tokens_client: httpx.AsyncClient, database_url: str, db: Db
) -> None:
    door = await make_door(tokens_client, database_url)
    rid = door.attendees[0]["registration"]
    assert (await door.scan(tokens_client, door.code(0))).status_code == 201
    by_door = await tokens_client.delete(
        f"{API}/registrations/{rid}/check-in", headers=bearer(door.door_token)
    )
    assert by_door.status_code == 403  # door staff scan; only the organizer undoes
    undone = await tokens_client.delete(
        f"{API}/registrations/{rid}/check-in", headers=bearer(door.organizer_token)
    )
    assert undone.json() == {"message": "check-in undone"}
    twice = await tokens_client.delete(
        f"{API}/registrations/{rid}/check-in", headers=bearer(door.organizer_token)
    )
    assert (twice.status_code, twice.json()["code"]) == (404, "check_in_not_found")
    assert (await door.scan(tokens_client, door.code(0))).status_code == 201
    rows = await db.fetch("SELECT undone_at FROM check_ins ORDER BY id")
    assert [r["undone_at"] is None for r in rows] == [False, True]


async def test_cancelling_after_check_in_is_allowed_and_keeps_the_history(
    tokens_client: httpx.AsyncClient, database_url: str, db: Db
) -> None:
    door = await make_door(tokens_client, database_url)
    t0 = (await tokens_client.get(
        f"{API}/events/{door.event}/check-ins/revoked", headers=bearer(door.door_token)
    )).json()["next_since"]  # fmt: skip
    for i in (0, 1):
        assert (await door.scan(tokens_client, door.code(i))).status_code == 201
    ann = door.attendees[0]
    cancelled = await tokens_client.request(
        "DELETE", f"{API}/registrations", json={"user_id": ann["id"], "event_id": door.event},
        headers=bearer(ann["token"]),
    )  # fmt: skip
    assert cancelled.status_code == 200
    assert await live_check_ins(db, ann["registration"]) == 1  # history kept
    summary = await tokens_client.get(
        f"{API}/events/{door.event}/check-ins/summary", headers=bearer(door.door_token)
    )
    assert {k: summary.json()[k] for k in ("registered", "checked_in", "not_arrived")} == {
        "registered": 2, "checked_in": 1, "not_arrived": 1,
    }  # fmt: skip
    revoked = await tokens_client.get(
        f"{API}/events/{door.event}/check-ins/revoked",
        params={"since": t0}, headers=bearer(door.door_token),
    )  # fmt: skip
    assert revoked.json()["registration_ids"] == [ann["registration"]]
    assert revoked.json()["next_since"] < datetime.now(UTC).isoformat()
    rescan = await door.scan(tokens_client, door.code(0))
    assert (rescan.status_code, rescan.json()["code"]) == (409, "ticket_cancelled")
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    later = await tokens_client.get(
        f"{API}/events/{door.event}/check-ins/revoked",
        params={"since": future}, headers=bearer(door.door_token),
    )  # fmt: skip
    assert later.json()["registration_ids"] == []
    bad = await tokens_client.get(
        f"{API}/events/{door.event}/check-ins/revoked",
        params={"since": "yesterday"}, headers=bearer(door.door_token),
    )  # fmt: skip
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_query")


def _scans(*items: tuple[str, datetime]) -> dict[str, Any]:
    return {"scans": [{"code": code, "scanned_at": at.isoformat()} for code, at in items]}


async def test_batch_outcomes_in_order_idempotent_and_the_earliest_scan_wins(
    tokens_client: httpx.AsyncClient, database_url: str, db: Db
) -> None:
    door = await make_door(tokens_client, database_url, attendees=4)
    now = datetime.now(UTC)
    assert (await door.scan(tokens_client, door.code(3))).status_code == 201  # live, now
    ann = door.attendees[2]
    await tokens_client.request(
        "DELETE", f"{API}/registrations", json={"user_id": ann["id"], "event_id": door.event},
        headers=bearer(ann["token"]),
    )  # fmt: skip
    cancelled_at = await db.fetchval(
        "SELECT cancelled_at FROM registrations WHERE id = $1", ann["registration"]
    )
    batch = _scans(
        (door.code(0), now - timedelta(minutes=10)),
        (door.code(0), now - timedelta(minutes=20)),  # earlier: wins
        (door.code(1), now - timedelta(minutes=5)),
        (door.code(2), cancelled_at - timedelta(minutes=1)),  # scanned before it was cancelled
        (door.code(2), cancelled_at + timedelta(seconds=1)),  # after: refused, as live
        (door.code(3), now - timedelta(hours=1)),  # earlier than the live scan: replaces it
        ("garbage", now),
        (KEYS.sign(door.attendees[0]["registration"], door.other_event), now),
        (door.code(1), now + timedelta(hours=1)),
    )
    url = f"{API}/events/{door.event}/check-ins/batch"
    first = await tokens_client.post(url, json=batch, headers=bearer(door.door_token))
    assert first.status_code == 200, first.text
    result = first.json()
    assert [(o["index"], o["code"]) for o in result["outcomes"]] == [
        (0, "checked_in"), (1, "checked_in"), (2, "checked_in"), (3, "checked_in"),
        (4, "ticket_cancelled"), (5, "checked_in"), (6, "invalid_ticket"),
        (7, "wrong_event"), (8, "scan_time_in_future"),
    ]  # fmt: skip
    assert (result["checked_in"], result["already_checked_in"], result["refused"]) == (5, 0, 4)
    rows = {r["registration_id"]: r for r in await db.fetch("SELECT * FROM check_ins")}
    assert len(rows) == 4
    assert rows[door.attendees[0]["registration"]]["scanned_at"] == now - timedelta(minutes=20)
    assert rows[door.attendees[3]["registration"]]["scanned_at"] == now - timedelta(hours=1)
    assert rows[door.attendees[3]["registration"]]["source"] == "offline"
    before = await snapshot(db), await db.fetch("SELECT * FROM check_ins ORDER BY id")
    again = await tokens_client.post(url, json=batch, headers=bearer(door.door_token))
    codes = [o["code"] for o in again.json()["outcomes"]]
    assert codes[:6] == ["already_checked_in"] * 4 + ["ticket_cancelled", "already_checked_in"]
    assert (await snapshot(db), await db.fetch("SELECT * FROM check_ins ORDER BY id")) == before


async def test_a_batch_takes_1000_scans_and_no_more(
    tokens_client: httpx.AsyncClient, database_url: str, db: Db
) -> None:
    door = await make_door(tokens_client, database_url, attendees=1)
    now = datetime.now(UTC)
    url = f"{API}/events/{door.event}/check-ins/batch"
    full = _scans(*[(door.code(0), now - timedelta(seconds=i)) for i in range(1000)])
    done = await tokens_client.post(url, json=full, headers=bearer(door.door_token))
    assert done.status_code == 200, done.text[:300]
    assert len(done.json()["outcomes"]) == 1000
    at = await db.fetchval("SELECT scanned_at FROM check_ins WHERE undone_at IS NULL")
    assert at == now - timedelta(seconds=999)
    over = _scans(*[(door.code(0), now)] * 1001)
    refused = await tokens_client.post(url, json=over, headers=bearer(door.door_token))
    assert (refused.status_code, refused.json()["code"]) == (422, "validation_failed")


async def test_door_tokens_check_in_at_their_event_only(
    tokens_client: httpx.AsyncClient, database_url: str, db: Db
) -> None:
    door = await make_door(tokens_client, database_url)
    other = await tokens_client.post(
        f"{API}/events/{door.other_event}/check-ins",
        json={"code": KEYS.sign(door.attendees[0]["registration"], door.other_event)},
        headers=bearer(door.door_token),
    )
    assert (other.status_code, other.json()["code"]) == (403, "forbidden")
    for method, path in [("GET", "/events"), ("GET", "/users/me"), ("GET", "/tokens"),
                         ("GET", f"/events/{door.event}/door-tokens")]:  # fmt: skip
        response = await tokens_client.request(
            method, f"{API}{path}", headers=bearer(door.door_token)
        )
        assert (response.status_code, response.json()["code"]) == (403, "forbidden"), path
    listed = await tokens_client.get(
        f"{API}/events/{door.event}/door-tokens", headers=bearer(door.organizer_token)
    )
    assert [(t["name"], t["check_in_event_id"]) for t in listed.json()] == [
        ("north door", door.event)
    ]
    mine = await tokens_client.get(f"{API}/tokens", headers=bearer(door.organizer_token))
    assert door.event in [t["check_in_event_id"] for t in mine.json()]
    expires = await db.fetchval(
        "SELECT expires_at - created_at FROM api_tokens WHERE id = $1", door.door_token_id
    )
    assert expires == timedelta(days=3)
    revoke = await tokens_client.delete(
        f"{API}/tokens/{door.door_token_id}", headers=bearer(door.organizer_token)
    )
    assert revoke.status_code == 200
    dead = await door.scan(tokens_client, door.code(0))
    assert (dead.status_code, dead.json()["code"]) == (401, "invalid_token")


async def test_twenty_scanners_one_ticket_one_check_in(
    tokens_client: httpx.AsyncClient, database_url: str, db: Db
) -> None:
    """20 scanners scan the same ticket at the same instant, 50 times over (a new ticket each
    round): exactly one `checked_in` each time, the other 19 `already_checked_in`."""
    door = await make_door(tokens_client, database_url, attendees=50)
    gate = asyncio.Event()

    async def scanner(code: str) -> tuple[int, str]:
        await gate.wait()
        response = await door.scan(tokens_client, code)
        return response.status_code, response.json()["code"]

    for i in range(50):
        gate.clear()
        tasks = [asyncio.create_task(scanner(door.code(i))) for _ in range(20)]
        await asyncio.sleep(0)  # all 20 wait at the gate
        gate.set()
        outcomes = sorted(await asyncio.gather(*tasks))
        assert outcomes == [(200, "already_checked_in")] * 19 + [(201, "checked_in")], i
    assert await live_check_ins(db) == 50
    assert await db.fetchval("SELECT count(*) FROM check_ins") == 50


async def test_retries_with_an_idempotency_key_are_safe_for_batches_and_door_tokens(
    tokens_client: httpx.AsyncClient, database_url: str, db: Db
) -> None:
    """A batch over 64 KiB with a key replays byte for byte; a replayed door token answer
    hands out a new secret that is a door token of the same event, never an ordinary one."""
    door = await make_door(tokens_client, database_url, attendees=2)
    now = datetime.now(UTC)
    batch = _scans(*[(door.code(i % 2), now - timedelta(seconds=i)) for i in range(600)])
    url = f"{API}/events/{door.event}/check-ins/batch"
    headers = {**bearer(door.door_token), "Idempotency-Key": "upload-1"}
    first = await tokens_client.post(url, json=batch, headers=headers)
    assert first.status_code == 200, first.text[:300]
    assert len(first.request.content) > 64 * 1024
    again = await tokens_client.post(url, json=batch, headers=headers)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    made_url = f"{API}/events/{door.event}/door-tokens"
    key = {**bearer(door.organizer_token), "Idempotency-Key": "door-2"}
    made = await tokens_client.post(made_url, json={"name": "gate 2"}, headers=key)
    replay = await tokens_client.post(made_url, json={"name": "gate 2"}, headers=key)
    assert replay.headers["idempotent-replayed"] == "true"
    old, new = made.json(), replay.json()
    assert new["token"] != old["token"]
    assert new["check_in_event_id"] == door.event
    assert (await door.scan(tokens_client, door.code(0), old["token"])).status_code == 401
    assert (await door.scan(tokens_client, door.code(0), new["token"])).status_code == 200
    elsewhere = await tokens_client.get(f"{API}/events", headers=bearer(new["token"]))
    assert elsewhere.status_code == 403
    scopes = await db.fetch(
        "SELECT check_in_event_id FROM api_tokens WHERE name = 'gate 2' ORDER BY id"
    )
    assert [r["check_in_event_id"] for r in scopes] == [door.event, door.event]
