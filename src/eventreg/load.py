"""`python -m eventreg.load` (`make load`): many clients race for few seats, over real HTTP.

It creates its own organizer, event and users through the API, releases every registration
at once, reads the event back through the API and checks that exactly the right number won,
that the seat counter agrees with the registrations, and that nothing answered 5xx. With no
server at --url it starts one (embedded database, EVENTREG_AUTH=tokens unless --auth open)
for the run and stops it afterwards.

With tokens on, each user signs up through the API and registers (or cancels) with the
token its sign-up answer carried. The organizer, the event and the read-back of the
registrations need an admin token: --admin-token (or $EVENTREG_ADMIN_TOKEN), or else one
made for the run in the database (`eventreg.admin.create_admin`) and deleted after it. The
database is the started server's own; for a server that was already running it is the one
`make run` uses ($DATABASE_URL or the embedded one), so pass a token for any other server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
import httpx
import msgspec

from eventreg import devdb, spawn
from eventreg.admin import create_admin

Mode = Literal["race", "duplicate", "cancel-storm"]
Clients = Sequence[httpx.AsyncClient]
Headers = Mapping[str, str]
API = "/api/v1"
ADMIN_TOKEN_ENV = "EVENTREG_ADMIN_TOKEN"
# The server this script starts when none answers. Both rate limits are off there: this is
# a test of the seat accounting under a race, and 50 sign-ups from one address would meet
# the sign-up limit (20 a minute) long before the race. A server that was already running
# keeps its limits; past its sign-up limit the admin creates the remaining users (admins
# are exempt), and a registration refused by its limiter fails the verdict with a hint.
SERVER_ENV: dict[str, dict[str, str]] = {
    "tokens": {
        "EVENTREG_AUTH": "tokens", "RATE_SIGNUP_PER_MINUTE": "0", "RATE_REGISTER_PER_MINUTE": "0",
    },
    "open": {"EVENTREG_AUTH": "open"},
}  # fmt: skip
CLIENT_CONNECTIONS = 50
EXPECTED_FAILURE: dict[Mode, str] = {
    "race": "event_full",
    "duplicate": "already_registered",
    "cancel-storm": "not_registered",
}


@dataclass(frozen=True, slots=True)
class Options:
    tasks: int = 50
    seats: int = 10
    rounds: int = 1
    mode: Mode = "race"
    progress: bool = False


class Round(msgspec.Struct, frozen=True):
    round: int
    event_id: int
    tasks: int
    capacity: int
    expected_successes: int
    successes: int
    failures: dict[str, int]  # problem code (event_full, already_registered, …) -> count
    statuses: dict[str, int]  # HTTP status ("201", "409", "no_answer") -> count
    server_errors: int
    available_seats: int  # read back through the API after the round
    registrations: int  # active registrations listed by the API after the round
    seconds: float
    problems: list[str]

    @property
    def passed(self) -> bool:
        return not self.problems


class Report(msgspec.Struct, frozen=True):
    mode: str
    tasks: int
    seats: int
    rounds: list[Round]
    passed: bool
    seconds: float
    tokens: bool = False  # each user signed up and sent its own token (EVENTREG_AUTH=tokens)


NEEDS_ADMIN = (
    f"; with tokens on, pass an admin's token (--admin-token or ${ADMIN_TOKEN_ENV}; "
    "`python -m eventreg admin create` makes one)"
)


class LoadError(Exception):
    """The API refused the setup (creating users or the event): not a verdict, a failure."""


@dataclass(frozen=True, slots=True)
class User:
    id: int
    auth: Headers  # Authorization with the user's own token; empty with tokens off


@dataclass(frozen=True, slots=True)
class Call:
    """One request of a round: its body and whose token it carries."""

    body: dict[str, int]
    auth: Headers


def bearer(token: str | None) -> Headers:
    return {"Authorization": f"Bearer {token}"} if token else {}


# -- progress ------------------------------------------------------------------------------
class Progress:
    """A live counter on stderr, shown only once a step has taken more than a moment."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.label, self.done, self.total = enabled, "", 0, 0
        self._shown = False

    @contextmanager
    def step(self, label: str, total: int) -> Iterator[None]:
        self.label, self.done, self.total, started = label, 0, total, time.monotonic()
        ticker = asyncio.ensure_future(self._tick(started)) if self.enabled else None
        try:
            yield
        finally:
            if ticker:
                ticker.cancel()
            if self._shown:
                sys.stderr.write(f"\r\x1b[K{self.label}: {self.done}/{self.total} done\n")
                self._shown = False

    async def _tick(self, started: float) -> None:
        await asyncio.sleep(0.3)
        while True:
            rate = self.done / max(time.monotonic() - started, 1e-6)
            sys.stderr.write(f"\r\x1b[K{self.label}: {self.done}/{self.total} ({rate:.0f}/s)")
            sys.stderr.flush()
            self._shown = True
            await asyncio.sleep(0.1)


