"""Jepsen-style harness: a real API process, a history of HTTP operations, and a checker.

- `ApiProcess` runs `uvicorn --factory eventreg.app:app_from_env` on 127.0.0.1 as a child
  process that tests may SIGKILL, SIGTERM and start again, with tokens on (the default
  here, as in production) or off (`auth="open"`).
- Every user the helpers make holds a token of its own (`token_of`), and `History` sends
  it with that user's registrations and cancellations, so the same test runs either way.
- `History` records every operation: invoke/complete times and an outcome, classified as
  `ok` (2xx), `fail` (a definite 4xx: the database is unchanged) or `info` (503, timeout,
  connection error: it may or may not have happened). Anything else (500) is `error`.
- `check()` verifies invariants I1-I8 of the reliability plan against the history and a
  final read of the database; `Sampler` checks I1/I2 every ~20 ms while load runs;
  `hygiene()` looks for leaked transactions, deadlocks and extra backends.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self, TypeAlias

import asyncpg
import httpx

from eventreg.db.tokens import PREFIX, SHOWN, digest
from eventreg.pgcluster import free_port

Db: TypeAlias = "asyncpg.Connection[asyncpg.Record]"
ApiFactory: TypeAlias = "Callable[..., Awaitable[ApiProcess]]"
Outcome = Literal["ok", "fail", "info", "error"]
API = "/api/v1"
FAIL_STATUSES = frozenset({400, 404, 409, 413, 415, 422})
# Log lines that mean the driver's protocol state was corrupted (pitfall P3) or a 500 escaped.
BAD_LOG_LINES = ("another operation is in progress", "cannot switch to state", "Traceback")


# -- tokens -----------------------------------------------------------------------------------
_KEY = secrets.token_bytes(32)  # this test session's; never stored anywhere


def token_of(user: int) -> str:
    """The secret of the token the helpers give user `user`: in the API's format (`evr_` and
    43 URL-safe characters), derived from the id with this session's key, so a request can
    carry its user's token without a registry being passed around. Each test database is
    served by its own API process, so equal ids in two databases never meet in one cache."""
    mac = hmac.new(_KEY, str(user).encode(), "sha256").digest()
    return PREFIX + base64.urlsafe_b64encode(mac).decode().rstrip("=")


def bearer(user: int) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_of(user)}"}


async def give_tokens(db: Db, users: list[int]) -> None:
    """One token per user, stored as the API stores them (only the secret's SHA-256)."""
    secrets_ = [token_of(u) for u in users]
    await db.execute(
        """INSERT INTO api_tokens (user_id, secret_hash, prefix, name)
           SELECT user_id, secret_hash, prefix, 'harness'
             FROM unnest($1::bigint[], $2::bytea[], $3::text[])
                  AS t (user_id, secret_hash, prefix)""",
        users,
        [digest(s) for s in secrets_],
        [s[: len(PREFIX) + SHOWN] for s in secrets_],
    )


# -- the API as a real process --------------------------------------------------------------
# EVENTREG_AUTH for each mode, always set (not inherited from the shell). With tokens on the
# rate limits are off: the series checks invariants under races, and C3 sends 200
# registrations for one user at once, which the per-user limit (60 a minute) would refuse
# with 429 by design.
AUTH_ENV: dict[str, dict[str, str]] = {
    "tokens": {
        "EVENTREG_AUTH": "tokens", "RATE_SIGNUP_PER_MINUTE": "0", "RATE_REGISTER_PER_MINUTE": "0",
    },
    "open": {"EVENTREG_AUTH": "open"},
}  # fmt: skip


class ApiProcess:
    """One uvicorn worker serving the app against `database_url`, restartable on its port."""

    def __init__(
        self, database_url: str, log_path: Path, *, auth: str = "tokens", **env: str
    ) -> None:
        self.database_url = database_url
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {"DB_POOL_MAX": "10", "EVENTREG_TEST_HOOKS": "1", **AUTH_ENV[auth], **env}
        self.auth = self.env["EVENTREG_AUTH"]  # a test may pin it through `env`
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pool_max(self) -> int:
        return int(self.env["DB_POOL_MAX"])

    async def start(self, *, wait: bool = True) -> None:
        env = {**os.environ, "DATABASE_URL": self.database_url, **self.env}
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "eventreg.app:app_from_env",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--no-access-log",
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--timeout-graceful-shutdown",
            "5",
        ]
        with self.log_path.open("ab") as log:  # Popen only forks; it does not wait
            self.proc = subprocess.Popen(  # noqa: ASYNC220
                command, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        if wait:
            await self.wait_ready()

    async def wait_ready(self, seconds: float = 20) -> None:
        """Until `/` answers (it does not touch the database)."""
        deadline = time.monotonic() + seconds
        async with httpx.AsyncClient(base_url=self.base_url, timeout=1) as client:
            while time.monotonic() < deadline:
                assert self.proc is not None
                assert self.proc.poll() is None, self.log()
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/")).status_code == 200:
                        return
                await asyncio.sleep(0.05)
        raise TimeoutError(f"API did not start in {seconds} s:\n{self.log()}")

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait_exit(self, seconds: float) -> int | None:
        """The exit code, or None if the process still runs after `seconds`."""
        proc = self.proc
        assert proc is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(proc.wait, seconds)
        return proc.poll()

    async def kill(self) -> None:
        """SIGKILL: no graceful anything; the kernel closes the sockets."""
        self.signal(signal.SIGKILL)
        await self.wait_exit(10)

    async def stop(self) -> None:
        """SIGTERM (graceful: drain, close the pool), then SIGKILL if it takes over 10 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.signal(signal.SIGTERM)
        if await self.wait_exit(10) is None:
            await self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def bad_log_lines(self, allowed: tuple[str, ...] = ()) -> list[str]:
        return [
            ln
            for ln in self.log().splitlines()
            if any(b in ln for b in BAD_LOG_LINES) and not any(a in ln for a in allowed)
        ]

    def client(self, timeout: float = 10) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
        return httpx.AsyncClient(base_url=self.base_url, timeout=timeout, limits=limits)


# -- history --------------------------------------------------------------------------------
@dataclass(slots=True)
class Op:
    proc: int
    f: str  # register | cancel | read | capacity
    user: int
    event: int
    t_invoke: float
    t_complete: float = 0.0
    type: Outcome = "info"
    status: int | None = None
    code: str | None = None
    retry_after: bool = False
    value: Any = None  # capacity for `capacity`, available_seats for `read`
    error: str = ""


def classify(status: int) -> Outcome:
    if 200 <= status < 300:
        return "ok"
    if status in FAIL_STATUSES:
        return "fail"
    if status == 503:
        return "info"
    return "error"


@dataclass
class History:
    ops: list[Op] = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def _call(
        self,
        client: httpx.AsyncClient,
        op: Op,
        method: str,
        url: str,
        *,
        as_user: int = 0,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> Op:
        """Send the request, with `as_user`'s token when given (ignored with tokens off)."""
        self.ops.append(op)
        headers = {**(bearer(as_user) if as_user else {}), **(headers or {})}
        try:
            response = await client.request(method, url, headers=headers, **kwargs)
        except httpx.TransportError as exc:  # timeout, refused, reset: outcome unknown
            op.t_complete, op.type, op.error = self.now(), "info", type(exc).__name__
            return op
        op.t_complete, op.status = self.now(), response.status_code
        op.type = classify(response.status_code)
        op.retry_after = "retry-after" in response.headers
        if response.headers.get("content-type", "").endswith("json") and response.content:
            body = response.json()
            if isinstance(body, dict):
                op.code = body.get("code")
                if op.f == "read" and op.type == "ok":
                    op.value = body.get("available_seats")
        return op

    async def register(
        self,
        client: httpx.AsyncClient,
        user: int,
        event: int,
        *,
        proc: int = 0,
        headers: dict[str, str] | None = None,
        seconds: float | None = None,
    ) -> Op:
        op = Op(proc, "register", user, event, self.now())
        extra: dict[str, Any] = {} if seconds is None else {"timeout": seconds}
        body = {"user_id": user, "event_id": event}
        return await self._call(
            client, op, "POST", f"{API}/registrations", as_user=user, json=body,
            headers=headers, **extra,
        )  # fmt: skip

    async def cancel(self, client: httpx.AsyncClient, user: int, event: int, proc: int = 0) -> Op:
        op = Op(proc, "cancel", user, event, self.now())
        body = {"user_id": user, "event_id": event}
        return await self._call(
            client, op, "DELETE", f"{API}/registrations", as_user=user, json=body
        )

    async def read(self, client: httpx.AsyncClient, event: int, proc: int = 0) -> Op:
        op = Op(proc, "read", 0, event, self.now())
        return await self._call(client, op, "GET", f"{API}/events/{event}")

    async def set_capacity(
        self, client: httpx.AsyncClient, event: int, capacity: int, *, organizer: int,
        proc: int = 0,
    ) -> Op:  # fmt: skip
        """PATCH the capacity as the event's organizer."""
        op = Op(proc, "capacity", 0, event, self.now(), value=capacity)
        return await self._call(
            client, op, "PATCH", f"{API}/events/{event}", as_user=organizer,
            json={"capacity": capacity},
        )  # fmt: skip

    # -- summaries ------------------------------------------------------------------------
    def of(self, f: str, *types: Outcome) -> list[Op]:
        return [op for op in self.ops if op.f == f and (not types or op.type in types)]

    def statuses(self, f: str = "register") -> Counter[int | None]:
        return Counter(op.status for op in self.of(f))

    def codes(self, f: str = "register") -> Counter[tuple[int | None, str | None]]:
        return Counter((op.status, op.code) for op in self.of(f))

    def outcomes(self) -> Counter[str]:
        return Counter(op.type for op in self.ops)


# -- the final state and the checker --------------------------------------------------------
@dataclass(frozen=True)
class Final:
    events: dict[int, tuple[int, int]]  # id -> (capacity, available_seats)
    active: Counter[tuple[int, int]]  # (user, event) -> active rows
    cancelled: Counter[tuple[int, int]]  # (user, event) -> cancelled rows


async def read_final(db: Db) -> Final:
    found = await db.fetch("SELECT id, capacity, available_seats FROM events")
    events = {r["id"]: (r["capacity"], r["available_seats"]) for r in found}
    active: Counter[tuple[int, int]] = Counter()
    cancelled: Counter[tuple[int, int]] = Counter()
    for r in await db.fetch("SELECT user_id, event_id, status FROM registrations"):
        (active if r["status"] == "active" else cancelled)[(r["user_id"], r["event_id"])] += 1
    return Final(events, active, cancelled)


@dataclass
class Report:
    violations: list[str] = field(default_factory=list)
    recovered: int = 0  # `info` registrations that turned out to have committed
    lost: int = 0  # acknowledged registrations missing at the end (I4)

    def add(self, invariant: str, message: str) -> None:
        if len(self.violations) < 50:
            self.violations.append(f"{invariant}: {message}")


def check(history: History, final: Final, *, initial: dict[int, int] | None = None) -> Report:
    """I1-I8 and "no 500" over `history`; `initial` maps event -> capacity at creation."""
    report = Report()
    _check_counters(final, report)
    by_pair: dict[tuple[int, int], list[Op]] = defaultdict(list)
    for op in history.ops:
        if op.f in ("register", "cancel"):
            by_pair[(op.user, op.event)].append(op)
        if op.type == "error":
            report.add("no-500", f"{op.f} u{op.user} e{op.event} -> {op.status}")
        if op.status == 503 and not op.retry_after:
            report.add("retry-after", f"{op.f} u{op.user} e{op.event}: 503 without Retry-After")
    for pair, ops in by_pair.items():
        _check_pair(pair, ops, final, report)
    for pair in final.active:
        if pair not in by_pair:
            report.add("I5", f"active registration {pair} was never attempted")
    _check_counts(history, final, report)
    _check_false_full(history, initial or {}, report)
    return report


def _check_counters(final: Final, report: Report) -> None:
    per_event: Counter[int] = Counter()
    for (_, event), n in final.active.items():
        per_event[event] += n
        if n > 1:
            report.add("I3", f"{n} active registrations for {(_, event)}")
    for event, (capacity, seats) in final.events.items():
        if capacity != seats + per_event[event]:
            report.add("I1", f"event {event}: capacity {capacity} != {seats} + {per_event[event]}")
        if not 0 <= seats <= capacity:
            report.add("I2", f"event {event}: available_seats {seats} outside 0..{capacity}")


def _check_pair(pair: tuple[int, int], ops: list[Op], final: Final, report: Report) -> None:
    regs = [op for op in ops if op.f == "register"]
    cancels = [op for op in ops if op.f == "cancel"]
    ok_regs = [op for op in regs if op.type == "ok"]
    active = final.active[pair] > 0
    if active and not any(op.type in ("ok", "info") for op in regs):
        report.add("I5", f"active {pair} but no register was ok or info")
    if active and not ok_regs:
        report.recovered += 1
    if ok_regs:  # I4: the last acknowledged register survives unless a cancel may follow it
        last = max(ok_regs, key=lambda op: op.t_complete)
        may_cancel = any(c.type in ("ok", "info") and c.t_complete > last.t_invoke for c in cancels)
        if not may_cancel and not active:
            report.lost += 1
            report.add("I4", f"acknowledged registration {pair} (t={last.t_complete:.3f}) lost")
    ok_c = sum(op.type == "ok" for op in cancels)
    info_c = sum(op.type == "info" for op in cancels)
    applied = sum(op.type in ("ok", "info") for op in regs)
    if not ok_c <= final.cancelled[pair] <= ok_c + info_c or ok_c > applied:  # I7
        report.add(
            "I7",
            f"{pair}: {final.cancelled[pair]} cancelled rows, {ok_c} ok cancels, "
            f"{info_c} unknown, {applied} registers applied",
        )


def _check_counts(history: History, final: Final, report: Report) -> None:
    """I6: the final active count per event is within what the history allows."""
    tally: dict[int, Counter[str]] = defaultdict(Counter)
    for op in history.ops:
        if op.f in ("register", "cancel") and op.type in ("ok", "info"):
            tally[op.event][f"{op.f}_{op.type}"] += 1
    per_event: Counter[int] = Counter()
    for (_, event), n in final.active.items():
        per_event[event] += n
    for event, t in tally.items():
        low = t["register_ok"] - t["cancel_ok"] - t["cancel_info"]
        high = t["register_ok"] + t["register_info"] - t["cancel_ok"]
        if not low <= per_event[event] <= high:
            report.add("I6", f"event {event}: {per_event[event]} active, outside [{low}, {high}]")


def _check_false_full(history: History, initial: dict[int, int], report: Report) -> None:
    """I8: a 409 event_full needs enough registers invoked and few enough cancels done."""
    min_capacity = dict(initial)
    for op in history.of("capacity", "ok", "info"):
        min_capacity[op.event] = min(min_capacity.get(op.event, op.value), op.value)
    regs = [op for op in history.of("register", "ok", "info")]
    cancels = history.of("cancel", "ok")
    for full in history.ops:
        if full.code != "event_full" or full.event not in min_capacity:
            continue
        before = sum(r.event == full.event and r.t_invoke < full.t_complete for r in regs)
        released = sum(c.event == full.event and c.t_complete < full.t_invoke for c in cancels)
        if (held := before - released) < min_capacity[full.event]:
            report.add(
                "I8",
                f"false full on event {full.event} at t={full.t_complete:.3f}: "
                f"at most {held} held of {min_capacity[full.event]}",
            )


# -- sampler --------------------------------------------------------------------------------
SAMPLE = """
SELECT id, capacity, available_seats,
       (SELECT count(*) FROM registrations r
         WHERE r.event_id = e.id AND r.status = 'active') AS active
  FROM events e
 WHERE e.id = ANY($1::bigint[])
"""


class Periodic:
    """A check run every `interval` s from a session of its own while load runs: a state
    that is wrong only for a moment (inside a commit) is caught too. A failed sample (the
    server restarting) is counted in `errors`, and the next one reconnects."""

    def __init__(self, database_url: str, events: Iterable[int], interval: float = 0.02) -> None:
        self.database_url, self.events, self.interval = database_url, list(events), interval
        self.samples = 0
        self.errors = 0
        self.violations: list[str] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def sample(self, conn: Db) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *_: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    async def _run(self) -> None:
        conn: Db | None = None
        while not self._stop.is_set():
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncpg.connect(self.database_url, timeout=1)
                await self.sample(conn)
                self.samples += 1
            except Exception:  # the server is restarting: count the gap, reconnect
                self.errors += 1
                if conn is not None:
                    conn.terminate()
                conn = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)


