"""Test-only fault hooks, armed per request only when EVENTREG_TEST_HOOKS=1.

The registration route arms them from request headers when `Settings.test_hooks` is true;
otherwise the context variable stays None and each hook point costs one `ContextVar.get()`.

- `X-Test-Delay-After-Lock: <ms>`: sleep (idle in transaction) right after the event's
  FOR UPDATE, so tests can hold the lock, kill things mid-transaction, or exhaust the pool.
- `X-Test-Terminate-Before-Release`: after COMMIT, terminate the backend from another session
  before the connection goes back to the pool, so the pool's reset fails (pitfall P1).
- `X-Test-Separate-Key-Transaction`: store an Idempotency-Key in a transaction of its own,
  after the change has committed (the canary of the idempotency crash test).
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg
from starlette.datastructures import Headers

from eventreg import sql

if TYPE_CHECKING:
    from eventreg.db import Conn

Q = sql.load("testhooks")
# With an Idempotency-Key: commit the change, then write the key in a second transaction
# 0.2 s later (the crash test's canary; see eventreg.routes.idempotent).
SEPARATE_KEY_HEADER = "x-test-separate-key-transaction"


@dataclass(frozen=True, slots=True)
class Hooks:
    delay_after_lock_ms: int = 0
    terminate_before_release: bool = False


ARMED: ContextVar[Hooks | None] = ContextVar("eventreg_test_hooks", default=None)


def arm(headers: Headers) -> None:
    delay = headers.get("x-test-delay-after-lock", "")
    hooks = Hooks(
        delay_after_lock_ms=int(delay) if delay.isdigit() else 0,
        terminate_before_release="x-test-terminate-before-release" in headers,
    )
    ARMED.set(hooks if hooks != Hooks() else None)  # None also disarms a reused context


async def after_lock(hooks: Hooks) -> None:
    if hooks.delay_after_lock_ms:
        await asyncio.sleep(hooks.delay_after_lock_ms / 1000)


async def before_release(hooks: Hooks, conn: Conn, database_url: str) -> None:
    """Kill our backend from outside and wait until it is gone, while this side stops reading
    its socket: the client learns of the death only during the pool's release (P1)."""
    if not hooks.terminate_before_release:
        return
    transport: asyncio.ReadTransport = conn._transport  # type: ignore[union-attr]
    transport.pause_reading()
    try:
        killer = await asyncpg.connect(database_url)
        try:
            await killer.fetchval(Q["terminate_backend"], conn.get_server_pid(), 5000)
        finally:
            await killer.close()
    finally:
        transport.resume_reading()
