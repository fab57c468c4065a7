"""The benchmark run: its own database, the ceiling, the server, the scenarios, the table."""

from __future__ import annotations

import asyncio
import os
import platform
import resource
import secrets
import subprocess
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from eventreg import migrate, spawn, sql
from eventreg.bench import ceiling
from eventreg.bench.client import (
    Tally,
    bearer,
    closed_loop,
    connect_many,
    percentile,
    request_bytes,
)
from eventreg.caller import OPEN
from eventreg.db import Conn, tickets, tokens
from eventreg.pgcluster import Cluster
from eventreg.ticketcodes import Keyring, new_private_key, seed_of

Q = sql.load("bench")
DATABASE = "eventreg_bench"
HOT_CAPACITY, SPREAD_EVENTS, SPREAD_CAPACITY = 1_000_000, 1000, 1000
RUSH_CLIENTS, RUSH_SEATS, LIST_EVENTS = 2000, 500, 100
READ_LIMIT = 500_000  # requests per read scenario, well above what its time allows
REGISTRATION_STATUSES = (201, 409)
# Issue 9: five events of 1,000 tickets each, checked in one after another by every client.
CHECKIN_TICKETS, CHECKIN_EVENTS = 1000, 5
CHECKIN_STATUSES = (201, 200)
CHECKIN_TIMEOUT = 120.0  # seconds: a run ends when its tickets do; this only bounds a hang


@dataclass(frozen=True, slots=True)
class Plan:
    duration: float = 10.0  # measured seconds per HTTP scenario run on its own
    # A scenario compared with others (hot with hot_keys, …) runs `rounds` times in the
    # order A B … B A, `compared_duration` seconds in all: one pair of 5 s runs put
    # hot_keys anywhere from 80% to 114% of hot with the same code, three of them within
    # a few points (the two workers' groups fall into step differently at each start).
    compared_duration: float = 30.0
    rounds: int = 3
    warmup: float = 1.0
    ceiling_duration: float = 5.0
    clients: int = 50
    workers: int = 2  # WEB_CONCURRENCY for the registration scenarios
    read_workers: int = 1  # WEB_CONCURRENCY for read_one / read_list
    users: int = 180_000  # distinct users per registration scenario (bounds its count)
    pool_max: int | None = None  # DB_POOL_MAX for the server; None: the server's default
    scenarios: tuple[str, ...] = (
        "hot", "hot_single", "hot_keys", "hot_tokens", "spread", "low_1", "low_1_single",
        "low_4", "low_4_single", "rush", "rush_single", "checkin", "hot_observed",
        "read_one", "read_one_tokens", "read_one_observed", "read_one_replica",
        "read_list", "read_list_gzip",
    )  # fmt: skip
    chart: bool = False  # also sweep hot over CHART_CLIENTS, on and off, and draw it

    @staticmethod
    def quick() -> Plan:
        return Plan(duration=3.0, compared_duration=3.0, rounds=1, warmup=0.5,
                    ceiling_duration=2.0, users=20_000)  # fmt: skip


class Row(msgspec.Struct, omit_defaults=True):
    scenario: str
    workers: int
    clients: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    statuses: dict[str, int]
    errors: dict[str, int]
    peak_rss_mb: float | None = None
    ceiling_rps: float | None = None
    ceiling_pct: float | None = None
    extra: dict[str, Any] = {}


class Result(msgspec.Struct):
    started_at: str
    plan: dict[str, Any]
    machine: dict[str, Any]
    ceiling: dict[str, float]
    rows: list[Row]
    targets: dict[str, bool]  # the performance targets: met or missed
    correct: dict[str, bool]  # never oversold, counters consistent: any False is a failure
    sweep: list[dict[str, Any]] = []  # --chart: hot against clients, on and off


