"""The load script's core against the in-process app, and its command line against a real
server process. Only outcomes are asserted here; speed is `make bench`'s business."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeAlias

import asyncpg
import httpx
import msgspec
import pytest
from asgi_lifespan import LifespanManager

from eventreg import load, spawn
from eventreg.admin import create_admin
from eventreg.app import create_app
from eventreg.config import Settings
from eventreg.load import LoadError, Options, Report

Db: TypeAlias = "asyncpg.Connection[asyncpg.Record]"


# `tokens_client` (conftest): the app with tokens on and no rate limits, as `make load`
# starts its server.


@asynccontextmanager
async def limited_signups(database_url: str, per_minute: int) -> AsyncIterator[httpx.AsyncClient]:
    """The app with tokens on and at most `per_minute` sign-ups a minute per address."""
    settings = Settings(
        database_url=database_url, auth_mode="tokens", rate_signup_per_minute=per_minute,
        rate_register_per_minute=0,
    )  # fmt: skip
    async with LifespanManager(create_app(settings)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.fixture
async def admin_token(database_url: str) -> str:
    admin = await create_admin(database_url, "Load admin", "admin@load.example")
    assert isinstance(admin.token, str)
    return admin.token


async def attendee_tokens(db: Db) -> list[asyncpg.Record]:
    """Each live attendee's tokens: how many, and how many were ever used."""
    return list(await db.fetch(
        """SELECT u.id, count(t.id) AS tokens, count(t.last_used_at) AS used
             FROM users u LEFT JOIN api_tokens t ON t.user_id = u.id
            WHERE u.role = 'attendee' AND u.deleted_at IS NULL
            GROUP BY u.id"""
    ))  # fmt: skip


async def test_race_sells_exactly_the_seats(client: httpx.AsyncClient) -> None:
    report = await load.run(client, Options(tasks=30, seats=7))
    (r,) = report.rounds
    assert report.passed, r.problems
    assert (r.tasks, r.successes, r.failures) == (30, 7, {"event_full": 23})
    assert (r.available_seats, r.registrations, r.server_errors) == (0, 7, 0)
    assert "Verdict: PASS" in load.render(report)


async def test_more_seats_than_tasks_all_win(client: httpx.AsyncClient) -> None:
    report = await load.run(client, Options(tasks=12, seats=20))
    (r,) = report.rounds
    assert report.passed, r.problems
    assert (r.successes, r.failures, r.available_seats, r.registrations) == (12, {}, 8, 12)


async def test_rounds_use_fresh_events(client: httpx.AsyncClient) -> None:
    report = await load.run(client, Options(tasks=10, seats=3, rounds=3))
    assert report.passed
    assert [r.successes for r in report.rounds] == [3, 3, 3]
    assert len({r.event_id for r in report.rounds}) == 3


async def test_duplicate_one_user_wins_once(client: httpx.AsyncClient) -> None:
    report = await load.run(client, Options(tasks=25, seats=10, mode="duplicate"))
    (r,) = report.rounds
    assert report.passed, r.problems
    assert (r.successes, r.failures) == (1, {"already_registered": 24})
    assert (r.available_seats, r.registrations) == (9, 1)


async def test_cancel_storm_releases_the_seat_once(client: httpx.AsyncClient) -> None:
    report = await load.run(client, Options(tasks=25, seats=4, mode="cancel-storm"))
    (r,) = report.rounds
    assert report.passed, r.problems
    assert (r.successes, r.failures, r.statuses) == (1, {"not_registered": 24},
                                                     {"200": 1, "404": 24})  # fmt: skip
    assert (r.available_seats, r.registrations) == (4, 0)


@pytest.mark.parametrize(
    ("answers", "seats_left", "registrations", "problem"),
    [
        ([("201", "")] * 4, 0, 4, "OVERSOLD"),
        ([("201", "")] * 3, 1, 3, "disagree"),
        ([("201", ""), ("201", ""), ("503", "service_unavailable")], 1, 2, "5xx"),
        ([("201", ""), ("201", ""), ("201", ""), ("409", "already_registered")], 0, 3,
         "unexpected failures"),
    ],
)  # fmt: skip
def test_the_verdict_fails_on_what_must_not_happen(
    answers: list[tuple[str, str]], seats_left: int, registrations: int, problem: str
) -> None:
    options = Options(tasks=len(answers), seats=3)
    r = load.judge(options, 1, 1, answers, seats_left, registrations, 0.1)
    assert not r.passed
    assert any(problem in p for p in r.problems), r.problems
    report = Report("race", options.tasks, 3, [r], passed=False, seconds=0.1)
    assert "Verdict: FAIL" in load.render(report)