class Sampler(Periodic):
    """I1/I2 in one statement (one snapshot) every `interval` s."""

    async def sample(self, conn: Db) -> None:
        for r in await conn.fetch(SAMPLE, self.events, timeout=2):
            self._check(r)

    def _check(self, r: asyncpg.Record) -> None:
        capacity, seats, active = r["capacity"], r["available_seats"], r["active"]
        if capacity != seats + active and len(self.violations) < 50:
            self.violations.append(f"I1 sample: event {r['id']}: {capacity} != {seats}+{active}")
        if not 0 <= seats <= capacity and len(self.violations) < 50:
            self.violations.append(f"I2 sample: event {r['id']}: seats {seats} of {capacity}")


# -- hygiene --------------------------------------------------------------------------------
async def database_name(db: Db) -> str:
    name: str = await db.fetchval("SELECT current_database()")
    return name


async def deadlocks(db: Db) -> int:
    """pg_stat_database.deadlocks; backends flush stats on exit, so read it after stopping."""
    await db.execute("SELECT pg_stat_clear_snapshot()")
    n: int = await db.fetchval(
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    )
    return n


async def api_sessions(db: Db) -> tuple[int, int]:
    """(eventreg backends, of them idle in transaction) on this database."""
    row = await db.fetchrow(
        """SELECT count(*) AS total,
                  count(*) FILTER (WHERE state LIKE 'idle in transaction%') AS idle_tx
             FROM pg_stat_activity
            WHERE datname = current_database() AND application_name = $1""",
        "eventreg",
    )
    assert row is not None
    return row["total"], row["idle_tx"]


