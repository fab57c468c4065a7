"""C series: races against a real uvicorn process, checked by the I1-I8 checker.

tests/test_registrations.py has the basic in-process races; these go further: repeated
rounds on fresh events, a sampler during load, the full checker, hygiene, and a canary
proving the checker sees an oversell.
"""

from __future__ import annotations

import asyncio
import random

import asyncpg
import pytest

from tests.reliability.harness import (
    API,
    ApiFactory,
    ApiProcess,
    Db,
    History,
    Op,
    Sampler,
    bearer,
    check,
    make_events,
    make_users,
    organizer_of,
    read_final,
    sign_in,
    verify,
)

pytestmark = pytest.mark.timeout(60)
# Every test here runs with tokens on (the `auth` fixture); the capacity storm also runs
# with them off, so the reference mode keeps a real-process race of its own.
BOTH_WAYS = pytest.mark.parametrize("auth", ["tokens", "open"])


def assert_clean(violations: list[str]) -> None:
    assert violations == [], "\n".join(violations)


async def api_pids(db: Db) -> set[int]:
    rows = await db.fetch(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1", "eventreg"
    )
    return {r["pid"] for r in rows}


async def test_hooks_are_inert_without_the_env_var(api_factory: ApiFactory, tdb: Db) -> None:
    """The same headers that hold a lock for 3 s and kill a backend do nothing when off."""
    api = await api_factory(EVENTREG_TEST_HOOKS="0")
    (event,), users = await make_events(tdb, [5]), await make_users(tdb, 4)
    history = History()
    headers = {"X-Test-Delay-After-Lock": "3000", "X-Test-Terminate-Before-Release": "1"}
    async with api.client() as client:
        assert (await history.register(client, users[0], event)).status == 201
        pids_before = await api_pids(tdb)  # the pool's one connection, reused below
        ops = [await history.register(client, u, event, headers=headers) for u in users[1:]]
        pids_after = await api_pids(tdb)
    assert [op.status for op in ops] == [201] * 3
    assert max(op.t_complete - op.t_invoke for op in ops) < 2.5  # no 3 s sleep
    assert len(pids_before) == 1
    assert pids_after == pids_before  # and no backend was terminated
    report = await verify(history, tdb, api, initial={event: 5})
    assert_clean(report.violations)


async def test_hooks_work_when_enabled(api: ApiProcess, tdb: Db) -> None:
    """Both hooks fire with EVENTREG_TEST_HOOKS=1: a 600 ms hold, and a new backend after."""
    (event,), users = await make_events(tdb, [5]), await make_users(tdb, 2)
    history = History()
    async with api.client() as client:
        delayed = await history.register(
            client, users[0], event, headers={"X-Test-Delay-After-Lock": "600"}
        )
        pids_before = await api_pids(tdb)
        killed = await history.register(
            client, users[1], event, headers={"X-Test-Terminate-Before-Release": "1"}
        )
        pids_after = await api_pids(tdb)
    assert delayed.status == 201
    assert delayed.t_complete - delayed.t_invoke >= 0.6
    assert killed.status == 201
    assert not pids_before & pids_after


async def test_each_user_acts_only_with_its_own_token(api: ApiProcess, tdb: Db) -> None:
    """C0: the series really runs with tokens on: no token is 401 and another user's is 403,
    neither taking a seat; the user's own is 201."""
    (event,), (user, other) = await make_events(tdb, [5]), await make_users(tdb, 2)
    body = {"user_id": user, "event_id": event}
    async with api.client() as client:
        missing = await client.post(f"{API}/registrations", json=body)
        foreign = await client.post(f"{API}/registrations", json=body, headers=bearer(other))
        own = await client.post(f"{API}/registrations", json=body, headers=bearer(user))
    assert (missing.status_code, foreign.status_code, own.status_code) == (401, 403, 201)
    final = await read_final(tdb)
    assert final.active == {(user, event): 1}
    assert final.events[event] == (5, 4)


async def test_last_seat_race(api: ApiProcess, tdb: Db) -> None:
    """C1: capacity 1, 50 distinct users at once, 12 rounds: exactly 1x201 and 49x409 each."""
    events = await make_events(tdb, [1] * 12)
    users = await make_users(tdb, 50)
    history = History()
    async with api.client() as client, Sampler(api.database_url, events) as sampler:
        for event in events:
            ops = await asyncio.gather(*(history.register(client, u, event) for u in users))
            assert sorted(op.status or 0 for op in ops) == [201] + [409] * 49
            assert {op.code for op in ops if op.status == 409} == {"event_full"}
    report = await verify(history, tdb, api, initial=dict.fromkeys(events, 1), sampler=sampler)
    assert_clean(report.violations)
    assert sampler.samples > 0


