"""S4: the stateful model of S3 (test_stress.SeatModel) with the waitlist added.

The model keeps each event's queue in arrival order. A cancelled seat, a capacity raise
or a seated user's deletion promotes from its head; leaving the queue closes it up.
Every answer (status, code, queue position) and, after every step, every event's seats,
queue length and each waiting entry's position must equal the model's.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    consumes,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from tests.reliability.harness import API, ApiProcess
from tests.reliability.test_stress import SeatModel


class QueueModel(SeatModel):
    def __init__(self, base_url: str, database_url: str, auth: str) -> None:
        super().__init__(base_url, database_url, auth)
        self.queue: dict[int, list[int]] = {}  # event -> waiting users, in arrival order

    def promote(self, event: int) -> None:
        """Free seats go to the head of the queue, as many as there are."""
        queue = self.queue.setdefault(event, [])
        while queue and self.taken(event) < self.capacity[event]:
            self.active.add((queue.pop(0), event))

    def live(self, user: int, event: int) -> bool:
        return (user, event) in self.active or user in self.queue.get(event, [])

    @rule(user=SeatModel.users, event=SeatModel.events)
    def register(self, user: int, event: int) -> None:  # no queue asked: as in S3
        pair = {"user_id": user, "event_id": event}
        status, body = self.call("POST", "/registrations", pair, as_user=user)
        if self.live(user, event):
            assert (status, body.get("code")) == (409, "already_registered")
        elif self.taken(event) >= self.capacity[event]:
            assert (status, body.get("code")) == (409, "event_full")
        else:
            assert status == 201, body
            self.active.add((user, event))

    @rule(user=SeatModel.users, event=SeatModel.events)
    def join(self, user: int, event: int) -> None:
        pair = {"user_id": user, "event_id": event, "waitlist": True}
        status, body = self.call("POST", "/registrations", pair, as_user=user)
        if self.live(user, event):
            assert (status, body.get("code")) == (409, "already_registered")
        elif self.taken(event) < self.capacity[event]:
            assert (status, body["status"]) == (201, "active"), body
            self.active.add((user, event))
        else:
            queue = self.queue.setdefault(event, [])
            queue.append(user)
            assert (status, body["status"]) == (202, "waitlisted"), body
            assert body["waitlist_position"] == len(queue)

    @rule(target=SeatModel.users, event=SeatModel.events)
    def crowd(self, event: int) -> object:
        """Three newcomers ask for the event at once (so queues grow long enough to test
        their order); they stay around as users."""
        newcomers = [self.create_user() for _ in range(3)]
        for user in newcomers:
            self.join(user, event)
        return multiple(*newcomers)

    @rule(user=SeatModel.users, event=SeatModel.events)
    def cancel(self, user: int, event: int) -> None:
        pair = {"user_id": user, "event_id": event}
        status, body = self.call("DELETE", "/registrations", pair, as_user=user)
        if (user, event) in self.active:
            assert status == 200, body
            self.active.discard((user, event))
            self.promote(event)
        elif user in self.queue.get(event, []):
            assert status == 200, body
            self.queue[event].remove(user)
        else:
            assert (status, body.get("code")) == (404, "not_registered")

    @rule(event=SeatModel.events, capacity=st.integers(0, 4))
    def update_capacity(self, event: int, capacity: int) -> None:
        super().update_capacity(event, capacity)
        self.promote(event)

    @rule(user=consumes(SeatModel.users))  # a deleted user acts no more
    def delete_user(self, user: int) -> None:
        status, body = self.call("DELETE", f"/users/{user}", {}, as_user=user)
        assert status == 200, body
        held = [e for u, e in self.active if u == user]
        self.active = {(u, e) for u, e in self.active if u != user}
        for queue in self.queue.values():
            if user in queue:
                queue.remove(user)
        for event in held:
            self.promote(event)
        self.token.pop(user, None)

    @invariant()
    def queues_match_the_model(self) -> None:
        response = self.http.get(f"{API}/events", params={"limit": 1000})
        seen = {e["id"]: e["waitlisted"] for e in response.json()}
        assert seen == {e: len(self.queue.get(e, [])) for e in self.capacity}
        for event, queue in self.queue.items():
            listed = self.listed_queue(event)
            assert listed == queue, (event, listed, queue)

    def listed_queue(self, event: int) -> list[int]:
        status, body = self.call_list(f"/registrations/event/{event}?status=waitlisted")
        assert status == 200, body
        return [r["user_id"] for r in body]

    def call_list(self, url: str) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token[self.organizer]}"} if self.admin else {}
        response = self.http.get(f"{API}{url}", headers=headers)
        return response.status_code, response.json()


@pytest.mark.timeout(240)
def test_stateful_model_with_the_queue(api: ApiProcess) -> None:
    """S4: the queue's every answer and every position equal the model's, step by step."""
    run_state_machine_as_test(
        lambda: QueueModel(api.base_url, api.database_url, api.auth),  # type: ignore[arg-type]
        settings=settings(
            max_examples=8,
            stateful_step_count=30,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        ),
    )