async def hygiene(db: Db, pool_max: int, settle: float = 0.5) -> list[str]:
    """After `settle` s of quiet (a leak persists; a rollback takes ms): no transaction left
    open, no more backends than the pool."""
    await asyncio.sleep(settle)
    total, idle_tx = await api_sessions(db)
    problems = []
    if idle_tx:
        problems.append(f"hygiene: {idle_tx} eventreg sessions idle in transaction")
    if total > pool_max:
        problems.append(f"hygiene: {total} eventreg backends > pool max {pool_max}")
    return problems


# -- helpers to set up data fast (straight SQL, not part of the history) ------------------
async def make_users(db: Db, n: int) -> list[int]:
    """`n` attendees, each with a token of its own (`token_of`)."""
    rows = await db.fetch(
        """INSERT INTO users (name, email)
           SELECT 'Load ' || i, 'load' || i || '-' || gen_random_uuid() || '@example.com'
             FROM generate_series(1, $1) AS i
           RETURNING id""",
        n,
    )
    users = [r["id"] for r in rows]
    await give_tokens(db, users)
    return users


async def make_events(db: Db, capacities: Iterable[int]) -> list[int]:
    """Events of one new organizer (who holds a token, see `organizer_of`)."""
    organizer = await db.fetchval(
        """INSERT INTO users (name, email, role)
           VALUES ('Org', 'org-' || gen_random_uuid() || '@example.com', 'organizer')
           RETURNING id"""
    )
    await give_tokens(db, [organizer])
    ids = []
    for capacity in capacities:
        ids.append(
            await db.fetchval(
                """INSERT INTO events (title, capacity, available_seats, organizer_id)
               VALUES ('Event', $1, $1, $2) RETURNING id""",
                capacity,
                organizer,
            )
        )
    return ids