@BOTH_WAYS
async def test_capacity_storm(api: ApiProcess, tdb: Db) -> None:
    """C2: capacity 50, 200 concurrent distinct users: exactly 50x201 and 150x409 (I8 strict)."""
    (event,), users = await make_events(tdb, [50]), await make_users(tdb, 200)
    history = History()
    async with api.client() as client, Sampler(api.database_url, [event]) as sampler:
        await sign_in(api, client, users)
        await asyncio.gather(*(history.register(client, u, event) for u in users))
    assert history.codes() == {(201, None): 50, (409, "event_full"): 150}
    report = await verify(history, tdb, api, initial={event: 50}, sampler=sampler)
    assert_clean(report.violations)


async def test_duplicate_storm(api: ApiProcess, tdb: Db) -> None:
    """C3: one user, one event, 200 concurrent POSTs: one seat, one row, the rest 409."""
    (event,), (user,) = await make_events(tdb, [50]), await make_users(tdb, 1)
    history = History()
    async with api.client() as client:
        await sign_in(api, client, [user])
        await asyncio.gather(*(history.register(client, user, event) for _ in range(200)))
    assert history.codes() == {(201, None): 1, (409, "already_registered"): 199}
    final = await read_final(tdb)
    assert final.events[event] == (50, 49)
    assert final.active == {(user, event): 1}
    assert_clean((await verify(history, tdb, api, initial={event: 50})).violations)


async def test_double_cancel_storm(api: ApiProcess, tdb: Db) -> None:
    """C4: 20 concurrent cancels of one registration, 10 rounds: exactly one 200 each."""
    (event,), users = await make_events(tdb, [100]), await make_users(tdb, 10)
    history = History()
    async with api.client() as client:
        for user in users:
            assert (await history.register(client, user, event)).status == 201
            ops = await asyncio.gather(*(history.cancel(client, user, event) for _ in range(20)))
            assert sorted(op.status or 0 for op in ops) == [200] + [404] * 19
            assert {op.code for op in ops if op.status == 404} == {"not_registered"}
    final = await read_final(tdb)
    assert final.events[event] == (100, 100)
    assert not final.active
    assert_clean((await verify(history, tdb, api, initial={event: 100})).violations)


async def test_cancel_not_registered(api: ApiProcess, tdb: Db) -> None:
    """C5: cancelling a pair with no active registration is 404 and changes nothing."""
    (event,), (user, other) = await make_events(tdb, [3]), await make_users(tdb, 2)
    history = History()
    async with api.client() as client:
        never = await history.cancel(client, user, event)
        await history.register(client, other, event)
        await history.cancel(client, other, event)
        again = await history.cancel(client, other, event)
    assert (never.status, never.code) == (404, "not_registered")
    assert (again.status, again.code) == (404, "not_registered")
    assert (await read_final(tdb)).events[event] == (3, 3)
    assert_clean((await verify(history, tdb, api, initial={event: 3})).violations)


async def test_reregister_after_cancel(api: ApiProcess, tdb: Db) -> None:
    """C6: register -> cancel -> register, for 20 users at once: one active row each."""
    (event,), users = await make_events(tdb, [20]), await make_users(tdb, 20)
    history = History()

    async def cycle(user: int) -> list[Op]:
        return [
            await history.register(client, user, event),
            await history.cancel(client, user, event),
            await history.register(client, user, event),
        ]

    async with api.client() as client:
        results = await asyncio.gather(*(cycle(u) for u in users))
    assert all([op.status for op in ops] == [201, 200, 201] for ops in results)
    final = await read_final(tdb)
    assert final.active == {(u, event): 1 for u in users}
    assert final.cancelled == {(u, event): 1 for u in users}
    assert_clean((await verify(history, tdb, api, initial={event: 20})).violations)


async def test_register_cancel_interleave_same_user(api: ApiProcess, tdb: Db) -> None:
    """C7: 8 workers, 200 random register/cancel ops on one pair: no deadlock, <= 1 active."""
    (event,), (user,) = await make_events(tdb, [2]), await make_users(tdb, 1)
    history = History()
    rng = random.Random(7)
    plan = [rng.random() < 0.5 for _ in range(200)]

    async def worker(w: int) -> None:
        for i in range(w, len(plan), 8):
            if plan[i]:
                await history.register(client, user, event, proc=w)
            else:
                await history.cancel(client, user, event, proc=w)

    async with api.client() as client, Sampler(api.database_url, [event]) as sampler:
        await asyncio.gather(*(worker(w) for w in range(8)))
    # a deadlock would be a 503 here and a nonzero pg_stat_database.deadlocks in verify()
    assert "error" not in history.outcomes()
    assert (await read_final(tdb)).active[(user, event)] <= 1
    report = await verify(history, tdb, api, initial={event: 2}, sampler=sampler)
    assert_clean(report.violations)


