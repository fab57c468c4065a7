"""F series: backends killed, locks held, timeouts, pool exhaustion, disconnects, P1.

This module has a PostgreSQL cluster of its own (see `fault_pg`), so killing sessions
here never disturbs other tests. Every failure must be a 503 with Retry-After, never a
500, and never a 201 for a transaction that did not commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import pytest

from eventreg import testhooks
from eventreg.app import app_state, create_pool
from eventreg.caller import OPEN
from eventreg.config import Settings
from eventreg.db import AppState, connection, registrations
from eventreg.errors import ApiError
from tests.reliability.harness import (
    BAD_LOG_LINES,
    ApiFactory,
    ApiProcess,
    Db,
    History,
    Op,
    api_sessions,
    connect,
    make_events,
    make_users,
    read_final,
    verify,
)

pytestmark = [pytest.mark.fault, pytest.mark.timeout(60)]
# Tokens on (the `auth` fixture), except where a test's latency bound counts one wait for a
# pooled connection per request: a token not yet in the worker's cache is looked up on a
# pooled connection first, so such a request may wait twice (see tests/README.md).
ONE_POOL_WAIT = pytest.mark.parametrize("auth", ["open"])

IDLE_TX = "idle in transaction%"


@pytest.fixture
def target_url(fault_database_url: str) -> str:
    return fault_database_url


def assert_clean(violations: list[str]) -> None:
    assert violations == [], "\n".join(violations)


async def terminate(db: Db, state: str = "%") -> int:
    """pg_terminate_backend on this database's eventreg sessions whose state is LIKE `state`."""
    killed: int = await db.fetchval(
        """SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
            WHERE datname = current_database() AND application_name = $1 AND state LIKE $2""",
        "eventreg",
        state,
    )
    return killed


@contextlib.asynccontextmanager
async def hold_row_lock(url: str, event: int) -> AsyncIterator[None]:
    """Another session holds FOR UPDATE on the event until the block exits."""
    async with connect(url) as conn, conn.transaction():
        await conn.execute("SELECT id FROM events WHERE id = $1 FOR UPDATE", event)
        yield


async def has_idle_tx(db: Db, at_least: int = 1) -> bool:
    return (await api_sessions(db))[1] >= at_least