async def sign_in(api: ApiProcess, client: httpx.AsyncClient, users: Iterable[int]) -> None:
    """With tokens on, each user's token is used once (`GET /users/me`) before a storm, as by
    users already on the event's page: the worker has it cached and its first-use write is
    done, so the storm races for seats, not for token lookups. At most the pool's size at a
    time. Nothing to do with tokens off."""
    if api.auth != "tokens":
        return
    gate = asyncio.Semaphore(api.pool_max)

    async def one(user: int) -> None:
        async with gate:
            response = await client.get(f"{API}/users/me", headers=bearer(user))
        assert response.status_code == 200, response.text

    await asyncio.gather(*(one(u) for u in users))


async def organizer_of(db: Db, event: int) -> int:
    organizer: int = await db.fetchval("SELECT organizer_id FROM events WHERE id = $1", event)
    return organizer


async def run_for(
    seconds: float, max_ops: int, workers: int, op: Callable[[int, int], Awaitable[object]]
) -> int:
    """`workers` loops calling op(worker, i) until `seconds` pass or `max_ops` ran in total."""
    deadline = time.monotonic() + seconds
    count = 0

    async def worker(w: int) -> None:
        nonlocal count
        while time.monotonic() < deadline and count < max_ops:
            count += 1
            await op(w, count)

    await asyncio.gather(*(worker(w) for w in range(workers)))
    return count


