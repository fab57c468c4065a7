"""Idempotency keys: claim a key, find its stored answer, store a new one, sweep old ones.

All of it runs inside the transaction of the write the key protects (see
eventreg.routes.idempotent), so the key and the write commit together or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from eventreg import sql
from eventreg.db import Conn
from eventreg.errors import KeyInFlight, KeyReused

Q = sql.load("idempotency")


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    location: str | None = None
    revealed_token_hash: bytes | None = None  # the answer carried this token's secret


async def claim(
    conn: Conn, scope: str, key: str, fingerprint: bytes, lock_wait: float | None
) -> Answer | None:
    """Hold the key for this transaction; the stored answer when the request was done.

    A request with the same key still running holds it: past `lock_wait`, 409.
    """
    try:
        await conn.execute(Q["lock_key"], scope, key, timeout=lock_wait)
    except (asyncpg.exceptions.LockNotAvailableError, TimeoutError):
        raise KeyInFlight("a request with this Idempotency-Key is still running") from None
    return await stored(conn, scope, key, fingerprint)


async def stored(conn: Conn, scope: str, key: str, fingerprint: bytes) -> Answer | None:
    """The answer stored for a live key this transaction holds, if any; 422 if the key was
    used for another request."""
    row = await conn.fetchrow(Q["find_key"], scope, key)
    if row is None:
        return None
    if row["fingerprint"] != fingerprint:
        raise KeyReused("this Idempotency-Key was used for a different request")
    return Answer(row["status"], row["body"].encode(), row["location"], row["revealed_token_hash"])


async def store(
    conn: Conn, scope: str, key: str, fingerprint: bytes, answer: Answer, ttl_seconds: float
) -> None:
    await conn.execute(
        Q["store_key"], scope, key, fingerprint, answer.status, answer.location,
        answer.body.decode(), answer.revealed_token_hash, ttl_seconds,
    )  # fmt: skip


async def sweep(conn: Conn, batch: int) -> int | None:
    """Delete up to `batch` expired keys; None when another worker is sweeping."""
    async with conn.transaction():
        if not await conn.fetchval(Q["try_sweep_lock"]):
            return None
        status = await conn.execute(Q["delete_expired"], batch)
    return int(status.split()[-1])