async def wait_until(predicate: Callable[[], Awaitable[bool]], seconds: float) -> float:
    """Seconds until `predicate()` held, or raise if it did not within `seconds`."""
    start = time.monotonic()
    while not await predicate():
        if time.monotonic() - start > seconds:
            raise AssertionError(f"condition not reached in {seconds} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def test_terminate_backend_mid_tx(api: ApiProcess, tdb: Db) -> None:
    """F1: kill backends idle in transaction: victims 503, nothing half-done, then all 201."""
    events, users = await make_events(tdb, [1] * 40), await make_users(tdb, 40)
    history = History()
    delay = {"X-Test-Delay-After-Lock": "1000"}
    async with api.client() as client:
        batch = [
            history.register(client, u, e, headers=delay)
            for u, e in zip(users[:20], events[:20], strict=True)
        ]
        load = asyncio.gather(*batch)
        await wait_until(lambda: has_idle_tx(tdb, 5), 5)
        killed = await terminate(tdb, IDLE_TX)
        first = await load
        t_after = time.monotonic()
        pairs = zip(users[20:], events[20:], strict=True)
        second = await asyncio.gather(*(history.register(client, u, e) for u, e in pairs))
        assert time.monotonic() - t_after <= 2
    statuses = sorted(op.status or 0 for op in first)
    print(f"\nF1: killed {killed} mid-transaction -> {dict(History(list(first)).codes())}")
    assert killed >= 1
    assert set(statuses) <= {201, 503}, statuses
    assert statuses.count(503) <= killed
    assert [op.status for op in second] == [201] * 20
    report = await verify(history, tdb, api, initial=dict.fromkeys(events, 1))
    assert_clean(report.violations)
    assert report.recovered == 0  # a 503 here was a rollback, never a hidden commit


async def test_terminate_idle_pool_conns(api: ApiProcess, tdb: Db) -> None:
    """F2: kill every idle pooled backend between requests: <= 1 failure each, pool refills."""
    events, users = await make_events(tdb, [100]), await make_users(tdb, 60)
    history = History()
    async with api.client() as client:
        await asyncio.gather(*(history.register(client, u, events[0]) for u in users[:20]))
        killed = await terminate(tdb, "idle")
        await asyncio.gather(*(history.register(client, u, events[0]) for u in users[20:40]))
        after = [await history.register(client, u, events[0]) for u in users[40:]]
    assert killed >= 1
    failures = [op for op in history.ops if op.type != "ok"]
    print(f"\nF2: killed {killed} idle pooled backends -> {len(failures)} failures")
    assert len(failures) <= killed
    assert all(op.status == 503 for op in failures)
    assert all(op.status == 201 for op in after)
    assert (await api_sessions(tdb))[0] >= 1
    assert_clean((await verify(history, tdb, api, initial={events[0]: 100})).violations)


async def test_api_sigkill_mid_tx(api: ApiProcess, tdb: Db) -> None:
    """F5: SIGKILL uvicorn while requests hold or wait on the lock: nothing is left behind."""
    (event,), users = await make_events(tdb, [50]), await make_users(tdb, 20)
    history = History()
    async with api.client() as client:
        before = [await history.register(client, u, event) for u in users[:5]]
        held = asyncio.gather(
            *(
                history.register(client, u, event, headers={"X-Test-Delay-After-Lock": "3000"})
                for u in users[5:15]
            )
        )
        await wait_until(lambda: has_idle_tx(tdb), 5)  # someone holds the lock
        await api.kill()
        await held

    async def no_leftovers() -> bool:
        return (await api_sessions(tdb)) == (0, 0)

    print(f"\nF5: sessions of the killed API gone in {await wait_until(no_leftovers, 2):.2f} s")
    await api.start()
    async with api.client() as client:
        after = [await history.register(client, u, event) for u in users[15:]]
    assert [op.status for op in before + after] == [201] * 10
    assert_clean((await verify(history, tdb, api, initial={event: 50})).violations)


@ONE_POOL_WAIT
async def test_lock_timeout_fail_fast(api_factory: ApiFactory, tdb: Db) -> None:
    """F6: a row lock held elsewhere for 4 s: 30 registrations all 503 within 3 s, then 201."""
    api = await api_factory(DB_LOCK_TIMEOUT_MS="1000", DB_ACQUIRE_TIMEOUT_MS="1500")
    (event,), users = await make_events(tdb, [50]), await make_users(tdb, 31)
    history = History()
    bound = 1.0 + 1.5 + 0.5  # lock_timeout + acquire timeout + 0.5 s
    async with api.client() as client:
        async with hold_row_lock(api.database_url, event):
            ops = await asyncio.gather(*(history.register(client, u, event) for u in users[:30]))
            waited = max(op.t_complete - op.t_invoke for op in ops)
        after = await history.register(client, users[30], event)
    print(f"\nF6: 30 registrations behind a held lock: {history.codes()} in <= {waited:.2f} s")
    assert all(op.status == 503 for op in ops)
    assert waited <= bound
    assert after.status == 201
    assert_clean((await verify(history, tdb, api, initial={event: 50})).violations)


async def test_statement_timeout(api_factory: ApiFactory, tdb: Db) -> None:
    """F7: with lock_timeout off, a blocked statement is cut by statement_timeout (57014).

    The response is a 503 within 2.5 s, and the same pooled connection serves the next
    request without error.
    """
    api = await api_factory(DB_POOL_MAX="1", DB_LOCK_TIMEOUT_MS="0", DB_STATEMENT_TIMEOUT_MS="2000")
    (event,), users = await make_events(tdb, [5]), await make_users(tdb, 3)
    history = History()
    async with api.client() as client:
        assert (await history.register(client, users[0], event)).status == 201
        (pid,) = [
            r["pid"]
            for r in await tdb.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = $1",
                "eventreg",
            )
        ]
        async with hold_row_lock(api.database_url, event):
            slow = await history.register(client, users[1], event)
        after = await history.register(client, users[2], event)
        pids = {
            r["pid"]
            for r in await tdb.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = $1",
                "eventreg",
            )
        }
    waited = slow.t_complete - slow.t_invoke
    print(f"\nF7: statement_timeout 2 s: {slow.status} in {waited:.2f} s")
    assert slow.status == 503
    assert slow.retry_after
    assert waited <= 2.5
    assert after.status == 201
    assert pids == {pid}  # the cancelled statement did not cost the connection
    assert_clean((await verify(history, tdb, api, initial={event: 5})).violations)