# -- the API calls ---------------------------------------------------------------------------
async def _create(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], auth: Headers
) -> dict[str, Any]:
    response = await client.post(f"{API}/{path}", json=body, headers=auth)
    if response.status_code != 201:
        hint = NEEDS_ADMIN if response.status_code in (401, 403) else ""
        raise LoadError(f"POST {API}/{path} answered {response.status_code}: {response.text}{hint}")
    made: dict[str, Any] = response.json()
    return made


async def sign_up(client: httpx.AsyncClient, body: dict[str, Any], admin: Headers) -> User:
    """A new attendee through the public sign-up, holding the token its answer carries.
    Past the server's sign-up limit (429) the admin makes the user instead, if there is one:
    admins are exempt, and the answer carries the new user's own token all the same."""
    response = await client.post(f"{API}/users", json=body)
    if response.status_code == 429 and admin:
        response = await client.post(f"{API}/users", json=body, headers=admin)
    if response.status_code != 201:
        raise LoadError(f"POST {API}/users answered {response.status_code}: {response.text}")
    made = response.json()
    return User(int(made["id"]), bearer(made.get("token")))


async def _gather_bounded(
    calls: list[Callable[[], Awaitable[User]]], limit: int, progress: Progress
) -> list[User]:
    gate = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[User]]) -> User:
        async with gate:
            result = await call()
            progress.done += 1
            return result

    return list(await asyncio.gather(*(one(c) for c in calls)))


async def create_users(
    clients: Clients, count: int, run: str, progress: Progress, admin: Headers
) -> tuple[int, list[User]]:
    """An organizer (made by the admin) and `count` attendees who sign up, all new (emails
    carry the run's id)."""
    organizer = await _create(clients[0], "users", {
        "name": "Load organizer", "email": f"organizer-{run}@load.example", "role": "organizer",
    }, admin)  # fmt: skip

    def attendee(i: int) -> Callable[[], Awaitable[User]]:
        body = {"name": f"Load user {i}", "email": f"u{i}-{run}@load.example"}
        return lambda: sign_up(clients[i % len(clients)], body, admin)

    with progress.step("creating users", count):
        users = await _gather_bounded([attendee(i) for i in range(count)], 50, progress)
    return int(organizer["id"]), users


async def _send(client: httpx.AsyncClient, method: str, call: Call) -> tuple[str, str]:
    """(status, code): the HTTP status and the problem code ("" on success)."""
    try:
        response = await client.request(
            method, f"{API}/registrations", json=call.body, headers=call.auth
        )
    except httpx.HTTPError as exc:
        return "no_answer", f"no_answer ({type(exc).__name__})"
    if response.is_success:
        return str(response.status_code), ""
    try:
        code = str(response.json().get("code", "other"))
    except ValueError:
        code = "other"
    return str(response.status_code), code


async def fire(
    clients: Clients, method: str, calls: list[Call], progress: Progress
) -> list[tuple[str, str]]:
    """Send every request at the same moment: all tasks wait on one gate, then go."""
    gate = asyncio.Event()

    async def one(client: httpx.AsyncClient, call: Call) -> tuple[str, str]:
        await gate.wait()
        result = await _send(client, method, call)
        progress.done += 1
        return result

    tasks = [asyncio.ensure_future(one(clients[i % len(clients)], call))
             for i, call in enumerate(calls)]  # fmt: skip
    await asyncio.sleep(0)  # let every task reach the gate
    gate.set()
    return list(await asyncio.gather(*tasks))


