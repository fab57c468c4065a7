"""CI series (issue 9): check-ins against a real uvicorn process, checked by CI1-CI5
(tests/reliability/checkins.py) and, for the seats, by the harness's I1-I8. With tokens on
(the series' default) the scanners hold door tokens and the cancellers their own tokens."""

from __future__ import annotations

import asyncio
import random

import pytest

from eventreg.ticketcodes import Keyring, private_from_seed
from tests.conftest import TICKET_SEED
from tests.reliability.checkins import (
    SummarySampler,
    check_check_ins,
    door_tokens,
    final_rows,
    scan,
)
from tests.reliability.harness import ApiFactory, Db, History, Sampler, make_events, make_users

pytestmark = pytest.mark.timeout(120)
KEYS = Keyring.of(private_from_seed(TICKET_SEED, "test"))


async def seat_everyone(db: Db, event: int, users: list[int]) -> dict[int, tuple[int, int]]:
    """Registrations for all `users` at `event`, straight in SQL: registration -> (user, event)."""
    rows = await db.fetch(
        "INSERT INTO registrations (event_id, user_id) SELECT $1, unnest($2::bigint[])"
        " RETURNING id, user_id",
        event,
        users,
    )
    await db.execute(
        "UPDATE events SET available_seats = available_seats - $2 WHERE id = $1", event, len(rows)
    )
    return {r["id"]: (r["user_id"], event) for r in rows}


async def test_a_thousand_tickets_many_scanners_and_cancellations(
    api_factory: ApiFactory, tdb: Db
) -> None:
    """CI1: 1,000 tickets, 20 scanners (every ticket scanned by 1 to 3 of them, in random
    order) while 2 cancellers cancel 150 of them. The summary, sampled every 20 ms from the
    database and over HTTP, never shows more checked in than registered; at the end the
    live check-ins are exactly the distinct tickets that got `checked_in`."""
    api = await api_factory(TICKET_SIGNING_KEY=TICKET_SEED)
    (event,) = await make_events(tdb, [1000])
    tickets = await seat_everyone(tdb, event, await make_users(tdb, 1000))
    doors = await door_tokens(tdb, event, 21)  # 20 scanners and the summary's reader
    rng = random.Random(9)
    scans = [r for r in tickets for _ in range(rng.randint(1, 3))]
    rng.shuffle(scans)
    doomed = rng.sample(sorted(tickets), 150)
    history = History()
    async with api.client() as client, api.client() as door_view:
        queue = iter(scans)

        async def scanner(proc: int) -> None:
            for registration in queue:
                code = KEYS.sign(registration, event)
                await scan(history, client, code, registration, event, proc, doors[proc])

        async def canceller(proc: int, mine: list[int]) -> None:
            for registration in mine:
                await history.cancel(client, tickets[registration][0], event, proc=proc)

        async with (
            SummarySampler(api.database_url, [event], door_view, token=doors[20]) as summaries,
            Sampler(api.database_url, [event]) as seats,
        ):
            await asyncio.gather(
                *(scanner(p) for p in range(20)),
                canceller(20, doomed[::2]), canceller(21, doomed[1::2]),
            )  # fmt: skip
    outcomes = history.codes("scan")
    print(f"\nCI1: {len(scans)} scans: {dict(outcomes)}; {summaries.samples} db and "
          f"{summaries.http_samples} http summaries, {seats.samples} seat samples")  # fmt: skip
    assert summaries.violations + seats.violations == []
    assert summaries.http_samples > 0
    assert {code for _, code in outcomes} <= {
        "checked_in",
        "already_checked_in",
        "ticket_cancelled",
    }
    assert all(status in (200, 201, 409) for status, _ in outcomes)
    assert [op for op in history.of("cancel") if op.status != 200] == []
    rows = await final_rows(tdb)
    assert check_check_ins(rows, history, tickets) == []
    first = {op.user for op in history.of("scan", "ok") if op.code == "checked_in"}
    assert {r["registration_id"] for r in rows} == first  # the distinct tickets scanned in
    assert len(first) == len(rows) > 850
    still = await tdb.fetchval(
        "SELECT count(*) FROM check_ins c JOIN registrations r ON r.id = c.registration_id"
        " WHERE r.status = 'active' AND c.undone_at IS NULL"
    )
    async with api.client() as client:
        url = f"/api/v1/events/{event}/check-ins/summary"
        headers = {"Authorization": f"Bearer {doors[20]}"}
        summary = (await client.get(url, headers=headers)).json()
    assert (summary["registered"], summary["checked_in"]) == (850, still)


async def test_the_checker_sees_a_second_check_in(api_factory: ApiFactory, tdb: Db) -> None:
    """The canary: a ticket checked in twice behind the application's back (the unique index
    dropped first) is reported by CI1, in the samples and at the end."""
    (event,) = await make_events(tdb, [5])
    tickets = await seat_everyone(tdb, event, await make_users(tdb, 2))
    registration = next(iter(tickets))
    await tdb.execute("DROP INDEX check_ins_one_live_per_registration")
    for _ in range(2):
        await tdb.execute(
            "INSERT INTO check_ins (registration_id, event_id, scanned_at, source)"
            " VALUES ($1, $2, now(), 'scan')",
            registration,
            event,
        )
    api = await api_factory(TICKET_SIGNING_KEY=TICKET_SEED)
    async with SummarySampler(api.database_url, [event]) as sampler:
        await asyncio.sleep(0.1)
    assert any(v.startswith("CI1 sample") for v in sampler.violations)
    found = check_check_ins(await final_rows(tdb), History(), tickets)
    assert found == [f"CI1: registration {registration} has 2 live check-ins"]