LEAKED_FOR_200_MS = """
SELECT count(*) FROM pg_stat_activity
 WHERE datname = current_database() AND application_name = 'eventreg'
   AND state LIKE 'idle in transaction%' AND state_change < now() - interval '200 ms'
"""


async def test_idle_in_tx_backstop(api_factory: ApiFactory, tdb: Db) -> None:
    """F8: a transaction leaked while holding the lock is killed by the server's timeout."""
    api = await api_factory(DB_IDLE_IN_TX_TIMEOUT_MS="2000")
    (event,), users = await make_events(tdb, [5]), await make_users(tdb, 2)
    history = History()
    async with api.client() as client:
        leak = asyncio.create_task(
            history.register(client, users[0], event, headers={"X-Test-Delay-After-Lock": "6000"})
        )

        async def idle_tx_present() -> bool:
            # Idle in transaction for 0.2 s already: the leak, asleep after the lock, and
            # not the moment between two statements of any transaction (a busy machine
            # makes those long enough to be seen).
            leaked: int = await tdb.fetchval(LEAKED_FOR_200_MS)
            return leaked == 1

        async def idle_tx_gone() -> bool:
            return (await api_sessions(tdb))[1] == 0

        await wait_until(idle_tx_present, 2)
        killed_after = await wait_until(idle_tx_gone, 4) + 0.2
        other = await history.register(client, users[1], event)
        leaked = await leak
    print(f"\nF8: the leaked transaction was killed {killed_after:.2f} s after it went idle")
    assert 1.5 <= killed_after <= 3.5
    assert other.status == 201
    assert leaked.status == 503
    final = await read_final(tdb)
    assert (users[0], event) not in final.active
    assert_clean((await verify(history, tdb, api, initial={event: 5})).violations)


@ONE_POOL_WAIT
async def test_pool_exhaustion(api_factory: ApiFactory, tdb: Db) -> None:
    """F9: pool of 3, 100 concurrent slow requests: 503 after the acquire timeout, no hang."""
    api = await api_factory(DB_POOL_MAX="3")
    events, users = await make_events(tdb, [100] * 10), await make_users(tdb, 120)
    history = History()
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, (await api_sessions(tdb))[0])
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    async with api.client() as client:
        ops = await asyncio.gather(
            *(
                history.register(
                    client, u, events[i % 10], headers={"X-Test-Delay-After-Lock": "500"}
                )
                for i, u in enumerate(users[:100])
            )
        )
        watcher.cancel()
        after = await asyncio.gather(*(history.register(client, u, events[0]) for u in users[100:]))
    longest = max(op.t_complete - op.t_invoke for op in ops)
    print(f"\nF9: {history.codes()}; longest {longest:.2f} s; peak backends {peak}")
    assert {op.status for op in ops} <= {201, 503}
    assert longest <= 2.0 + 1.0 + 0.5 + 1.5  # acquire + lock wait + delay + slack: no hang
    assert peak <= 3
    assert [op.status for op in after] == [201] * 20
    assert (await api_sessions(tdb))[0] == 3
    report = await verify(history, tdb, api, initial=dict.fromkeys(events, 100))
    assert_clean(report.violations)


async def test_client_disconnect_storm(api: ApiProcess, tdb: Db) -> None:
    """F10: 200 clients hang up mid-request; a retry never gets a second seat."""
    events, users = await make_events(tdb, [3] * 50), await make_users(tdb, 200)
    pairs = [(u, events[i % 50]) for i, u in enumerate(users)]
    history = History()
    rng = random.Random(10)
    async with api.client() as client:
        plans = [(rng.uniform(0.01, 0.3), str(rng.randint(100, 500))) for _ in pairs]
        dropped = await asyncio.gather(
            *(
                history.register(
                    client, u, e, seconds=hang_up, headers={"X-Test-Delay-After-Lock": d}
                )
                for (u, e), (hang_up, d) in zip(pairs, plans, strict=True)
            )
        )
        await asyncio.sleep(3)  # handlers are not cancelled by a disconnect: let them finish

        async def answered(user: int, event: int) -> Op:
            for _ in range(10):  # a retrying client: 503 means "try again"
                op = await history.register(client, user, event)
                if op.type != "info":
                    break
                await asyncio.sleep(0.3)
            return op

        retries = await asyncio.gather(*(answered(u, e) for u, e in pairs))
    info = sum(op.type == "info" for op in dropped)
    print(f"\nF10: first attempts {dict(history.codes())}; {info} dropped by the client")
    for first, retry in zip(dropped, retries, strict=True):
        if first.status == 201:
            assert (retry.status, retry.code) == (409, "already_registered")
        else:
            assert retry.status in (201, 409), retry
    report = await verify(history, tdb, api, initial=dict.fromkeys(events, 3))
    assert_clean(report.violations)
    print(f"F10: {report.recovered} dropped registrations had committed")


