"""RR series: reads from a real streaming standby (issue 13, item 5).

The module's own primary (fault_pg) gets a standby made with `pg_basebackup -R`, streaming
over 127.0.0.1. The API runs with DATABASE_READ_URL on it. To make the replica stale on
purpose, WAL replay is paused on the standby (`pg_wal_replay_pause()`): the primary then
moves on and the standby does not.

The bound checked here has no slack: a read may be stale only if it was sent less than
DATABASE_READ_MAX_LAG_MS after the write it misses was acknowledged, and every read sent
later must see the write (eventreg.db.replica explains why).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from eventreg.pgcluster import Cluster
from tests.reliability.conftest import FaultPg
from tests.reliability.harness import (
    ApiFactory,
    ApiProcess,
    Db,
    bearer,
    give_tokens,
    make_events,
    make_users,
    organizer_of,
)

pytestmark = [pytest.mark.fault, pytest.mark.timeout(120)]
API = "/api/v1"
MAX_LAG = 2.0  # DATABASE_READ_MAX_LAG_MS for these tests, in seconds


@pytest.fixture
def target_url(fault_database_url: str) -> str:
    return fault_database_url


@pytest.fixture(scope="module")
def standby(fault_pg: FaultPg) -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="eventreg-standby-"))
    cluster = Cluster(root / "pg")
    port = fault_pg.cluster.running_port()
    assert port is not None
    cluster.init_standby(port)
    cluster.start(max_connections="200")  # a hot standby needs at least the primary's
    try:
        yield cluster
    finally:
        cluster.destroy()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def sdb(standby: Cluster, target_url: str) -> AsyncIterator[Db]:
    """A connection to the standby's copy of this test's database (once it has arrived)."""
    url = standby.url(target_url.rsplit("/", 1)[1])
    deadline = time.monotonic() + 30
    while True:
        try:
            conn = await asyncpg.connect(url)
            break
        except asyncpg.InvalidCatalogNameError:  # CREATE DATABASE not replayed yet
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def api(api_factory: ApiFactory, standby: Cluster, target_url: str, sdb: Db) -> ApiProcess:
    read_url = standby.url(target_url.rsplit("/", 1)[1])
    return await api_factory(
        DATABASE_READ_URL=read_url, DATABASE_READ_MAX_LAG_MS=str(int(MAX_LAG * 1000))
    )


@pytest.fixture
async def admin(tdb: Db) -> int:
    """An admin holding a token (harness.bearer): /metrics is for admins with tokens on."""
    user: int = await tdb.fetchval(
        "INSERT INTO users (name, email, role) VALUES ('Ops', 'ops@example.org', 'admin')"
        " RETURNING id"
    )
    await give_tokens(tdb, [user])
    return user


async def metric(client: httpx.AsyncClient, name: str) -> float:
    """A value from /metrics; the client sends the admin's token by default."""
    text = (await client.get("/metrics")).text
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found, name
    return float(found.group(1))


async def wait_for_metric(
    client: httpx.AsyncClient, name: str, value: float, seconds: float = 15
) -> None:
    deadline = time.monotonic() + seconds
    while await metric(client, name) != value:
        assert time.monotonic() < deadline, f"{name} did not become {value} in {seconds} s"
        await asyncio.sleep(0.1)


async def read_sessions(sdb: Db) -> int:
    n: int = await sdb.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'eventreg'"
    )
    return n


async def test_reads_are_served_by_the_standby_within_the_bound(
    api: ApiProcess, tdb: Db, sdb: Db, admin: int
) -> None:
    """RR1: the replica answers event reads; paused, it is used only while the write it
    misses is younger than the bound; after that the primary answers; resumed, the
    replica is used again."""
    (event,) = await make_events(tdb, [10])
    organizer = bearer(await organizer_of(tdb, event))
    async with api.client() as client:
        client.headers.update(bearer(admin))  # for /metrics; a request's own token wins
        await wait_for_metric(client, "eventreg_db_replica_usable", 1)
        assert (await client.get(f"{API}/events/{event}")).status_code == 200
        assert await read_sessions(sdb) >= 1  # the read pool's connection is on the standby
        await sdb.execute("SELECT pg_wal_replay_pause()")
        try:
            patched = await client.patch(
                f"{API}/events/{event}", json={"title": "Renamed"}, headers=organizer
            )
            acked = time.monotonic()
            assert patched.status_code == 200
            reads: list[tuple[float, str]] = []
            while time.monotonic() < acked + MAX_LAG + 1.5:
                sent = time.monotonic()
                got = await client.get(f"{API}/events/{event}")
                assert got.status_code == 200
                reads.append((sent - acked, got.json()["title"]))
                await asyncio.sleep(0.02)
            stale = [at for at, title in reads if title != "Renamed"]
            assert stale, "no read came from the paused standby"
            assert max(stale) < MAX_LAG, f"a read {max(stale):.3f} s after the write was stale"
            assert all(title == "Renamed" for at, title in reads if at >= MAX_LAG)
            assert await metric(client, "eventreg_db_replica_usable") == 0
            print(f"\nRR1: {len(stale)} stale reads, the last {max(stale):.3f} s after the write;"
                  f" {len(reads) - len(stale)} fresh")  # fmt: skip
        finally:
            await sdb.execute("SELECT pg_wal_replay_resume()")
        await wait_for_metric(client, "eventreg_db_replica_usable", 1)
        assert (await client.get(f"{API}/events/{event}")).json()["title"] == "Renamed"


