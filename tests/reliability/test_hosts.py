"""H series: two API processes on two ports against one PostgreSQL, as two hosts behind a
load balancer would be (issue 13, item 4). Every scenario sends its requests alternately
to both, so the hosts race each other; the I1-I8 checker judges the combined history.

Nothing coordinates the hosts but the database: each forms its own admission groups, and
the event's row lock orders them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
import pytest

from tests.reliability.harness import (
    ApiFactory,
    ApiProcess,
    Db,
    History,
    Report,
    Sampler,
    api_sessions,
    check,
    deadlocks,
    hygiene,
    make_events,
    make_users,
    read_final,
    sign_in,
)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def hosts(api_factory: ApiFactory) -> list[ApiProcess]:
    return [await api_factory(), await api_factory()]


@asynccontextmanager
async def clients(
    hosts: Sequence[ApiProcess], users: Sequence[int] = ()
) -> AsyncIterator[list[httpx.AsyncClient]]:
    """A client per host; with tokens on, `users` have used their tokens on each host
    first (harness.sign_in), so the storms that assert exact outcomes race for seats, not
    for token lookups."""
    async with AsyncExitStack() as stack:
        found = [await stack.enter_async_context(h.client()) for h in hosts]
        for host, client in zip(hosts, found, strict=True):
            await sign_in(host, client, users)
        yield found


async def verify_hosts(
    history: History, db: Db, hosts: Sequence[ApiProcess], *, initial: dict[int, int],
    sampler: Sampler | None = None,
) -> Report:  # fmt: skip
    """harness.verify for several API processes: I1-I8, no 500, samples, hygiene against
    their pools together, every host's log, then deadlocks once all have stopped."""
    report = check(history, await read_final(db), initial=initial)
    report.violations += sampler.violations if sampler else []
    report.violations += await hygiene(db, sum(h.pool_max for h in hosts))
    for h in hosts:
        report.violations += [f"log {h.port}: {line}" for line in h.bad_log_lines()]
        await h.stop()
    for _ in range(100):
        if (await api_sessions(db))[0] == 0:
            break
        await asyncio.sleep(0.02)
    if n := await deadlocks(db):
        report.add("hygiene", f"{n} deadlocks detected")
    return report


def assert_clean(report: Report) -> None:
    assert report.violations == [], "\n".join(report.violations)


async def test_last_seat_race_across_hosts(hosts: list[ApiProcess], tdb: Db) -> None:
    """H1: capacity 1, 50 users at once, half through each host, 8 rounds: one seat each."""
    events = await make_events(tdb, [1] * 8)
    users = await make_users(tdb, 50)
    history = History()
    async with (
        clients(hosts, users) as (a, b),
        Sampler(hosts[0].database_url, events) as sampler,
    ):
        for event in events:
            ops = await asyncio.gather(
                *(history.register((a, b)[i % 2], u, event) for i, u in enumerate(users))
            )
            assert sorted(op.status or 0 for op in ops) == [201] + [409] * 49
    report = await verify_hosts(
        history, tdb, hosts, initial=dict.fromkeys(events, 1), sampler=sampler
    )
    assert_clean(report)
    assert sampler.samples > 0


async def test_duplicate_storm_across_hosts(hosts: list[ApiProcess], tdb: Db) -> None:
    """H2: one user, one event, 200 POSTs split over both hosts: one seat, one row."""
    (event,), (user,) = await make_events(tdb, [50]), await make_users(tdb, 1)
    history = History()
    async with clients(hosts, [user]) as (a, b):
        await asyncio.gather(*(history.register((a, b)[i % 2], user, event) for i in range(200)))
    assert history.codes() == {(201, None): 1, (409, "already_registered"): 199}
    final = await read_final(tdb)
    assert final.events[event] == (50, 49)
    assert final.active == {(user, event): 1}
    assert_clean(await verify_hosts(history, tdb, hosts, initial={event: 50}))


async def test_cancel_storm_across_hosts(hosts: list[ApiProcess], tdb: Db) -> None:
    """H3: 20 concurrent cancels of one registration, split over both hosts, 8 rounds:
    exactly one 200 each time, and the seat comes back once."""
    (event,), users = await make_events(tdb, [100]), await make_users(tdb, 8)
    history = History()
    async with clients(hosts) as (a, b):
        for n, user in enumerate(users):
            assert (await history.register((a, b)[n % 2], user, event)).status == 201
            ops = await asyncio.gather(
                *(history.cancel((a, b)[i % 2], user, event) for i in range(20))
            )
            assert sorted(op.status or 0 for op in ops) == [200] + [404] * 19
    final = await read_final(tdb)
    assert final.events[event] == (100, 100)
    assert not final.active
    assert_clean(await verify_hosts(history, tdb, hosts, initial={event: 100}))


async def test_rush_across_hosts(hosts: list[ApiProcess], tdb: Db) -> None:
    """H4: 400 users for 100 seats, all released at once through both hosts: exactly
    100 seats sold, the rest told `event_full`, never a false full (I8)."""
    (event,), users = await make_events(tdb, [100]), await make_users(tdb, 400)
    history = History()
    gate = asyncio.Event()

    async def one(client: httpx.AsyncClient, user: int) -> None:
        await gate.wait()
        await history.register(client, user, event)

    async with clients(hosts) as (a, b), Sampler(hosts[0].database_url, [event]) as sampler:
        tasks = [asyncio.create_task(one((a, b)[i % 2], u)) for i, u in enumerate(users)]
        await asyncio.sleep(0.1)
        gate.set()
        await asyncio.gather(*tasks)
    codes = history.codes()
    assert codes[(201, None)] == 100, codes
    assert set(codes) <= {(201, None), (409, "event_full"), (503, "service_unavailable")}
    print(f"\nH4: {dict(codes)}")
    assert_clean(await verify_hosts(history, tdb, hosts, initial={event: 100}, sampler=sampler))