async def event_state(client: httpx.AsyncClient, event_id: int, admin: Headers) -> tuple[int, int]:
    """(available_seats, active registrations), both read through the API (the list of
    who comes is for the organizer and admins)."""
    event = (await client.get(f"{API}/events/{event_id}")).raise_for_status().json()
    count, url = 0, f"{API}/registrations/event/{event_id}?limit=1000"
    for _ in range(10_000):  # pages of 1000: bounded well above any capacity
        page = (await client.get(url, headers=admin)).raise_for_status()
        count += len(page.json())
        if "next" not in page.links:
            break
        url = str(page.links["next"]["url"])
    return int(event["available_seats"]), count


# -- one round -------------------------------------------------------------------------------
async def play_round(
    clients: Clients, options: Options, number: int, organizer: int, users: list[User],
    progress: Progress, admin: Headers,
) -> Round:  # fmt: skip
    client = clients[0]
    event = await _create(client, "events", {
        "title": f"Load round {number}", "capacity": options.seats, "organizer_id": organizer,
    }, admin)  # fmt: skip
    event_id = int(event["id"])
    method, calls = "POST", [Call({"user_id": u.id, "event_id": event_id}, u.auth) for u in users]
    if options.mode == "duplicate":
        calls = [calls[0]] * options.tasks
    elif options.mode == "cancel-storm":
        if await _send(client, "POST", calls[0]) != ("201", ""):
            raise LoadError(f"could not register user {users[0].id} for the cancel storm")
        method, calls = "DELETE", [calls[0]] * options.tasks
    started = time.perf_counter()
    with progress.step(f"round {number}/{options.rounds}", len(calls)):
        answers = await fire(clients, method, calls, progress)
    seconds = time.perf_counter() - started
    seats, registrations = await event_state(client, event_id, admin)
    return judge(options, number, event_id, answers, seats, registrations, seconds)


def expected_successes(options: Options) -> int:
    return min(options.tasks, options.seats) if options.mode == "race" else 1


def judge(
    options: Options, number: int, event_id: int, answers: list[tuple[str, str]],
    seats: int, registrations: int, seconds: float,
) -> Round:  # fmt: skip
    statuses = Counter(status for status, _ in answers)
    failures = Counter(code for _, code in answers if code)
    successes = len(answers) - sum(failures.values())
    server_errors = sum(n for s, n in statuses.items() if s.startswith("5"))
    expected = expected_successes(options)
    held = 0 if options.mode == "cancel-storm" else successes  # seats held after the round
    problems = []
    if options.mode != "cancel-storm" and successes > options.seats:
        problems.append(f"OVERSOLD: {successes} registrations for {options.seats} seats")
    if successes != expected:
        problems.append(f"expected exactly {expected} successes, got {successes}")
    if seats + registrations != options.seats or registrations != held:
        problems.append(
            f"seats and registrations disagree: capacity {options.seats}, available {seats}, "
            f"active registrations {registrations}, successful requests kept {held}"
        )
    if server_errors:
        problems.append(f"{server_errors} responses were 5xx")
    unexpected = {c: n for c, n in failures.items() if c != EXPECTED_FAILURE[options.mode]}
    if unexpected:
        problems.append(f"unexpected failures: {dict(sorted(unexpected.items()))}")
    if "rate_limited" in unexpected:
        problems.append(
            "the server limits registration attempts per user (RATE_REGISTER_PER_MINUTE, 60 "
            "by default): start it with 0 to load one user harder"
        )
    return Round(
        round=number, event_id=event_id, tasks=len(answers), capacity=options.seats,
        expected_successes=expected, successes=successes, failures=dict(sorted(failures.items())),
        statuses=dict(sorted(statuses.items())), server_errors=server_errors,
        available_seats=seats, registrations=registrations, seconds=round(seconds, 4),
        problems=problems,
    )  # fmt: skip


async def run(
    client: httpx.AsyncClient | Clients, options: Options, admin_token: str | None = None
) -> Report:
    """The whole load test against the API behind `client` (a real URL or an ASGI app).
    Several clients share the requests round-robin (see `run_url`). With tokens on, the
    server needs `admin_token` for the organizer, the event and the read-back."""
    clients = [client] if isinstance(client, httpx.AsyncClient) else list(client)
    started, progress, admin = time.perf_counter(), Progress(options.progress), bearer(admin_token)
    user_count = options.tasks if options.mode == "race" else 1
    run_id = uuid.uuid4().hex[:12]
    organizer, users = await create_users(clients, user_count, run_id, progress, admin)
    rounds = [
        await play_round(clients, options, n, organizer, users, progress, admin)
        for n in range(1, options.rounds + 1)
    ]
    return Report(
        mode=options.mode, tasks=options.tasks, seats=options.seats, rounds=rounds,
        passed=all(r.passed for r in rounds), seconds=round(time.perf_counter() - started, 3),
        tokens=all(u.auth for u in users),
    )  # fmt: skip


