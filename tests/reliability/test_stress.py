"""S series: a Jepsen-style mixed history, a hot event, and a Hypothesis stateful model.

Throughput and latency are printed for the record (see `make bench` for the timed
benchmark); only correctness is asserted here.
"""

from __future__ import annotations

import asyncio
import random
import statistics
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from eventreg.admin import create_admin
from tests.reliability.harness import (
    API,
    ApiProcess,
    Db,
    History,
    Op,
    Sampler,
    make_events,
    make_users,
    run_for,
    verify,
)


def latency_summary(history: History) -> str:
    parts = []
    for f in ("register", "cancel", "read"):
        durations = sorted(op.t_complete - op.t_invoke for op in history.of(f))
        if len(durations) >= 2:
            q = statistics.quantiles(durations, n=100)
            parts.append(
                f"{f}: n={len(durations)} p50={q[49] * 1000:.0f}ms p99={q[98] * 1000:.0f}ms"
            )
    return "; ".join(parts)


@pytest.mark.timeout(60)
async def test_jepsen_style_mixed_history(api: ApiProcess, tdb: Db) -> None:
    """S1: 32 workers, 60% register / 25% cancel / 15% read on 5 events for 8 s; I1-I8."""
    capacities = [1, 2, 10, 50, 1000]
    events, users = await make_events(tdb, capacities), await make_users(tdb, 200)
    history = History()
    rng = random.Random(1)

    async def op(worker: int, _: int) -> Op:
        user, event, dice = rng.choice(users), rng.choice(events), rng.random()
        if dice < 0.60:
            return await history.register(client, user, event, proc=worker)
        if dice < 0.85:
            return await history.cancel(client, user, event, proc=worker)
        return await history.read(client, event, proc=worker)

    async with api.client() as client, Sampler(api.database_url, events) as sampler:
        count = await run_for(8, 20_000, 32, op)
    elapsed = max(o.t_complete for o in history.ops) - min(o.t_invoke for o in history.ops)
    print(
        f"\nS1: {count} ops in {elapsed:.1f} s = {count / elapsed:.0f} ops/s; "
        f"{latency_summary(history)}; outcomes {dict(history.outcomes())}; "
        f"{sampler.samples} samples"
    )
    assert "error" not in history.outcomes()  # 503s are allowed; the checker bounds them
    report = await verify(
        history, tdb, api, initial=dict(zip(events, capacities, strict=True)), sampler=sampler
    )
    assert report.violations == [], "\n".join(report.violations)
    assert sampler.samples > 50


@pytest.mark.timeout(60)
@pytest.mark.parametrize("auth", ["open"])  # see tests/README.md, "Tokens mode"
async def test_hot_event_throughput(api: ApiProcess, tdb: Db) -> None:
    """S2: 1000 registrations at concurrency 50 on one event of 50 seats: 0 errors."""
    (event,), users = await make_events(tdb, [50]), await make_users(tdb, 1000)
    history = History()

    async def op(worker: int, i: int) -> Op:
        return await history.register(client, users[i - 1], event, proc=worker)

    async with api.client() as client:
        count = await run_for(40, len(users), 50, op)
    elapsed = max(o.t_complete for o in history.ops) - min(o.t_invoke for o in history.ops)
    print(
        f"\nS2: {count} registrations in {elapsed:.1f} s = {count / elapsed:.0f} req/s; "
        f"{latency_summary(history)}"
    )
    assert count == 1000
    assert history.codes() == {(201, None): 50, (409, "event_full"): 950}
    report = await verify(history, tdb, api, initial={event: 50})
    assert report.violations == [], "\n".join(report.violations)


