"""Q series: the waitlist under storms and faults, through a real API process (issue 10).

Workers join queues, take seats, cancel and move capacities at random while samplers
check I1/I2 (seats) and I9-I11 (the queue) every ~20 ms. Afterwards the same invariants
hold on the final state, and no acknowledged place is lost: an entry answered 201 or 202
whose later operations all definitely failed is still live (holding a seat or waiting).
The fault variant restarts PostgreSQL, fast and by crash, in the middle of it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field

import httpx
import pytest

from tests.reliability.conftest import FaultPg
from tests.reliability.harness import (
    ApiFactory,
    Db,
    Sampler,
    connect,
    make_events,
    make_users,
)
from tests.reliability.queue import QueueSampler, queue_violations

API = "/api/v1"


@dataclass
class Ledger:
    """Per (user, event): each operation in order, as (kind, status or None if unknown)."""

    ops: dict[tuple[int, int], list[tuple[str, int | None]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    statuses: dict[int | None, int] = field(default_factory=lambda: defaultdict(int))

    def record(self, pair: tuple[int, int], kind: str, status: int | None) -> None:
        self.ops[pair].append((kind, status))
        self.statuses[status] += 1

    def must_be_live(self) -> list[tuple[int, int]]:
        """Pairs whose last success was a join and whose every later operation failed
        definitely (a 4xx): the entry has to be there."""
        found = []
        for pair, ops in self.ops.items():
            last = max((i for i, (k, s) in enumerate(ops) if k == "join" and s in (201, 202)),
                       default=None)  # fmt: skip
            if last is None:
                continue
            if all(s is not None and 400 <= s < 500 for _, s in ops[last + 1 :]):
                found.append(pair)
        return found


async def storm(
    base_url: str, events: list[int], users: list[int], seconds: float, seed: int
) -> Ledger:
    ledger, rng = Ledger(), random.Random(seed)
    deadline = time.monotonic() + seconds

    async def one(client: httpx.AsyncClient) -> None:
        user, event = rng.choice(users), rng.choice(events)
        roll = rng.random()
        try:
            if roll < 0.55:
                body = {"user_id": user, "event_id": event, "waitlist": roll < 0.45}
                r = await client.post(f"{API}/registrations", json=body)
                ledger.record((user, event), "join", r.status_code)
            elif roll < 0.9:
                body = {"user_id": user, "event_id": event}
                r = await client.request("DELETE", f"{API}/registrations", json=body)
                ledger.record((user, event), "cancel", r.status_code)
            else:
                capacity = rng.randint(5, 25)
                await client.patch(f"{API}/events/{event}", json={"capacity": capacity})
        except httpx.TransportError:
            if roll < 0.9:
                ledger.record((user, event), "join" if roll < 0.55 else "cancel", None)

    async def worker() -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
            while time.monotonic() < deadline:
                await one(client)

    await asyncio.gather(*(worker() for _ in range(24)))
    return ledger


async def assert_whole(tdb: Db, events: list[int], ledger: Ledger) -> None:
    assert await queue_violations(tdb, events) == []
    inconsistent = await tdb.fetch(
        "SELECT event_id FROM event_occupancy WHERE NOT consistent AND event_id = ANY($1)", events
    )
    assert inconsistent == []
    live = {
        (r["user_id"], r["event_id"])
        for r in await tdb.fetch(
            "SELECT user_id, event_id FROM registrations WHERE status IN ('active', 'waitlisted')"
        )
    }
    lost = [pair for pair in ledger.must_be_live() if pair not in live]
    assert lost == [], f"acknowledged entries lost: {lost[:10]}"


async def test_queue_storm(api_factory: ApiFactory, tdb: Db) -> None:
    """Q1: 24 workers join, cancel and move capacities on 4 small events for 6 s."""
    api = await api_factory(EVENTREG_AUTH="open")
    events, users = await make_events(tdb, [10] * 4), await make_users(tdb, 120)
    async with (
        Sampler(api.database_url, events) as seats,
        QueueSampler(api.database_url, events) as queue,
    ):
        ledger = await storm(api.base_url, events, users, seconds=6, seed=9)
    print(f"\nQ1: {dict(ledger.statuses)}; {queue.samples} queue samples")
    assert queue.samples > 20
    assert queue.violations == []
    assert seats.violations == []
    assert ledger.statuses[202] > 0  # the queues were used
    assert 500 not in ledger.statuses
    promoted = await tdb.fetchval(
        "SELECT count(*) FROM registrations WHERE promoted_at IS NOT NULL"
    )
    assert promoted > 0  # and promoted from
    await assert_whole(tdb, events, ledger)


@pytest.mark.fault
@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_queue_through_a_restart(
    fault_pg: FaultPg, fault_database_url: str, api_factory: ApiFactory, mode: str
) -> None:
    """Q2: the storm while PostgreSQL restarts (`fast`) or crashes (`immediate`) at 2 s."""
    api = await api_factory(url=fault_database_url, EVENTREG_AUTH="open")
    async with connect(fault_database_url) as db:
        events, users = await make_events(db, [10] * 4), await make_users(db, 120)

    async def fault() -> None:
        await asyncio.sleep(2)
        await asyncio.to_thread(fault_pg.cluster.restart, mode)

    ledger, _ = await asyncio.gather(storm(api.base_url, events, users, 6, seed=11), fault())
    print(f"\nQ2 {mode}: {dict(ledger.statuses)}")
    assert ledger.statuses[503] + ledger.statuses[None] > 0  # the fault was felt
    assert 500 not in ledger.statuses
    async with connect(fault_database_url) as db:
        await assert_whole(db, events, ledger)