# -- the report ------------------------------------------------------------------------------
TITLES: dict[Mode, str] = {
    "race": "{tasks} tasks race for {seats} seats",
    "duplicate": "one user registers {tasks} times at once for an event of {seats} seats",
    "cancel-storm": "{tasks} concurrent cancels of one registration ({seats} seats)",
}


def _row(label: str, value: object, indent: int = 2) -> str:
    return f"{' ' * indent}{label + ':':<{26 - indent}}{value}"


def render_round(r: Round, mode: Mode) -> list[str]:
    expected_code = EXPECTED_FAILURE[mode]
    others = {c: n for c, n in r.failures.items() if c != expected_code}
    if mode == "race":
        others.pop("already_registered", None)
    lines = [
        _row("total tasks", r.tasks),
        _row("successful", f"{r.successes}  (expected exactly {r.expected_successes})"),
        _row("failed", r.tasks - r.successes),
        _row(expected_code.replace("_", " "), r.failures.get(expected_code, 0), 4),
    ]
    if mode == "race":
        lines.append(_row("already registered", r.failures.get("already_registered", 0), 4))
    lines += [
        _row("other", sum(others.values()), 4) + (f"  {others}" if others else ""),
        _row("HTTP statuses", ", ".join(f"{s} x{n}" for s, n in r.statuses.items())),
        _row(
            f"event {r.event_id} via API",
            f"capacity {r.capacity}, available {r.available_seats}, "
            f"active registrations {r.registrations}",
        ),
        _row("time", f"{r.seconds * 1000:.0f} ms"),
    ]
    return lines


def round_line(r: Round) -> str:
    failures = ", ".join(f"{n} {c.replace('_', ' ')}" for c, n in r.failures.items()) or "none"
    return (
        f"  round {r.round} (event {r.event_id}): {r.successes}/{r.tasks} succeeded, failed: "
        f"{failures}; via API: available {r.available_seats}, active {r.registrations}; "
        f"{r.seconds * 1000:.0f} ms: {'ok' if r.passed else 'FAILED'}"
    )


def render(report: Report) -> str:
    mode: Mode = report.mode  # type: ignore[assignment]
    title = TITLES[mode].format(tasks=report.tasks, seats=report.seats)
    if report.tokens:
        title += ", each user with its own token"
    lines = [f"Concurrency test: {title}"]
    if len(report.rounds) == 1:
        (r,) = report.rounds
        lines += render_round(r, mode)
    else:
        lines[0] += f", {len(report.rounds)} rounds on fresh events"
        lines += [round_line(r) for r in report.rounds]
    lines += [f"  problem in round {r.round}: {p}" for r in report.rounds for p in r.problems]
    if report.passed:
        lines.append(f"Verdict: PASS: {verdict_text(report)}")
    else:
        failed = [str(r.round) for r in report.rounds if not r.passed]
        lines.append(f"Verdict: FAIL in round(s) {', '.join(failed)}")
    return "\n".join(lines)


def verdict_text(report: Report) -> str:
    rounds = f" in each of {len(report.rounds)} rounds" if len(report.rounds) > 1 else ""
    first = report.rounds[0]
    what = {
        "race": f"exactly {first.expected_successes} of {report.tasks} registered",
        "duplicate": f"exactly 1 of {report.tasks} identical registrations succeeded",
        "cancel-storm": f"exactly 1 of {report.tasks} cancels succeeded, the seat came back once",
    }[report.mode]
    return f"{what}{rounds}; seats and registrations agree; no 5xx."


