"""Group admission in one worker: registrations for an event that arrive while a
registration transaction for it is in flight wait, and the next transaction admits them
together (eventreg.db.admission.admit).

No timer at low load: a request that finds nothing in flight for its event starts a group
of one at once. Under contention groups grow with the load, up to GROUP_MAX. A group in
flight for longer than `stall` (the lock wait, 1 s) stops holding the next one back, so a
stuck transaction (killed by the server, say) delays the others no more than a held row
lock would delay single registrations.

Workers and hosts do not coordinate; the event's row lock orders their groups, as it orders
single registrations. Each group runs in a task of its own, so a member whose client goes
away (or whose handler is cancelled) does not cancel the others' transaction.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from dataclasses import dataclass, field

from eventreg import metrics, testhooks
from eventreg.db import AppState, admission, connection
from eventreg.db.admission import Member, Outcome
from eventreg.db.idempotency import Answer
from eventreg.structs import Registration


@dataclass(slots=True)
class Waiting:
    member: Member
    outcome: asyncio.Future[Outcome]
    hooks: testhooks.Hooks | None  # test-only, as armed by the member's request


@dataclass(slots=True)
class Groups:
    max_size: int
    stall: float = 1.0  # a group in flight longer than this no longer holds the next back
    waiting: dict[int, list[Waiting]] = field(default_factory=dict)  # event -> next group
    running: dict[int, int] = field(default_factory=dict)  # event -> groups in flight
    timers: dict[int, asyncio.TimerHandle] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def admit(
        self,
        state: AppState,
        event_id: int,
        member: Member,
        answer: Callable[[Registration], Answer],
    ) -> Outcome:
        if not self.running.get(event_id):  # nothing in flight: a group of one, at once
            return await self._lead(state, event_id, member, answer)
        me = Waiting(member, asyncio.get_running_loop().create_future(), testhooks.ARMED.get())
        # A member whose handler was cancelled never reads its outcome; mark it read.
        me.outcome.add_done_callback(lambda f: f.exception())
        # Join the next group, which starts when one in flight ends, or stalls.
        queue = self.waiting.setdefault(event_id, [])
        queue.append(me)
        if len(queue) == 1:
            self.timers[event_id] = asyncio.get_running_loop().call_later(
                self.stall, self._next, state, event_id, answer
            )
        return await asyncio.shield(me.outcome)

    async def _lead(
        self,
        state: AppState,
        event_id: int,
        member: Member,
        answer: Callable[[Registration], Answer],
    ) -> Outcome:
        """A group of one, run in the request's own task: at low load nothing is added to a
        single registration but this bookkeeping. Others arriving meanwhile gather behind."""
        self.running[event_id] = self.running.get(event_id, 0) + 1
        try:
            (outcome,) = await _admit(state, event_id, [member], answer)
            return outcome
        except Exception as exc:  # those gathered behind would most likely fail the same way
            for w in self._take_waiting(event_id):
                w.outcome.set_exception(exc)
            raise
        finally:
            self._finished(state, event_id, answer)

    def _finished(
        self, state: AppState, event_id: int, answer: Callable[[Registration], Answer]
    ) -> None:
        self.running[event_id] -= 1
        if not self.running[event_id]:
            del self.running[event_id]
        self._next(state, event_id, answer)

    def _start(
        self,
        state: AppState,
        event_id: int,
        group: list[Waiting],
        answer: Callable[[Registration], Answer],
    ) -> None:
        self.running[event_id] = self.running.get(event_id, 0) + 1
        context = contextvars.copy_context()
        context.run(testhooks.ARMED.set, group[0].hooks)
        task = asyncio.create_task(self._run(state, event_id, group, answer), context=context)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(
        self,
        state: AppState,
        event_id: int,
        group: list[Waiting],
        answer: Callable[[Registration], Answer],
    ) -> None:
        try:
            outcomes = await _admit(state, event_id, [w.member for w in group], answer)
        except Exception as exc:  # the transaction failed: every member hears why (503)
            # So do those waiting for the next group: the database that just failed this
            # one would most likely fail theirs, after a second full wait. Told at once,
            # they retry (Retry-After) and each request's wait keeps the bound it has alone.
            for w in group + self._take_waiting(event_id):
                w.outcome.set_exception(exc)
        except asyncio.CancelledError:  # the worker is stopping: nothing was committed
            for w in group:
                w.outcome.set_exception(ConnectionAbortedError("the server is stopping"))
            raise
        else:
            for w, outcome in zip(group, outcomes, strict=True):
                w.outcome.set_result(outcome)
        finally:
            self._finished(state, event_id, answer)

    def _take_waiting(self, event_id: int) -> list[Waiting]:
        if (timer := self.timers.pop(event_id, None)) is not None:
            timer.cancel()
        return self.waiting.pop(event_id, [])

    def _next(
        self, state: AppState, event_id: int, answer: Callable[[Registration], Answer]
    ) -> None:
        """Start the waiting group (at most max_size of it; the rest wait for the next)."""
        queue = self._take_waiting(event_id)
        if not queue:
            return
        group, rest = queue[: self.max_size], queue[self.max_size :]
        if rest:
            self.waiting[event_id] = rest
            self.timers[event_id] = asyncio.get_running_loop().call_later(
                self.stall, self._next, state, event_id, answer
            )
        self._start(state, event_id, group, answer)


async def _admit(
    state: AppState,
    event_id: int,
    members: list[Member],
    answer: Callable[[Registration], Answer],
) -> list[Outcome]:
    """One group's transaction, on a pooled connection."""
    settings = state["settings"]
    async with connection(state) as conn:
        outcomes = await admission.admit(
            conn, event_id, members, answer=answer,
            key_ttl=settings.idempotency_ttl_hours * 3600,
            lock_wait=settings.lock_timeout_ms / 1000 or None,
        )  # fmt: skip
    metrics.GROUP_SIZE.observe(len(members))  # a group of one too
    return outcomes