class SeatModel(RuleBasedStateMachine):
    """The model: each event's capacity and the set of active (user, event) pairs.

    With tokens on, users sign up through the API and act with the token their sign-up
    answer carried; an admin (made in the database) creates the organizer, who creates
    and changes the events with its own token.
    """

    users = Bundle("users")
    events = Bundle("events")

    def __init__(self, base_url: str, database_url: str, auth: str) -> None:
        super().__init__()
        self.http = httpx.Client(base_url=base_url, timeout=10)
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("TRUNCATE registrations, events, users RESTART IDENTITY CASCADE")
        self.capacity: dict[int, int] = {}
        self.active: set[tuple[int, int]] = set()
        self.organizer = 0
        self.seq = 0
        self.token: dict[int, str] = {}  # user id -> its token, with tokens on
        self.admin = ""
        if auth == "tokens":
            admin = asyncio.run(create_admin(database_url, "Admin", "admin@example.com"))
            assert isinstance(admin.token, str)
            self.admin = admin.token

    def teardown(self) -> None:
        self.http.close()

    def call(
        self, method: str, url: str, body: dict[str, Any], *, as_user: int = 0, token: str = ""
    ) -> tuple[int, dict[str, Any]]:
        """As `as_user` (with its token) or with `token`; anonymously with neither."""
        token = self.token.get(as_user, token)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = self.http.request(method, f"{API}{url}", json=body, headers=headers)
        assert response.status_code != 500, response.text
        payload: dict[str, Any] = response.json()
        return response.status_code, payload

    def made(self, body: dict[str, Any]) -> int:
        """A new user's id; with tokens on, its token is kept for its later requests."""
        user: int = body["id"]
        if self.admin:
            self.token[user] = body["token"]
        return user

    def taken(self, event: int) -> int:
        return sum(e == event for _, e in self.active)

    @initialize()
    def create_organizer(self) -> None:
        new = {"name": "Org", "email": "org@example.com", "role": "organizer"}
        status, body = self.call("POST", "/users", new, token=self.admin)
        assert status == 201
        self.organizer = self.made(body)

    @rule(target=users)
    def create_user(self) -> int:
        self.seq += 1
        new = {"name": f"U{self.seq}", "email": f"u{self.seq}@example.com"}
        status, body = self.call("POST", "/users", new)  # sign-up: no token
        assert status == 201
        return self.made(body)

    @rule(target=events, capacity=st.integers(0, 3))
    def create_event(self, capacity: int) -> object:
        new = {"title": "E", "capacity": capacity, "organizer_id": self.organizer}
        status, body = self.call("POST", "/events", new, as_user=self.organizer)
        if capacity == 0:
            assert (status, body["code"]) == (422, "validation_failed")
            return multiple()
        assert status == 201
        self.capacity[body["id"]] = capacity
        return body["id"]

    @rule(user=users, event=events)
    def register(self, user: int, event: int) -> None:
        pair = {"user_id": user, "event_id": event}
        status, body = self.call("POST", "/registrations", pair, as_user=user)
        if (user, event) in self.active:
            assert (status, body.get("code")) == (409, "already_registered")
        elif self.taken(event) >= self.capacity[event]:
            assert (status, body.get("code")) == (409, "event_full")
        else:
            assert status == 201, body
            self.active.add((user, event))

    @rule(user=users, event=events)
    def cancel(self, user: int, event: int) -> None:
        pair = {"user_id": user, "event_id": event}
        status, body = self.call("DELETE", "/registrations", pair, as_user=user)
        if (user, event) in self.active:
            assert status == 200, body
            self.active.discard((user, event))
        else:
            assert (status, body.get("code")) == (404, "not_registered")

    @rule(event=events, capacity=st.integers(0, 4))
    def update_capacity(self, event: int, capacity: int) -> None:
        patch = {"capacity": capacity}
        status, body = self.call("PATCH", f"/events/{event}", patch, as_user=self.organizer)
        if capacity == 0:
            assert status == 422
        elif capacity < self.taken(event):
            assert (status, body.get("code")) == (409, "capacity_below_registrations")
        else:
            assert status == 200, body
            self.capacity[event] = capacity

    @invariant()
    def seats_match_the_model(self) -> None:
        response = self.http.get(f"{API}/events", params={"limit": 1000})
        assert response.status_code == 200
        seen = {e["id"]: (e["capacity"], e["available_seats"]) for e in response.json()}
        assert seen == {e: (c, c - self.taken(e)) for e, c in self.capacity.items()}


@pytest.mark.timeout(120)
def test_stateful_model(api: ApiProcess) -> None:
    """S3: every status code and every seat count equals the model's, step by step."""
    run_state_machine_as_test(
        lambda: SeatModel(api.base_url, api.database_url, api.auth),  # type: ignore[arg-type]
        settings=settings(
            max_examples=30,
            stateful_step_count=40,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        ),
    )
