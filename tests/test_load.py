"""The load script's core against the in-process app, and its command line against a real
server process. Only outcomes are asserted here; speed is `make bench`'s business."""

from __future__ import annotations

import httpx
import msgspec
import pytest

from eventreg import load, spawn
from eventreg.load import Options, Report


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


def test_command_line_against_a_real_server(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    server = spawn.start(workers=1, database_url=database_url)
    try:
        code = load.main(["--url", server.url, "--tasks", "40", "--seats", "9", "--json"])
    finally:
        assert server.stop() == 0
    assert code == 0
    report = msgspec.json.decode(capsys.readouterr().out, type=Report)
    (r,) = report.rounds
    assert report.passed
    assert (r.successes, r.failures) == (9, {"event_full": 31})
