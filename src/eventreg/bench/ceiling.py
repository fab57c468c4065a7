"""The database's own ceiling: the registration transaction without HTTP.

Each connection calls the very function the API calls, `eventreg.db.registrations.register`,
on a raw asyncpg connection with the API's session settings. So the SQL, its order and its
round trips are identical; only Starlette, the pool and the HTTP hop are missing. The
check-in ceiling (issue 9) calls `eventreg.db.tickets.check_in` the same way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg

from eventreg.app import server_settings
from eventreg.bench.client import Tally
from eventreg.caller import OPEN
from eventreg.config import Settings
from eventreg.db import Conn, registrations
from eventreg.errors import ApiError


async def drive(
    url: str, connections: int, pair: Callable[[int], tuple[int, int]], *, limit: int,
    warmup: float, duration: float,
) -> Tally:  # fmt: skip
    """Like `client.closed_loop`, but each worker is a database connection running
    `register(conn, event_id, user_id)` with `(event_id, user_id) = pair(i)`."""

    async def work(conn: Conn, i: int) -> None:
        await registrations.register(conn, OPEN, *pair(i))

    return await drive_work(url, connections, work, limit=limit, warmup=warmup,
                            duration=duration)  # fmt: skip


async def drive_work(
    url: str, connections: int, work: Callable[[Conn, int], Awaitable[object]], *, limit: int,
    warmup: float, duration: float,
) -> Tally:  # fmt: skip
    """`work(conn, i)` for i < `limit` through `connections` database connections with the
    API's session settings; an ApiError counts as its status, anything else as 201/200."""
    settings = server_settings(Settings(database_url=url))
    conns = await asyncio.gather(
        *(asyncpg.connect(url, server_settings=settings) for _ in range(connections))
    )
    tally, next_index = Tally(), iter(range(limit))
    started = time.perf_counter()
    measure_from, stop_at = started + warmup, started + warmup + duration

    async def worker(conn: asyncpg.Connection[asyncpg.Record]) -> None:
        for i in next_index:
            sent = time.perf_counter()
            if sent >= stop_at:
                return
            try:
                await work(conn, i)
                status = 201
            except ApiError as exc:
                status = exc.status
            if sent >= measure_from:
                tally.latencies.append(time.perf_counter() - sent)
                tally.statuses[status] += 1

    try:
        await asyncio.gather(*(worker(c) for c in conns))
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    tally.seconds = min(time.perf_counter(), stop_at) - measure_from
    return tally