def row(scenario: str, workers: int, clients: int, tally: Tally, ok: tuple[int, ...]) -> Row:
    lat = sorted(tally.latencies)
    seconds = max(tally.seconds, 1e-9)
    errors = {str(s): n for s, n in sorted(tally.statuses.items()) if s not in ok}
    if tally.transport_errors:
        errors["no_answer"] = tally.transport_errors
    return Row(
        scenario=scenario, workers=workers, clients=clients, requests=tally.answered,
        seconds=round(seconds, 3), rps=round(tally.answered / seconds, 1),
        p50_ms=round(percentile(lat, 0.50) * 1000, 2),
        p95_ms=round(percentile(lat, 0.95) * 1000, 2),
        p99_ms=round(percentile(lat, 0.99) * 1000, 2),
        statuses={str(s): n for s, n in sorted(tally.statuses.items())}, errors=errors,
    )  # fmt: skip


# -- the database ------------------------------------------------------------------------
@cache
def bench_cluster() -> Cluster:
    return Cluster(Path(os.environ.get("EVENTREG_DATA_DIR", ".data")).resolve() / "bench" / "pg")


async def fresh_database(cluster: Cluster) -> str:
    """Start the benchmark's own cluster (not the dev one) and recreate its database."""
    cluster.start(max_connections="300")
    admin = await asyncpg.connect(cluster.url())
    try:
        await admin.execute(Q["drop_database"])
        await admin.execute(Q["create_database"])
    finally:
        await admin.close()
    url = cluster.url(DATABASE)
    await asyncio.to_thread(migrate.apply, url)
    return url


@cache
def bench_standby() -> Cluster:
    return Cluster(bench_cluster().datadir.parent / "standby")


def fresh_standby(cluster: Cluster) -> Cluster:
    """A streaming standby of the benchmark's cluster, copied anew (pg_basebackup -R) on
    every run that needs one: an old copy may follow an earlier primary."""
    standby = bench_standby()
    standby.destroy()
    port = cluster.running_port()
    assert port is not None
    standby.init_standby(port)
    standby.start(max_connections="300")  # at least the primary's
    return standby


async def transactions(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(Q["transactions"]))
    finally:
        await conn.close()


async def wait_for_event(url: str, event: int, seconds: float = 60) -> None:
    """Until the server at `url` (the standby) has `event`: replication has caught up."""
    conn = await asyncpg.connect(url)
    try:
        deadline = time.monotonic() + seconds
        while not await conn.fetchval(Q["has_event"], event):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the standby did not receive event {event} in {seconds} s")
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


@dataclass
class Seed:
    organizer: int
    users: list[int]
    run: str
    token_of: dict[int, str]  # user id -> the secret of its one token
    # Every server of the run signs tickets with this key, so the bench can sign the codes
    # it scans (issue 9).
    tickets: Keyring = field(default_factory=lambda: Keyring.of(new_private_key()))

    async def events(self, url: str, label: str, count: int, capacity: int) -> list[int]:
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch(Q["insert_events"], label, capacity, count, self.organizer)
        finally:
            await conn.close()
        return [r["id"] for r in rows]


async def analyze(url: str) -> None:
    """Planner statistics for the rows made so far, as autovacuum would gather in time."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(Q["analyze"])
    finally:
        await conn.close()


async def seed(url: str, users: int) -> Seed:
    """The organizer and `users` attendees, each attendee with a token of its own."""
    run = uuid.uuid4().hex[:8]
    conn = await asyncpg.connect(url)
    try:
        organizer = await conn.fetchval(Q["insert_organizer"], f"organizer-{run}@bench.example")
        ids = [r["id"] for r in await conn.fetch(Q["insert_attendees"], run, users)]
        token_of = {user: new_secret() for user in ids}
        shown = len(tokens.PREFIX) + tokens.SHOWN
        await conn.execute(
            Q["insert_tokens"], ids, [tokens.digest(token_of[u]) for u in ids],
            [token_of[u][:shown] for u in ids],
        )  # fmt: skip
        await conn.execute(Q["analyze_seed"])
    finally:
        await conn.close()
    return Seed(organizer, ids, run, token_of)


def new_secret() -> str:
    """A secret in the API's own format (eventreg.db.tokens.issue): same length, same hash."""
    return tokens.PREFIX + secrets.token_urlsafe(32)


async def occupancy(url: str, events: list[int]) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(Q["occupancy"], events))
    finally:
        await conn.close()