async def verify(
    history: History,
    db: Db,
    api: ApiProcess,
    *,
    initial: dict[int, int],
    sampler: Sampler | None = None,
    allowed_log: tuple[str, ...] = (),
) -> Report:
    """Everything after a run: I1-I8, no 500, samples, hygiene, the log, then deadlocks."""
    report = check(history, await read_final(db), initial=initial)
    report.violations += sampler.violations if sampler else []
    report.violations += await hygiene(db, api.pool_max)
    report.violations += [f"log: {line}" for line in api.bad_log_lines(allowed_log)]
    await api.stop()  # backends exit and flush their statistics, deadlocks included
    for _ in range(100):
        if (await api_sessions(db))[0] == 0:
            break
        await asyncio.sleep(0.02)
    if n := await deadlocks(db):
        report.add("hygiene", f"{n} deadlocks detected")
    return report


@contextlib.asynccontextmanager
async def connect(url: str) -> AsyncIterator[Db]:
    conn: Db = await asyncpg.connect(url)
    try:
        yield conn
    finally:
        await conn.close()


class TcpProxy:
    """An asyncio TCP proxy on 127.0.0.1 between the API and PostgreSQL (plan item a7).

    `latency` delays every chunk; `blackhole()` stops forwarding in both directions (the
    sockets stay open: silence, as when a network drops packets); `reset_all()` aborts
    every proxied connection at once.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.latency = 0.0
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> TcpProxy:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()
        self.reset_all()
        await self.server.wait_closed()

    def url(self, database_url: str) -> str:
        return database_url.replace(f":{self.target_port}/", f":{self.port}/")

    def blackhole(self) -> None:
        self.flowing.clear()

    def heal(self) -> None:
        self.flowing.set()

    def reset_all(self) -> int:
        writers, self.writers = self.writers, set()
        for writer in writers:
            writer.transport.abort()
        return len(writers) // 2

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                await self.flowing.wait()
                if self.latency:
                    await asyncio.sleep(self.latency)
                writer.write(data)
                await writer.drain()
        self.writers.discard(writer)
        writer.transport.abort()