async def test_commit_ack_survives_release_error(api: ApiProcess, tdb: Db) -> None:
    """F13 (P1): the backend dies after COMMIT, before release: still 201, row present."""
    events, users = await make_events(tdb, [5]), await make_users(tdb, 10)
    history = History()
    kill = {"X-Test-Terminate-Before-Release": "1"}
    async with api.client() as client:
        killed = [await history.register(client, u, events[0], headers=kill) for u in users[:5]]
        after = [await history.register(client, u, events[0]) for u in users[5:]]
    assert [op.status for op in killed] == [201] * 5
    assert [(op.status, op.code) for op in after] == [(409, "event_full")] * 5
    print(
        f"\nF13: release failed after COMMIT {api.log().count('connection release failed')} times"
    )
    final = await read_final(tdb)
    assert {(u, events[0]) for u in users[:5]} == set(final.active)
    assert_clean((await verify(history, tdb, api, initial={events[0]: 5})).violations)


# -- F11: cancellation of the service function itself (in-process, no HTTP) ----------------
async def test_task_cancel_inside_tx(
    target_url: str, tdb: Db, caplog: pytest.LogCaptureFixture
) -> None:
    """F11: cancel register() at random points, edge- and level-triggered; nothing leaks."""
    settings = Settings(database_url=target_url, pool_max_size=5)
    (event,), users = await make_events(tdb, [1000]), await make_users(tdb, 400)
    rng = random.Random(11)
    pool = await create_pool(settings)
    state = app_state(pool, settings)
    done = 0

    async def register(user: int) -> None:
        nonlocal done
        testhooks.ARMED.set(testhooks.Hooks(delay_after_lock_ms=rng.randint(0, 30)))
        with contextlib.suppress(ApiError):
            async with connection(state) as conn:
                await registrations.register(conn, OPEN, event, user)
                done += 1

    try:
        it = iter(users)
        for mode in ("task.cancel", "move_on_after", "task.cancel+lock", "move_on_after+lock"):
            for _ in range(25 if "lock" in mode else 75):
                user, delay = next(it), rng.uniform(0, 0.05)
                async with contextlib.AsyncExitStack() as stack:
                    if "lock" in mode:  # the statement is running (blocked) when cancelled
                        await stack.enter_async_context(hold_row_lock(target_url, event))
                    if mode.startswith("task"):
                        task = asyncio.create_task(register(user))
                        await asyncio.sleep(delay)
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
                    else:
                        with anyio.move_on_after(delay):
                            await register(user)
            await assert_pool_clean(state, tdb, target_url, event)
    finally:
        await asyncio.wait_for(pool.close(), 10)
    print(f"\nF11: 200 cancellations, {done} registrations completed before their cancel")
    broken = [
        r.getMessage() for r in caplog.records if any(b in r.getMessage() for b in BAD_LOG_LINES)
    ]
    assert broken == []  # P3: no "another operation is in progress"
    final = await read_final(tdb)
    capacity, seats = final.events[event]
    assert capacity == seats + sum(final.active.values())


async def assert_pool_clean(state: AppState, tdb: Db, url: str, event: int) -> None:
    async def no_idle_tx() -> bool:
        return (await api_sessions(tdb))[1] == 0

    await wait_until(no_idle_tx, 1)
    async with connect(url) as other, other.transaction():  # nobody holds the event row
        await other.execute("SET LOCAL lock_timeout = '500ms'")
        await other.execute("SELECT id FROM events WHERE id = $1 FOR UPDATE", event)
    pool = state["pool"]
    conns = [await pool.acquire(timeout=2) for _ in range(pool.get_max_size())]
    try:
        assert not any(c.is_in_transaction() for c in conns)
        assert [await c.fetchval("SELECT 1") for c in conns] == [1] * len(conns)
    finally:
        for c in conns:
            await pool.release(c)