# -- command line ----------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m eventreg.load", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--url", default="http://127.0.0.1:8080", help="API base URL")
    p.add_argument("--tasks", type=int, default=50, help="concurrent clients (default 50)")
    p.add_argument("--seats", type=int, default=10, help="event capacity (default 10)")
    p.add_argument("--rounds", type=int, default=1, help="repeat on fresh events (default 1)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--duplicate",
        action="store_const",
        const="duplicate",
        dest="mode",
        help="one user races itself: exactly one registration may succeed",
    )
    mode.add_argument(
        "--cancel-storm",
        action="store_const",
        const="cancel-storm",
        dest="mode",
        help="concurrent cancels of one registration: exactly one may succeed",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")  # fmt: skip
    p.add_argument(
        "--admin-token", default=os.environ.get(ADMIN_TOKEN_ENV) or None,
        help=f"an admin's token, for a server with tokens on (default ${ADMIN_TOKEN_ENV}; "
        "else one is made for the run in the database, see above)",
    )  # fmt: skip
    p.add_argument(
        "--auth", choices=tuple(SERVER_ENV), default="tokens",
        help="EVENTREG_AUTH of the server started when none answers (default tokens)",
    )  # fmt: skip
    args = p.parse_args(argv)
    if not 1 <= args.tasks <= 5000 or not 1 <= args.seats <= 1_000_000:
        p.error("--tasks must be 1..5000 and --seats 1..1000000")
    if not 1 <= args.rounds <= 1000:
        p.error("--rounds must be 1..1000")
    return args


async def run_url(url: str, options: Options, admin_token: str | None = None) -> Report:
    """One client per 50 tasks: a single httpx client with thousands of connections spends
    its time searching its own pool (2,000 tasks took 20 s of client CPU).

    With tokens on and no `admin_token`, an admin is made for the run in the database
    (`temporary_admin`) and deleted afterwards, which revokes its token."""
    count = -(-options.tasks // CLIENT_CONNECTIONS)
    limits = httpx.Limits(max_connections=CLIENT_CONNECTIONS)
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(base_url=url, limits=limits,
                                                              timeout=60))
            for _ in range(count)
        ]  # fmt: skip
        if admin_token is None and await tokens_on(clients[0]):
            admin_id, admin_token = await temporary_admin()
            stack.push_async_callback(delete_user, clients[0], admin_id, admin_token)
        return await run(clients, options, admin_token)


async def tokens_on(client: httpx.AsyncClient) -> bool:
    """Whether the server wants tokens: listing users needs one then (401), not otherwise."""
    return (await client.get(f"{API}/users", params={"limit": 1})).status_code == 401


async def temporary_admin() -> tuple[int, str]:
    """An admin for this run, made in the database `make run` uses (which is the server's
    when this script started it); (its id, its token)."""
    database = devdb.current_url()
    if database is None:
        raise LoadError(f"the server has tokens on and no database is known here{NEEDS_ADMIN}")
    say("tokens on: making an admin for this run in the database (deleted afterwards)")
    email = f"load-admin-{uuid.uuid4().hex[:12]}@load.example"
    try:
        admin = await create_admin(database, "Load admin", email)
    except (OSError, asyncpg.PostgresError) as exc:
        raise LoadError(f"could not make an admin in the database: {exc!r}{NEEDS_ADMIN}") from exc
    assert isinstance(admin.token, str)  # a new user's first token, in this answer only
    return admin.id, admin.token


async def delete_user(client: httpx.AsyncClient, user_id: int, token: str) -> None:
    """Delete the run's admin (as itself), which revokes its token."""
    try:
        response = await client.delete(f"{API}/users/{user_id}", headers=bearer(token))
    except httpx.HTTPError as exc:
        say(f"could not delete the run's admin {user_id}: {exc!r}")
        return
    if response.status_code != 200:
        say(f"could not delete the run's admin {user_id}: {response.status_code}")


def say(message: str) -> None:
    print(f"load: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options = Options(tasks=args.tasks, seats=args.seats, rounds=args.rounds,
                      mode=args.mode or "race", progress=sys.stderr.isatty())  # fmt: skip
    url, server = args.url, None
    status = spawn.probe(url)
    if status is None:
        say(f"nothing answers at {url}; starting a server on the embedded database "
            f"(EVENTREG_AUTH={args.auth})")  # fmt: skip
        server = spawn.start(workers=1, env=SERVER_ENV[args.auth])
        url = server.url
        say(f"server up at {url} (pid {server.pid})")
    elif status != 200:
        say(f"the server at {url} is not healthy: /health answered {status}")
        return 2
    try:
        report = asyncio.run(run_url(url, options, args.admin_token))
    except (LoadError, httpx.HTTPError) as exc:
        say(f"setup failed: {exc}")
        return 2
    finally:
        if server is not None:
            say(f"stopping the server (exit code {server.stop()})")
    print(msgspec.json.encode(report).decode() if args.json else render(report))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