async def test_tokens_race_each_user_registers_with_its_own_token(
    tokens_client: httpx.AsyncClient, admin_token: str, db: Db
) -> None:
    report = await load.run(tokens_client, Options(tasks=30, seats=7), admin_token)
    (r,) = report.rounds
    assert report.passed, r.problems
    assert report.tokens
    assert (r.tasks, r.successes, r.failures) == (30, 7, {"event_full": 23})
    assert (r.available_seats, r.registrations, r.server_errors) == (0, 7, 0)
    # 30 sign-ups, each holding the one token its sign-up made, which it presented: a
    # registration by any other token is a 403, which fails the verdict. (Use is recorded
    # in bulk every few seconds, so last_used_at may not be written yet.)
    assert [t["tokens"] for t in await attendee_tokens(db)] == [1] * 30
    assert "each user with its own token" in load.render(report)


async def test_tokens_cancel_storm_as_the_holder(
    tokens_client: httpx.AsyncClient, admin_token: str
) -> None:
    report = await load.run(tokens_client, Options(tasks=25, seats=4, mode="cancel-storm"),
                            admin_token)  # fmt: skip
    (r,) = report.rounds
    assert report.passed, r.problems
    assert (r.successes, r.failures) == (1, {"not_registered": 24})
    assert (r.available_seats, r.registrations) == (4, 0)


async def test_tokens_without_an_admin_token_is_a_setup_failure(
    tokens_client: httpx.AsyncClient, db: Db
) -> None:
    with pytest.raises(LoadError, match="admin's token"):
        await load.run(tokens_client, Options(tasks=5, seats=2))
    assert await db.fetchval("SELECT count(*) FROM events") == 0


async def test_past_the_signup_limit_the_admin_makes_the_users(
    database_url: str, admin_token: str, db: Db
) -> None:
    """A server that limits sign-ups to 5 a minute: all 12 users still exist, each with a
    token of its own, and the race is judged as usual."""
    async with limited_signups(database_url, per_minute=5) as client:
        report = await load.run(client, Options(tasks=12, seats=3), admin_token)
    assert report.passed, report.rounds[0].problems
    assert [(t["tokens"], t["used"]) for t in await attendee_tokens(db)] == [(1, 1)] * 12


async def test_command_line_against_a_real_server(
    database_url: str, admin_token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server already running with tokens on and its default rate limits (20 sign-ups a
    minute: the admin makes the other 20 users), and an admin token on the command line."""
    server = spawn.start(workers=1, database_url=database_url, env={"EVENTREG_AUTH": "tokens"})
    try:
        args = ["--url", server.url, "--tasks", "40", "--seats", "9", "--json",
                "--admin-token", admin_token]  # fmt: skip
        code = await asyncio.to_thread(load.main, args)
    finally:
        assert server.stop() == 0
    assert code == 0
    report = msgspec.json.decode(capsys.readouterr().out, type=Report)
    (r,) = report.rounds
    assert report.passed
    assert report.tokens
    assert (r.successes, r.failures) == (9, {"event_full": 31})


async def test_command_line_makes_and_deletes_its_own_admin(
    database_url: str, db: Db, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No admin token: one is made in the database `make run` uses ($DATABASE_URL here) for
    the run, and deleted after it, its token revoked."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.delenv(load.ADMIN_TOKEN_ENV, raising=False)
    env = {"EVENTREG_AUTH": "tokens", "RATE_SIGNUP_PER_MINUTE": "0"}
    server = spawn.start(workers=1, database_url=database_url, env=env)
    try:
        args = ["--url", server.url, "--tasks", "10", "--seats", "4", "--json"]
        code = await asyncio.to_thread(load.main, args)
    finally:
        assert server.stop() == 0
    assert code == 0
    assert msgspec.json.decode(capsys.readouterr().out, type=Report).passed
    admins = await db.fetch(
        """SELECT u.deleted_at, t.revoked_at FROM users u JOIN api_tokens t ON t.user_id = u.id
            WHERE u.role = 'admin'"""
    )
    assert len(admins) == 1
    assert admins[0]["deleted_at"] is not None
    assert admins[0]["revoked_at"] is not None