async def group_sizes(url: str, events: Sequence[int]) -> dict[str, float]:
    """How many registrations each transaction admitted for `events`, from the rows' xmin
    (the id of the transaction that inserted them), warm-up included."""
    conn = await asyncpg.connect(url)
    try:
        sizes = [r["size"] for r in await conn.fetch(Q["group_sizes"], list(events))]
    finally:
        await conn.close()
    return group_stats(sizes)


def group_stats(sizes: list[int]) -> dict[str, float]:
    """Groups, and the mean, 99th percentile and largest of their sizes."""
    if not sizes:
        return {"groups": 0}
    ordered = sorted(sizes)
    return {
        "groups": len(ordered), "mean": round(sum(ordered) / len(ordered), 2),
        "p99": percentile(ordered, 0.99), "max": ordered[-1],
    }  # fmt: skip


async def inconsistent_events(url: str) -> int:
    """Events whose seat counter disagrees with their active registrations (must be 0)."""
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(Q["inconsistent_events"]))
    finally:
        await conn.close()


# -- who used the machine --------------------------------------------------------------------
TICK = os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds spent busy on all CPUs since boot (/proc/stat: all but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / TICK


def process_cpu_seconds(pid: int) -> float:
    """A process's CPU plus that of the children it has reaped (a postmaster's backends)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / TICK


def own_cpu_seconds(cluster: Cluster) -> float:
    """This process, the servers it ran and reaped, and the benchmark's PostgreSQL."""
    own = sum(resource.getrusage(who)[0] + resource.getrusage(who)[1]
              for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))  # fmt: skip
    try:
        postmaster = int((cluster.datadir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return own
    return (
        own
        + process_cpu_seconds(postmaster)
        + sum(process_cpu_seconds(p) for p in descendants(postmaster))
    )


def tree_cpu_seconds(pid: int) -> float:
    """CPU of `pid` and everything below it (a server's workers; a postmaster's backends,
    live ones here and exited ones in its reaped children's time)."""
    return process_cpu_seconds(pid) + sum(process_cpu_seconds(p) for p in descendants(pid))


def database_cpu_seconds() -> float:
    """CPU of the benchmark's PostgreSQL servers: the primary and, when running, the standby."""
    total = 0.0
    for cluster in (bench_cluster(), bench_standby()):
        try:
            postmaster = int((cluster.datadir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        total += tree_cpu_seconds(postmaster)
    return total


@dataclass
class Neighbours:
    """How much of the machine other processes used while the benchmark ran."""

    cluster: Cluster
    started: float = 0.0
    busy: float = 0.0
    own: float = 0.0

    def start(self) -> None:
        self.started, self.busy = time.monotonic(), machine_busy_seconds()
        self.own = own_cpu_seconds(self.cluster)

    def percent(self) -> float:
        """Others' share of all CPUs' time since start(), in percent."""
        elapsed = (time.monotonic() - self.started) * (os.cpu_count() or 1)
        others = machine_busy_seconds() - self.busy - (own_cpu_seconds(self.cluster) - self.own)
        return round(max(others, 0.0) / max(elapsed, 1e-9) * 100, 1)


# -- the server's memory -------------------------------------------------------------------
def descendants(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    family: set[int] = set()
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == pid and p not in family]
        family.update(kids)
        frontier += kids
    return family


def tree_rss_bytes(root: int) -> int:
    """Resident memory of `root` and all its descendants, from /proc (Linux)."""
    total = 0
    for pid in {root} | descendants(root):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


@asynccontextmanager
async def rss_peak(pid: int) -> AsyncIterator[list[int]]:
    """Samples the server tree's RSS every 200 ms; yields a one-item list holding the peak."""
    peak = [tree_rss_bytes(pid)]

    async def sample() -> None:
        while True:
            await asyncio.sleep(0.2)
            peak[0] = max(peak[0], await asyncio.to_thread(tree_rss_bytes, pid))

    task = asyncio.ensure_future(sample())
    try:
        yield peak
    finally:
        task.cancel()
        peak[0] = max(peak[0], tree_rss_bytes(pid))


# The server's mode, set either way (not inherited from the caller's shell): "open" and
# "tokens" admit registrations in groups (the default), "single" one transaction each
# (GROUP_ADMISSION=off). With tokens on, the rate limits are off: the benchmark measures
# throughput, not the limiter (whose own cost, a dict lookup per registration, is then left
# out of hot_tokens).
#
# Every server measures the app without its instrumentation (QUIET: no counting for
# /metrics, no request lines), as the earlier figures were taken; "observed" runs both, as
# production has them (the request lines go to the server's log file).
QUIET: Mapping[str, str] = {"METRICS": "off", "ACCESS_LOG": "0"}
MODE_ENV: Mapping[str, Mapping[str, str]] = {
    "open": {"EVENTREG_AUTH": "open", "GROUP_ADMISSION": "on"},
    "observed": {
        "EVENTREG_AUTH": "open", "GROUP_ADMISSION": "on", "METRICS": "on", "LOG_FORMAT": "json",
        "ACCESS_LOG": "1",
    },
    "single": {"EVENTREG_AUTH": "open", "GROUP_ADMISSION": "off"},
    "tokens": {
        "EVENTREG_AUTH": "tokens", "GROUP_ADMISSION": "on", "RATE_SIGNUP_PER_MINUTE": "0",
        "RATE_REGISTER_PER_MINUTE": "0",
    },
}  # fmt: skip


def mode_of(scenario: str) -> str:
    """The server a scenario runs on: hot_tokens on "tokens", hot_single on "single",
    hot_observed on "observed"."""
    for mode in ("tokens", "single", "observed"):
        if scenario.endswith(f"_{mode}"):
            return mode
    return "open"


# The rush connects all its clients before it starts, and the kernel may hand most of them
# to one worker: the default MAX_CONNECTIONS (800 per worker, sized for a 1024 file limit)
# refused 400 of 2,000 with 503. The benchmark's own process holds as many sockets, so a
# machine that can run it can give one worker that many too.
MAX_CONNECTIONS = {"MAX_CONNECTIONS": str(RUSH_CLIENTS + 100)}


@contextmanager
def server(
    url: str, workers: int, pool_max: int | None, mode: str = "open",
    env: Mapping[str, str] | None = None,
) -> Iterator[spawn.Server]:  # fmt: skip
    """`serve` on `url` in `mode`; `env` adds settings (a DATABASE_READ_URL, …)."""
    pool = {} if pool_max is None else {"DB_POOL_MAX": str(pool_max)}
    env = {**MAX_CONNECTIONS, **QUIET, **MODE_ENV[mode], **pool, **(env or {})}
    srv = spawn.start(workers=workers, database_url=url, env=env)
    try:
        yield srv
    finally:
        srv.stop()


def host_port(srv: spawn.Server) -> tuple[str, int]:
    host, port = srv.url.removeprefix("http://").split(":")
    return host, int(port)


# -- scenarios -----------------------------------------------------------------------------
def registration(
    host: str,
    pairs: Callable[[int], tuple[int, int]],
    token_of: Mapping[int, str] | None = None,
    keys: str | None = None,
) -> Callable[[int], bytes]:
    """Request i registers user for event, `(event, user) = pairs(i)`; with `token_of`, as
    that user, with the user's own token; with `keys`, under an Idempotency-Key of its own
    (`keys` names the run, so no key is ever used twice)."""

    def make(i: int) -> bytes:
        event_id, user_id = pairs(i)
        body = b'{"user_id":%d,"event_id":%d}' % (user_id, event_id)
        headers = dict(bearer(token_of[user_id])) if token_of is not None else {}
        if keys is not None:
            headers["Idempotency-Key"] = f"{keys}-{event_id}-{user_id}"
        return request_bytes("POST", "/api/v1/registrations", host, body, headers)

    return make


def hot_pairs(event: int, users: list[int]) -> Callable[[int], tuple[int, int]]:
    return lambda i: (event, users[i])


def spread_pairs(events: list[int], users: list[int]) -> Callable[[int], tuple[int, int]]:
    return lambda i: (events[i % len(events)], users[i])


async def measure_ceiling(url: str, seed: Seed, plan: Plan, kind: str) -> list[Row]:
    """register() through 8 and then 50 direct connections: on one event ("hot") or
    round-robin over 1,000 ("spread"). The ceiling is the better of the two."""
    rows = []
    for conns in (8, 50):
        count, capacity = (1, HOT_CAPACITY) if kind == "hot" else (SPREAD_EVENTS, SPREAD_CAPACITY)
        events = await seed.events(url, f"ceiling {kind} {conns}", count, capacity)
        tally = await ceiling.drive(
            url, conns, spread_pairs(events, seed.users), limit=len(seed.users),
            warmup=plan.warmup, duration=plan.ceiling_duration,
        )  # fmt: skip
        rows.append(row(f"db_ceiling_{kind}", 0, conns, tally, REGISTRATION_STATUSES))
        say(f"database ceiling, {kind}, {conns} connections: {rows[-1].rps:.0f}/s")
    return rows


Requests = Callable[[int], bytes]  # request number -> the request's bytes


@dataclass(frozen=True, slots=True)
class Side:
    """A scenario as `compare` runs it: its server, and the requests of each of its runs."""

    name: str
    server: spawn.Server
    workers: int
    ok: tuple[int, ...]  # statuses that are not errors
    # (run, runs) -> the requests of this scenario's run number `run` of `runs`, and how many
    # there may be: a registration scenario gives each of its runs its own part of the
    # users, so no user comes back to the same event.
    requests: Callable[[int, int], tuple[Requests, int]]
    clients: int | None = None  # None: the plan's
    events: tuple[int, ...] = ()  # the events it registers for (its group sizes are read there)


# What a run leaves behind must not be charged to the next: a tokens server writes the
# tokens' last use up to TOKEN_USE_EVERY s after its run (eventreg.auth.record_use_forever),
# and the dead rows that leaves, or hot_single's heavy writes, start an autovacuum. In the
# five-scenario hot set that put hot_observed, always run after hot_tokens, at 80-88% of hot;
# in a set without hot_tokens and hot_single, at 103%.
TOKEN_USE_EVERY = 5.0
SETTLE_MAX = 20.0  # seconds a run waits at most for the database to go quiet


async def settle(url: str, after_tokens: bool) -> float:
    """Wait until PostgreSQL runs nothing but this query (no autovacuum worker, no active
    client) twice in a row, at most SETTLE_MAX s; returns the seconds waited."""
    started = time.monotonic()
    if after_tokens:
        await asyncio.sleep(TOKEN_USE_EVERY + 0.5)
    conn = await asyncpg.connect(url)
    try:
        quiet = 0
        while quiet < 2 and time.monotonic() - started < SETTLE_MAX:
            quiet = quiet + 1 if await conn.fetchval(Q["busy_backends"]) == 0 else 0
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    return time.monotonic() - started


async def compare(sides: list[Side], plan: Plan, settle_url: str | None = None) -> list[Row]:
    """One scenario for the plan's duration, or several in the order A B … B A, the plan's
    rounds times, for its compared_duration in all: on a shared machine a neighbour whose
    load drifts during the runs weighs on all alike, and a ratio between them is what
    these sets are for. With `settle_url`, each run starts once the database is quiet
    (settle). Each row also says how much CPU its server and PostgreSQL spent per recorded
    request (extra.api_cpu_ms, extra.db_cpu_ms)."""
    if len(sides) == 1:
        order, total = sides, plan.duration
    else:
        order, total = (sides + sides[::-1]) * plan.rounds, plan.compared_duration
    runs = len(order) // len(sides)
    duration = total / runs
    tallies = {side.name: Tally() for side in sides}
    peaks = dict.fromkeys(tallies, 0)
    seen = dict.fromkeys(tallies, 0)
    previous: Side | None = None
    for side in order:
        if settle_url is not None:  # the first run too: seeding leaves an autovacuum behind
            tokens = previous is not None and previous.server.env.get("EVENTREG_AUTH") == "tokens"
            await settle(settle_url, after_tokens=tokens)
        previous = side
        host, port = host_port(side.server)
        make, limit = side.requests(seen[side.name], runs)
        seen[side.name] += 1
        meters = (partial(tree_cpu_seconds, side.server.pid), database_cpu_seconds)
        async with rss_peak(side.server.pid) as peak:
            clients = side.clients or plan.clients
            tally = await closed_loop(host, port, clients, make, limit=limit,
                                      warmup=plan.warmup, duration=duration,
                                      meters=meters)  # fmt: skip
        tallies[side.name].add(tally)
        peaks[side.name] = max(peaks[side.name], peak[0])
    rows = []
    for side in sides:
        tally = tallies[side.name]
        r = row(side.name, side.workers, side.clients or plan.clients, tally, side.ok)
        r.peak_rss_mb = round(peaks[side.name] / 2**20, 1)
        if tally.answered and tally.cpu_seconds:
            api, db = (round(1000 * cpu / tally.answered, 3) for cpu in tally.cpu_seconds)
            r.extra = {**r.extra, "api_cpu_ms": api, "db_cpu_ms": db}
        rows.append(r)
    return rows


def registrations_side(
    name: str,
    srv: spawn.Server,
    workers: int,
    events: list[int],
    seed: Seed,
    *,
    auth: bool,
    keys: bool = False,
    clients: int | None = None,
) -> Side:
    """Distinct users register round-robin over `events` (one event: the hot case); with
    `auth` each with its own token, with `keys` each under an Idempotency-Key."""
    host = srv.url.removeprefix("http://")

    def requests(run: int, runs: int) -> tuple[Requests, int]:
        users = seed.users[len(seed.users) * run // runs : len(seed.users) * (run + 1) // runs]
        pairs = spread_pairs(events, users)
        token_of = seed.token_of if auth else None
        label = f"bench-{seed.run}-{name}" if keys else None
        return registration(host, pairs, token_of, label), len(users)

    return Side(name, srv, workers, REGISTRATION_STATUSES, requests, clients, tuple(events))


def read_side(
    name: str, srv: spawn.Server, workers: int, path: str, headers: list[Mapping[str, str]]
) -> Side:
    """GET `path` over and over; request i sends headers[i % len(headers)]."""
    host = srv.url.removeprefix("http://")
    raws = [request_bytes("GET", path, host, headers=h) for h in headers]

    def requests(_: int, __: int) -> tuple[Requests, int]:
        return (lambda i: raws[i % len(raws)]), READ_LIMIT

    return Side(name, srv, workers, (200,), requests)


def body_size(srv: spawn.Server, path: str, headers: Mapping[str, str]) -> dict[str, Any]:
    """What one answer weighs on the wire, and how it was encoded."""
    request = urllib.request.Request(srv.url + path, headers=dict(headers))
    with urllib.request.urlopen(request, timeout=10) as response:  # no decompression here
        body = response.read()
        encoding = response.headers.get("Content-Encoding") or "identity"
    return {"body_bytes": len(body), "content_encoding": encoding}


async def rush(srv: spawn.Server, url: str, plan: Plan, seed: Seed, name: str = "rush") -> Row:
    """2,000 clients, connected beforehand, all ask for one of 500 seats at the same moment."""
    host, port = host_port(srv)
    (event,) = await seed.events(url, name, 1, RUSH_SEATS)
    make = registration(f"{host}:{port}", hot_pairs(event, seed.users[-RUSH_CLIENTS:]))
    connections = await connect_many(host, port, RUSH_CLIENTS)
    tally, done_at = Tally(), []
    async with rss_peak(srv.pid) as peak:
        t0 = time.perf_counter()

        async def one(i: int) -> None:
            try:
                status = await connections[i].request(make(i))
            except ConnectionError:
                tally.transport_errors += 1
                return
            now = time.perf_counter()
            tally.latencies.append(now - t0)
            tally.statuses[status] += 1
            if status == 201:
                done_at.append(now - t0)

        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(RUSH_CLIENTS))), 60)
        tally.seconds = time.perf_counter() - t0
    for c in connections:
        c.close()
    (occ,) = await occupancy(url, [event])
    r = row(name, plan.workers, RUSH_CLIENTS, tally, REGISTRATION_STATUSES)
    r.peak_rss_mb = round(peak[0] / 2**20, 1)
    r.extra = {
        "seats": RUSH_SEATS, "sold": tally.statuses[201], "sold_out_s": round(max(done_at), 3)
        if len(done_at) == RUSH_SEATS else None, "all_answered_s": round(tally.seconds, 3),
        "db_active_registrations": occ["active_registrations"],
        "db_available_seats": occ["available_seats"], "db_consistent": occ["consistent"],
        "groups": await group_sizes(url, [event]),
    }  # fmt: skip
    return r


# -- check-in (issue 9) ------------------------------------------------------------------------
def ticket_env(seed: Seed) -> dict[str, str]:
    """The server's environment for signing with the seed's key."""
    assert seed.tickets.signing is not None
    return {"TICKET_SIGNING_KEY": seed_of(seed.tickets.signing)}


async def tickets_to_scan(url: str, seed: Seed, label: str) -> list[tuple[int, str]]:
    """CHECKIN_EVENTS events of CHECKIN_TICKETS seated users each: (event, code) in the
    order they are scanned, event after event."""
    events = await seed.events(url, label, CHECKIN_EVENTS, CHECKIN_TICKETS)
    conn = await asyncpg.connect(url)
    try:
        codes = []
        for event in events:
            regs = await conn.fetch(Q["seat_users"], event, seed.users[:CHECKIN_TICKETS])
            codes += [(event, seed.tickets.sign(r["id"], event)) for r in regs]
        await conn.execute(Q["analyze"])
    finally:
        await conn.close()
    return codes


def check_in_request(host: str, codes: list[tuple[int, str]]) -> Requests:
    def make(i: int) -> bytes:
        event, code = codes[i]
        body = b'{"code":"%s"}' % code.encode()
        return request_bytes("POST", f"/api/v1/events/{event}/check-ins", host, body)

    return make


async def checkin(srv: spawn.Server, url: str, plan: Plan, seed: Seed) -> list[Row]:
    """The database's own rate for the check-in transaction (db.tickets.check_in through 8,
    then 50 raw connections), then the same over HTTP: each run checks in 5 x 1,000 tickets
    and is timed from its first scan to its last."""
    rows = []
    for conns in (8, 50):
        codes = await tickets_to_scan(url, seed, f"ceiling checkin {conns}")

        async def work(conn: Conn, i: int, codes: list[tuple[int, str]] = codes) -> None:
            await tickets.check_in(conn, OPEN, seed.tickets, *codes[i])

        tally = await ceiling.drive_work(url, conns, work, limit=len(codes), warmup=0,
                                         duration=CHECKIN_TIMEOUT)  # fmt: skip
        rows.append(row("db_ceiling_checkin", 0, conns, tally, CHECKIN_STATUSES))
        say(f"database ceiling, checkin, {conns} connections: {rows[-1].rps:.0f}/s")
    codes = await tickets_to_scan(url, seed, "checkin")
    host, port = host_port(srv)
    make = check_in_request(srv.url.removeprefix("http://"), codes)
    async with rss_peak(srv.pid) as peak:
        tally = await closed_loop(host, port, plan.clients, make, limit=len(codes), warmup=0,
                                  duration=CHECKIN_TIMEOUT)  # fmt: skip
    r = row("checkin", plan.workers, plan.clients, tally, CHECKIN_STATUSES)
    r.peak_rss_mb = round(peak[0] / 2**20, 1)
    best = max(c.rps for c in rows)
    r.ceiling_rps, r.ceiling_pct = best, round(100 * r.rps / best, 1)
    r.extra = await check_in_tally(url, sorted({event for event, _ in codes}), len(codes))
    return [*rows, r]


async def check_in_tally(url: str, events: list[int], scanned: int) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        found = await conn.fetchrow(Q["check_in_tally"], events)
    finally:
        await conn.close()
    assert found is not None
    return {"tickets": scanned, "db_live_check_ins": found["live"], "db_doubled": found["doubled"]}


def say(message: str) -> None:
    print(f"bench: {message}", flush=True)


def machine() -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=False).stdout.strip()  # fmt: skip
    except OSError:
        commit = ""
    return {
        "cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(), "platform": platform.platform(), "commit": commit,
    }  # fmt: skip
