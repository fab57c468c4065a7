"""Request ids, /metrics and the JSON log lines (issue 13, items 2 and 3).

In-process tests read prometheus_client's registry of this process before and after; the
served ones run `python -m eventreg serve` as a user would (two workers where it matters)
and read what it printed.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeAlias

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from prometheus_client import REGISTRY
from starlette.routing import Route

from eventreg import logs, metrics, spawn
from eventreg.admin import create_admin
from eventreg.app import create_app
from eventreg.config import Settings
from tests.factories import make_event, make_user
from tests.tickets import make_door

Db: TypeAlias = "asyncpg.Connection[asyncpg.Record]"
API = "/api/v1"


def sample(name: str, **labels: str) -> float:
    metrics.TALLY.fold()  # request counts wait for the next fold (once a second) otherwise
    return REGISTRY.get_sample_value(name, labels) or 0.0


def lock_waits() -> float:
    """Event locks taken by registrations: alone (a group of one) or by a group."""
    by = ("register", "group")
    return sum(sample("eventreg_event_lock_wait_seconds_count", by=b) for b in by)


def outcomes() -> dict[str, float]:
    names = ("created", "waitlisted", "full", "duplicate", "promoted")
    return {o: sample("eventreg_registrations_total", outcome=o) for o in names}


# -- request ids ------------------------------------------------------------------------------
async def test_every_answer_carries_a_request_id(client: httpx.AsyncClient) -> None:
    made = await client.get("/")
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    assert (await client.get("/")).headers["x-request-id"] != made.headers["x-request-id"]
    missing = await client.get("/api/v1/nope")
    assert missing.status_code == 404
    assert re.fullmatch(r"[0-9a-f]{32}", missing.headers["x-request-id"])


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("7d1e0c52-6e1f-4a8e-9b7a-0f6c2d1e9a44", True),
        ("Root=1-5e1b4151-5ac6c58f5b5daa6532e4f2e4;Parent=53995c3f", True),
        ("x" * 200, True),
        ("x" * 201, False),
        ("two words", False),
        ("caf\u00e9".encode(), False),
        ("tab\there", False),
        ("", False),
    ],
)
async def test_a_proxys_request_id_is_kept_when_valid(
    client: httpx.AsyncClient, sent: str | bytes, kept: bool
) -> None:
    headers = [(b"X-Request-Id", sent if isinstance(sent, bytes) else sent.encode())]
    echoed = (await client.get("/", headers=headers)).headers["x-request-id"]
    if kept:
        assert echoed == sent
    else:
        assert re.fullmatch(r"[0-9a-f]{32}", echoed)


# -- what is counted ---------------------------------------------------------------------------
async def test_registration_outcomes_are_counted(client: httpx.AsyncClient, db: Db) -> None:
    """created, duplicate, waitlisted, full; then a cancel promotes the head of the queue."""
    event = await make_event(client, capacity=1)
    first, second, third = [await make_user(client) for _ in range(3)]
    before = outcomes()
    register = f"{API}/registrations"
    sent = [
        ({"user_id": first["id"], "event_id": event["id"]}, 201),
        ({"user_id": first["id"], "event_id": event["id"]}, 409),
        ({"user_id": second["id"], "event_id": event["id"], "waitlist": True}, 202),
        ({"user_id": third["id"], "event_id": event["id"]}, 409),
    ]
    for body, status in sent:
        assert (await client.post(register, json=body)).status_code == status
    cancel = {"user_id": first["id"], "event_id": event["id"]}
    assert (await client.request("DELETE", register, json=cancel)).status_code == 200
    after = outcomes()
    assert {k: after[k] - before[k] for k in after} == {
        "created": 1, "waitlisted": 1, "full": 1, "duplicate": 1, "promoted": 1,
    }  # fmt: skip
    promoted = await db.fetchval(
        "SELECT count(*) FROM registrations WHERE promoted_at IS NOT NULL AND event_id = $1",
        event["id"],
    )
    assert promoted == 1


async def test_requests_groups_and_lock_waits_are_counted(client: httpx.AsyncClient) -> None:
    event = await make_event(client, capacity=5)
    user = await make_user(client)
    labels = {"route": "/api/v1/registrations", "method": "POST", "status": "201"}
    requests = sample("eventreg_http_requests_total", **labels)
    groups = sample("eventreg_admission_group_size_count")
    locks = lock_waits()
    latency = sample(
        "eventreg_http_request_duration_seconds_count", route=labels["route"], method="POST"
    )
    body = {"user_id": user["id"], "event_id": event["id"]}
    assert (await client.post(f"{API}/registrations", json=body)).status_code == 201
    assert sample("eventreg_http_requests_total", **labels) == requests + 1
    assert sample("eventreg_admission_group_size_count") == groups + 1
    assert lock_waits() == locks + 1  # a group of one takes the single path's lock
    assert (
        sample("eventreg_http_request_duration_seconds_count", route=labels["route"], method="POST")
        == latency + 1
    )
    unmatched = sample(
        "eventreg_http_requests_total", route="unmatched", method="GET", status="404"
    )
    await client.get("/api/v1/users/1/what/ever")
    assert (
        sample("eventreg_http_requests_total", route="unmatched", method="GET", status="404")
        == unmatched + 1
    )


async def test_a_503_is_counted_by_its_cause(database_url: str) -> None:
    """A pool of one held by a slow request: the next request times out acquiring (503)."""
    settings = Settings(database_url=database_url, pool_max_size=1, acquire_timeout_ms=200)
    app = create_app(settings)
    before = sample("eventreg_unavailable_total", cause="pool_timeout")
    async with LifespanManager(app) as manager:
        state: Any = manager._state
        async with state["pool"].acquire():  # the only connection, held here
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                response = await c.get("/health")
    assert response.status_code == 503
    assert sample("eventreg_unavailable_total", cause="pool_timeout") == before + 1


# -- /metrics ---------------------------------------------------------------------------------
async def test_metrics_show_seats_and_pools(client: httpx.AsyncClient) -> None:
    event = await make_event(client, capacity=7)
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    text = response.text
    assert f'eventreg_event_seats_available{{event_id="{event["id"]}"}} 7.0' in text
    assert f'eventreg_event_capacity{{event_id="{event["id"]}"}} 7.0' in text
    assert "eventreg_metrics_database_up 1.0" in text
    assert 'eventreg_db_pool_max{pool="primary"} 20.0' in text
    assert re.search(r'eventreg_db_pool_connections\{pool="primary"\} [1-9]', text)


async def test_metrics_off_is_404(database_url: str) -> None:
    app = create_app(Settings(database_url=database_url, metrics=False))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            assert (await c.get("/metrics")).status_code == 404


# -- served: several workers, log lines ----------------------------------------------------------
@pytest.fixture
def metrics_dir(tmp_path: Path) -> Path:
    """A PROMETHEUS_MULTIPROC_DIR given to serve, holding a stale file of an earlier run."""
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "counter_1.db").write_bytes(b"left over")
    return folder


@pytest.fixture
def served(database_url: str, metrics_dir: Path) -> Iterator[spawn.Server]:
    """`serve` with two workers and tokens on, as in production: JSON lines on stdout."""
    server = spawn.start(
        workers=2, database_url=database_url,
        env={"EVENTREG_AUTH": "tokens", "ACCESS_LOG": "1", "LOG_FORMAT": "json",
             "RATE_SIGNUP_PER_MINUTE": "0", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
    )  # fmt: skip
    try:
        yield server
    finally:
        server.stop()


def test_metrics_add_up_every_worker_and_need_an_admin(
    served: spawn.Server, database_url: str, metrics_dir: Path
) -> None:
    """Both workers' pools are in the sum, and every request is counted exactly once,
    whichever worker served it and whichever answers the scrape (each request on a new
    connection, so the kernel spreads them). A worker folds its counts in once a second,
    so a scrape by the other may lag by that much: the counts must reach the total and
    never pass it."""
    admin = asyncio.run(create_admin(database_url, "Ops", "ops@example.org"))
    assert admin.token is not None
    assert not (metrics_dir / "counter_1.db").exists()  # the old run's counts are gone
    for _ in range(40):
        assert httpx.get(f"{served.url}/", timeout=10).status_code == 200
    assert httpx.get(f"{served.url}/metrics", timeout=10).status_code == 401
    bearer = {"Authorization": f"Bearer {admin.token}"}
    counted = re.compile(
        r'eventreg_http_requests_total\{method="GET",route="/",status="200"\} (\S+)'
    )
    seen: list[float] = []
    deadline = time.monotonic() + 10
    while (not seen or seen[-1] < 40) and time.monotonic() < deadline:
        text = httpx.get(f"{served.url}/metrics", headers=bearer, timeout=10).text
        assert 'eventreg_db_pool_max{pool="primary"} 20.0' in text  # 2 workers x 10
        found = counted.search(text)
        seen.append(float(found.group(1)) if found else 0.0)
        time.sleep(0.2)
    assert seen[-1] == 40, seen
    assert max(seen) == 40
    assert len(list(metrics_dir.glob("counter_*.db"))) >= 2  # the workers' (and serve's own)


def test_one_json_line_per_request_without_secrets(served: spawn.Server, database_url: str) -> None:
    signup = httpx.post(
        f"{served.url}{API}/users", json={"name": "Jo", "email": "jo@example.org"}, timeout=10
    )
    assert signup.status_code == 201
    user, token = signup.json()["id"], signup.json()["token"]
    headers = {"Authorization": f"Bearer {token}", "X-Request-Id": "from-the-proxy-1"}
    me = httpx.get(f"{served.url}{API}/users/me", headers=headers, timeout=10)
    assert me.status_code == 200
    headers["X-Request-Id"] = "from-the-proxy-2"
    bad = httpx.get(f"{served.url}{API}/users/x", headers=headers, timeout=10)
    assert bad.status_code == 400
    text = stopped_log(served)
    lines = [line for line in json_lines(text) if "route" in line]
    by_id = {line["request_id"]: line for line in lines}
    mine = by_id["from-the-proxy-1"]
    assert mine["route"] == "/api/v1/users/me"
    assert (mine["method"], mine["status"], mine["user_id"]) == ("GET", 200, user)
    assert isinstance(mine["duration_ms"], float)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", mine["time"])
    refused = by_id["from-the-proxy-2"]
    assert refused["route"] == "/api/v1/users/{id}"
    assert (refused["status"], refused["code"], refused["user_id"]) == (400, "invalid_id", user)
    assert set(mine) == {"time", "request_id", "method", "route", "status", "duration_ms",
                         "user_id"}  # fmt: skip
    assert token not in text
    assert "jo@example.org" not in text


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def stopped_log(server: spawn.Server) -> str:
    """Everything the server printed, once it has stopped (its lines are all flushed)."""
    server.process.terminate()
    server.process.wait(30)
    return server.log_path.read_text()


def test_text_format_keeps_uvicorns_lines(database_url: str) -> None:
    server = spawn.start(database_url=database_url, env={"LOG_FORMAT": "text", "ACCESS_LOG": "1"})
    try:
        assert httpx.get(f"{server.url}/", timeout=10).status_code == 200
    finally:
        text = stopped_log(server)
        server.stop()
    assert '"GET / HTTP/1.1" 200' in text
    assert not any(line.startswith("{") for line in text.splitlines())


async def test_a_500_has_its_request_id_line_and_record(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected exception: the 500 still carries X-Request-Id, its request line says
    internal_error, and the logged traceback is one JSON record with the same request id."""

    async def broken(_: Any) -> Any:
        raise RuntimeError("a bug")

    sink = io.BytesIO()
    monkeypatch.setattr(logs, "REQUESTS", logs.RequestLines(sink))
    records = io.StringIO()
    handler = logging.StreamHandler(records)
    handler.setFormatter(logs.JsonFormatter())
    logging.getLogger("eventreg").addHandler(handler)
    app = create_app(Settings(database_url=database_url))
    app.router.routes.append(Route("/broken", broken))
    try:
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                response = await c.get("/broken", headers={"X-Request-Id": "bug-1"})
    finally:
        logging.getLogger("eventreg").removeHandler(handler)
    assert (response.status_code, response.headers["x-request-id"]) == (500, "bug-1")
    (line,) = json_lines(sink.getvalue().decode())
    assert (line["route"], line["status"], line["code"]) == ("/broken", 500, "internal_error")
    (record,) = json_lines(records.getvalue())
    assert (record["level"], record["request_id"]) == ("error", "bug-1")
    assert "RuntimeError: a bug" in record["exc"]


