"""Forged and tampered ticket codes (issue 9): every one gets its documented refusal, and
nothing changes in the database."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from eventreg.ticketcodes import InvalidCode, Keyring, b64url, new_private_key
from tests.bad_input import snapshot
from tests.tickets import API, KEYS, Db, bearer, live_check_ins, make_door

# What a flipped bit in each part may turn into (a hex digit flipped to another hex digit
# names another key; a digit flipped to another digit breaks the signature).
PART_REASONS = [
    {"bad format"},
    {"bad format", "unknown key"},
    {"bad format", "bad signature"},
    {"bad format", "bad signature"},
    {"bad format", "bad signature"},
]


def flips(code: str) -> list[tuple[int, str]]:
    """(part, code) for every single-bit change of every character (7-bit ASCII)."""
    out = []
    for i, char in enumerate(code):
        part = code[:i].count(".") if char != "." else -1  # -1: a separator
        for bit in range(7):
            out.append((part, code[:i] + chr(ord(char) ^ (1 << bit)) + code[i + 1 :]))
    return out


def test_every_flipped_bit_is_refused_with_the_reason_of_its_part() -> None:
    code = KEYS.sign(123456, 789)
    seen: dict[int, set[str]] = {}
    for part, forged in flips(code):
        with pytest.raises(InvalidCode) as refused:
            KEYS.verify(forged)
        seen.setdefault(part, set()).add(refused.value.reason)
        if part >= 0:
            assert refused.value.reason in PART_REASONS[part], (part, forged)
        else:
            assert refused.value.reason == "bad format"
    # every kind of refusal happens somewhere, and the signature's spare bits count too
    assert set().union(*seen.values()) == {"bad format", "unknown key", "bad signature"}
    last = code[:-1] + b64url(b"\x00" * 64)[-1]  # 'A': same bytes only if the spare bits were 0
    if last != code:
        with pytest.raises(InvalidCode):
            KEYS.verify(last)


async def test_flipped_codes_through_the_api_change_nothing(
    tokens_client: httpx.AsyncClient, database_url: str, db: Db
) -> None:
    door = await make_door(tokens_client, database_url, attendees=1)
    code = door.code(0)
    before = await snapshot(db)
    forged = [f for _, f in flips(code)]
    now = datetime.now(UTC).isoformat()
    url = f"{API}/events/{door.event}/check-ins/batch"
    for start in range(0, len(forged), 1000):
        scans = [{"code": f, "scanned_at": now} for f in forged[start : start + 1000]]
        response = await tokens_client.post(
            url, json={"scans": scans}, headers=bearer(door.door_token)
        )
        assert response.status_code == 200, response.text[:300]
        assert {(o["status"], o["code"]) for o in response.json()["outcomes"]} == {
            (422, "invalid_ticket")
        }
    for part in range(5):  # one flip per part through the single scan, too
        sample = next(f for p, f in flips(code) if p == part)
        single = await door.scan(tokens_client, sample)
        assert (single.status_code, single.json()["code"]) == (422, "invalid_ticket"), sample
    assert await snapshot(db) == before
    assert await live_check_ins(db) == 0


async def test_other_keys_missing_registrations_and_other_events_are_refused(
    tokens_client: httpx.AsyncClient, database_url: str, db: Db
) -> None:
    door = await make_door(tokens_client, database_url, attendees=1)
    rid = door.attendees[0]["registration"]
    stranger = Keyring.of(new_private_key())
    theirs = stranger.sign(rid, door.event)
    posing = f"{KEYS.sign(rid, door.event).rsplit('.', 1)[0]}.{theirs.rsplit('.', 1)[1]}"
    cases = [
        (theirs, 422, "invalid_ticket", "unknown key"),
        (posing, 422, "invalid_ticket", "bad signature"),  # our key id, their signature
        (KEYS.sign(rid + 1000, door.event), 422, "invalid_ticket", "no registration"),
        (KEYS.sign(rid, door.other_event), 409, "wrong_event", f"event {door.other_event}"),
    ]
    before = await snapshot(db)
    for code, status, problem, said in cases:
        response = await door.scan(tokens_client, code, door.organizer_token)
        body = response.json()
        assert (response.status_code, body["code"]) == (status, problem), code
        assert said in body["detail"]
    # the genuine code, replayed at the other event by its organizer: still wrong_event
    replay = await tokens_client.post(
        f"{API}/events/{door.other_event}/check-ins", json={"code": door.code(0)},
        headers=bearer(door.organizer_token),
    )  # fmt: skip
    assert (replay.status_code, replay.json()["code"]) == (409, "wrong_event")
    assert await snapshot(db) == before