async def test_seats_are_decided_on_the_primary(
    api: ApiProcess, tdb: Db, sdb: Db, admin: int
) -> None:
    """RR2: with the standby paused (still showing a free seat), a registration for the
    taken last seat is refused, and a just-made registration is readable at once: the
    routes that decide or read one's own data never use the replica."""
    (event,), (first, second) = await make_events(tdb, [1]), await make_users(tdb, 2)
    async with api.client() as client:
        client.headers.update(bearer(admin))  # for /metrics; a request's own token wins
        await wait_for_metric(client, "eventreg_db_replica_usable", 1)
        await sdb.execute("SELECT pg_wal_replay_pause()")
        try:
            made = await client.post(
                f"{API}/registrations", json={"user_id": first, "event_id": event},
                headers=bearer(first),
            )  # fmt: skip
            assert made.status_code == 201
            shown = (await client.get(f"{API}/events/{event}")).json()["available_seats"]
            assert shown == 1  # the replica's view, less than the bound old: allowed
            full = await client.post(
                f"{API}/registrations", json={"user_id": second, "event_id": event},
                headers=bearer(second),
            )  # fmt: skip
            assert (full.status_code, full.json()["code"]) == (409, "event_full")
            mine = await client.get(
                f"{API}/registrations/{made.json()['id']}", headers=bearer(first)
            )
            assert mine.status_code == 200
            listed = await client.get(f"{API}/registrations/user/{first}", headers=bearer(first))
            assert [r["id"] for r in listed.json()] == [made.json()["id"]]
        finally:
            await sdb.execute("SELECT pg_wal_replay_resume()")


async def test_reads_fall_back_to_the_primary_while_the_standby_is_down(
    api: ApiProcess, tdb: Db, standby: Cluster, admin: int
) -> None:
    """RR3: standby stopped: every read still 200 and current (the primary answers); no
    5xx; started again: reads go back to it."""
    (event,) = await make_events(tdb, [10])
    organizer = bearer(await organizer_of(tdb, event))
    async with api.client() as client:
        client.headers.update(bearer(admin))  # for /metrics; a request's own token wins
        await wait_for_metric(client, "eventreg_db_replica_usable", 1)
        assert (await client.get(f"{API}/events/{event}")).status_code == 200
        fallbacks = await metric(client, "eventreg_db_replica_fallbacks_total")
        standby.stop("fast")
        try:
            for n in range(40):
                title = f"Title {n}"
                patched = await client.patch(
                    f"{API}/events/{event}", json={"title": title}, headers=organizer
                )
                assert patched.status_code == 200
                got = await client.get(f"{API}/events/{event}")
                assert (got.status_code, got.json()["title"]) == (200, title)
                listed = await client.get(f"{API}/events")
                assert listed.status_code == 200
            # The gauge is the watch's view, refreshed every few hundred ms: it turns 0
            # within a watch step of the stop (the reads above were answered all the same).
            await wait_for_metric(client, "eventreg_db_replica_usable", 0, seconds=5)
            print(
                "\nRR3: replica reads that failed and were answered by the primary:",
                await metric(client, "eventreg_db_replica_fallbacks_total") - fallbacks,
            )
        finally:
            standby.start(max_connections="200")
        await wait_for_metric(client, "eventreg_db_replica_usable", 1, seconds=30)
        assert (await client.get(f"{API}/events/{event}")).json()["title"] == "Title 39"
    assert api.bad_log_lines() == []