async def test_capacity_edit_race(api: ApiProcess, tdb: Db) -> None:
    """C8: 4 workers change capacity while 30 users register; I1/I2 hold in every sample."""
    (event,), users = await make_events(tdb, [20]), await make_users(tdb, 30)
    organizer = await organizer_of(tdb, event)
    history = History()
    rng = random.Random(8)

    async def editor(w: int) -> None:
        for _ in range(15):
            capacity = rng.randint(5, 40)
            op = await history.set_capacity(client, event, capacity, organizer=organizer,
                                            proc=100 + w)  # fmt: skip
            if op.status == 409:
                assert op.code == "capacity_below_registrations"
            else:
                assert op.status == 200, op

    async with api.client() as client, Sampler(api.database_url, [event]) as sampler:
        await asyncio.gather(
            *(editor(w) for w in range(4)),
            *(history.register(client, u, event) for u in users),
        )
    final = await read_final(tdb)
    capacity, seats = final.events[event]
    last_ok = max(history.of("capacity", "ok"), key=lambda op: op.t_complete, default=None)
    assert last_ok is None or capacity in {op.value for op in history.of("capacity", "ok")}
    assert capacity == seats + sum(final.active.values())
    report = await verify(history, tdb, api, initial={event: 20}, sampler=sampler)
    assert_clean(report.violations)
    # A refused decrease changed nothing: every 409 was for a capacity below the active count
    for op in history.of("capacity", "fail"):
        assert op.value < 30


async def test_storm_at_serializable(api_factory: ApiFactory, tdb: Db, target_url: str) -> None:
    """C10: C2 with every transaction SERIALIZABLE: no 500; 40001 becomes 503; invariants."""
    name = await tdb.fetchval("SELECT current_database()")
    await tdb.execute(f'ALTER DATABASE "{name}" SET default_transaction_isolation = serializable')
    api = await api_factory()
    (event,), users = await make_events(tdb, [50]), await make_users(tdb, 200)
    history = History()
    async with api.client() as client, Sampler(api.database_url, [event]) as sampler:
        await asyncio.gather(*(history.register(client, u, event) for u in users))
    statuses = history.statuses()
    assert set(statuses) <= {201, 409, 503}, statuses
    assert statuses[201] <= 50
    print(f"\nC10: at SERIALIZABLE: {dict(statuses)}")
    report = await verify(history, tdb, api, initial={event: 50}, sampler=sampler)
    assert_clean(report.violations)


@pytest.mark.slow
async def test_race_canary(tdb: Db, target_url: str) -> None:
    """C9: a naive count-then-insert (200 ms between) MUST be reported as an oversell.

    If this test fails, the checker is blind and every other green result means nothing.
    """
    (event,), users = await make_events(tdb, [47]), await make_users(tdb, 200)
    history = History()
    pool = await asyncpg.create_pool(target_url, min_size=50, max_size=50)

    async def naive_register(user: int) -> None:
        op = Op(0, "register", user, event, history.now())
        history.ops.append(op)
        async with pool.acquire() as conn, conn.transaction():
            taken = await conn.fetchval(
                "SELECT count(*) FROM registrations WHERE event_id = $1 AND status = 'active'",
                event,
            )
            if taken >= 47:
                op.type, op.status, op.code = "fail", 409, "event_full"
            else:
                await asyncio.sleep(0.2)
                await conn.execute(
                    "INSERT INTO registrations (event_id, user_id) VALUES ($1, $2)", event, user
                )
                await conn.execute(
                    "UPDATE events SET available_seats = $2 - 1 WHERE id = $1", event, 47 - taken
                )
                op.type, op.status = "ok", 201
        op.t_complete = history.now()

    try:
        await asyncio.gather(*(naive_register(u) for u in users))
    finally:
        await pool.close()
    sold = sum(op.status == 201 for op in history.ops)
    report = check(history, await read_final(tdb), initial={event: 47})
    print(f"\nC9: the naive path sold {sold} of 47 seats; checker: {report.violations[:2]}")
    assert sold > 47, "the naive path did not oversell; the canary proves nothing"
    assert any(v.startswith("I1") for v in report.violations), report.violations