async def test_check_ins_are_counted_by_outcome(
    tokens_client: httpx.AsyncClient, database_url: str
) -> None:
    """A first scan, the same ticket again, a forged code, then an offline batch."""
    door = await make_door(tokens_client, database_url, attendees=2)
    scan = ("checked_in", "already_checked_in", "invalid_ticket")
    before = {o: sample("eventreg_check_ins_total", outcome=o, source="scan") for o in scan}
    batch_before = sample("eventreg_check_ins_total", outcome="checked_in", source="batch")
    assert (await door.scan(tokens_client, door.code(0))).status_code == 201
    assert (await door.scan(tokens_client, door.code(0))).status_code == 200
    assert (await door.scan(tokens_client, door.code(0)[:-4] + "AAAA")).status_code == 422
    after = {o: sample("eventreg_check_ins_total", outcome=o, source="scan") for o in scan}
    assert {o: after[o] - before[o] for o in scan} == dict.fromkeys(scan, 1)
    uploaded = await tokens_client.post(
        f"{API}/events/{door.event}/check-ins/batch",
        json={"scans": [{"code": door.code(1), "scanned_at": "2026-01-01T10:00:00Z"}]},
        headers={"Authorization": f"Bearer {door.door_token}"},
    )
    assert uploaded.status_code == 200, uploaded.text
    batch = sample("eventreg_check_ins_total", outcome="checked_in", source="batch")
    assert batch == batch_before + 1
