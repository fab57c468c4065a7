"""`python -m eventreg.load` (`make load`): many clients race for few seats, over real HTTP.

It creates its own organizer, event and users through the API, releases every registration
at once, reads the event back through the API and checks that exactly the right number won,
that the seat counter agrees with the registrations, and that nothing answered 5xx. With no
server at --url it starts one (embedded database) for the run and stops it afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import msgspec

from eventreg import spawn

Mode = Literal["race", "duplicate", "cancel-storm"]
Clients = Sequence[httpx.AsyncClient]
API = "/api/v1"
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


class LoadError(Exception):
    """The API refused the setup (creating users or the event): not a verdict, a failure."""


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
async def _create(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> int:
    response = await client.post(f"{API}/{path}", json=body)
    if response.status_code != 201:
        raise LoadError(f"POST {API}/{path} answered {response.status_code}: {response.text}")
    return int(response.json()["id"])


async def _gather_bounded(
    calls: list[Callable[[], Awaitable[int]]], limit: int, progress: Progress
) -> list[int]:
    gate = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[int]]) -> int:
        async with gate:
            result = await call()
            progress.done += 1
            return result

    return list(await asyncio.gather(*(one(c) for c in calls)))


async def create_users(
    clients: Clients, count: int, run: str, progress: Progress
) -> tuple[int, list[int]]:
    """An organizer and `count` attendees, all new (emails carry the run's token)."""
    organizer = await _create(clients[0], "users", {
        "name": "Load organizer", "email": f"organizer-{run}@load.example", "role": "organizer",
    })  # fmt: skip

    def attendee(i: int) -> Callable[[], Awaitable[int]]:
        body = {"name": f"Load user {i}", "email": f"u{i}-{run}@load.example"}
        return lambda: _create(clients[i % len(clients)], "users", body)

    with progress.step("creating users", count):
        users = await _gather_bounded([attendee(i) for i in range(count)], 50, progress)
    return organizer, users


async def _send(client: httpx.AsyncClient, method: str, body: dict[str, int]) -> tuple[str, str]:
    """(status, code): the HTTP status and the problem code ("" on success)."""
    try:
        response = await client.request(method, f"{API}/registrations", json=body)
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
    clients: Clients, method: str, bodies: list[dict[str, int]], progress: Progress
) -> list[tuple[str, str]]:
    """Send every request at the same moment: all tasks wait on one gate, then go."""
    gate = asyncio.Event()

    async def one(client: httpx.AsyncClient, body: dict[str, int]) -> tuple[str, str]:
        await gate.wait()
        result = await _send(client, method, body)
        progress.done += 1
        return result

    tasks = [asyncio.ensure_future(one(clients[i % len(clients)], body))
             for i, body in enumerate(bodies)]  # fmt: skip
    await asyncio.sleep(0)  # let every task reach the gate
    gate.set()
    return list(await asyncio.gather(*tasks))


async def event_state(client: httpx.AsyncClient, event_id: int) -> tuple[int, int]:
    """(available_seats, active registrations), both read through the API."""
    event = (await client.get(f"{API}/events/{event_id}")).raise_for_status().json()
    count, url = 0, f"{API}/registrations/event/{event_id}?limit=1000"
    for _ in range(10_000):  # pages of 1000: bounded well above any capacity
        page = (await client.get(url)).raise_for_status()
        count += len(page.json())
        if "next" not in page.links:
            break
        url = str(page.links["next"]["url"])
    return int(event["available_seats"]), count


# -- one round -------------------------------------------------------------------------------
async def play_round(
    clients: Clients, options: Options, number: int, organizer: int, users: list[int],
    progress: Progress,
) -> Round:  # fmt: skip
    client = clients[0]
    event_id = await _create(client, "events", {
        "title": f"Load round {number}", "capacity": options.seats, "organizer_id": organizer,
    })  # fmt: skip
    method, bodies = "POST", [{"user_id": u, "event_id": event_id} for u in users]
    if options.mode == "duplicate":
        bodies = [bodies[0]] * options.tasks
    elif options.mode == "cancel-storm":
        if await _send(client, "POST", bodies[0]) != ("201", ""):
            raise LoadError(f"could not register user {users[0]} for the cancel storm")
        method, bodies = "DELETE", [bodies[0]] * options.tasks
    started = time.perf_counter()
    with progress.step(f"round {number}/{options.rounds}", len(bodies)):
        answers = await fire(clients, method, bodies, progress)
    seconds = time.perf_counter() - started
    seats, registrations = await event_state(client, event_id)
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
    return Round(
        round=number, event_id=event_id, tasks=len(answers), capacity=options.seats,
        expected_successes=expected, successes=successes, failures=dict(sorted(failures.items())),
        statuses=dict(sorted(statuses.items())), server_errors=server_errors,
        available_seats=seats, registrations=registrations, seconds=round(seconds, 4),
        problems=problems,
    )  # fmt: skip


async def run(client: httpx.AsyncClient | Clients, options: Options) -> Report:
    """The whole load test against the API behind `client` (a real URL or an ASGI app).
    Several clients share the requests round-robin (see `run_url`)."""
    clients = [client] if isinstance(client, httpx.AsyncClient) else list(client)
    started, progress = time.perf_counter(), Progress(options.progress)
    user_count = options.tasks if options.mode == "race" else 1
    organizer, users = await create_users(clients, user_count, uuid.uuid4().hex[:12], progress)
    rounds = [
        await play_round(clients, options, n, organizer, users, progress)
        for n in range(1, options.rounds + 1)
    ]
    return Report(
        mode=options.mode, tasks=options.tasks, seats=options.seats, rounds=rounds,
        passed=all(r.passed for r in rounds), seconds=round(time.perf_counter() - started, 3),
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
    args = p.parse_args(argv)
    if not 1 <= args.tasks <= 5000 or not 1 <= args.seats <= 1_000_000:
        p.error("--tasks must be 1..5000 and --seats 1..1000000")
    if not 1 <= args.rounds <= 1000:
        p.error("--rounds must be 1..1000")
    return args


async def run_url(url: str, options: Options) -> Report:
    """One client per 50 tasks: a single httpx client with thousands of connections spends
    its time searching its own pool (2,000 tasks took 20 s of client CPU)."""
    count = -(-options.tasks // CLIENT_CONNECTIONS)
    limits = httpx.Limits(max_connections=CLIENT_CONNECTIONS)
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(base_url=url, limits=limits,
                                                              timeout=60))
            for _ in range(count)
        ]  # fmt: skip
        return await run(clients, options)


def say(message: str) -> None:
    print(f"load: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options = Options(tasks=args.tasks, seats=args.seats, rounds=args.rounds,
                      mode=args.mode or "race", progress=sys.stderr.isatty())  # fmt: skip
    url, server = args.url, None
    status = spawn.probe(url)
    if status is None:
        say(f"nothing answers at {url}; starting a server on the embedded database")
        server = spawn.start(workers=1)
        url = server.url
        say(f"server up at {url} (pid {server.pid})")
    elif status != 200:
        say(f"the server at {url} is not healthy: /health answered {status}")
        return 2
    try:
        report = asyncio.run(run_url(url, options))
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
