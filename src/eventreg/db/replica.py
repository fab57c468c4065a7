"""Reads from a streaming replica (DATABASE_READ_URL), never staler than a bound.

Each worker watches how far the replica has got: every few hundred milliseconds it notes
the primary's write-ahead-log position (and when it asked), then asks the replica how far
it has replayed. Once the replica has replayed past a position noted at time t, everything
committed on the primary before t is visible there. `caught_up_at` is the latest such t,
so a read sent to the replica at time T is at most T - caught_up_at behind, and `fresh()`
allows it only while that is within DATABASE_READ_MAX_LAG_MS. The bound needs no
assumption about clocks (one monotonic clock, this worker's) or about the replica's health:
a replica that stops replaying, stops answering or was promoted simply stops being caught
up, and after at most the bound every replica-allowed read goes to the primary again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

import asyncpg

from eventreg import metrics, sql
from eventreg.db import Pool

Q = sql.load("replica")
log = logging.getLogger("eventreg.db")

MAX_SAMPLES = 1000  # positions kept while the replica lags; older ones are dropped (safe)
ASK_TIMEOUT = 1.0  # seconds for each of the two position queries


class Replica:
    """One worker's read pool and what it knows of the replica's progress.

    The two position queries run on connections of their own (`Watch`), not the pools': in
    a rush the primary's pool is full, and a watch queued behind the rush would take the
    catalogue reads off the replica exactly when they matter most."""

    def __init__(
        self, pool: Pool, primary: Watch, replica: Watch, max_lag_ms: int
    ) -> None:  # fmt: skip
        self.pool = pool
        self.watching = (primary, replica)
        self.max_lag = max_lag_ms / 1000
        self.every = min(0.2, self.max_lag / 5)
        self.caught_up_at: float | None = None  # loop time; None: nothing is known
        self.noted: deque[tuple[float, int]] = deque(maxlen=MAX_SAMPLES)
        self.trouble: str | None = None  # why the replica is not used, once per episode

    def fresh(self) -> bool:
        """May a read go to the replica now, within the bound?"""
        seen = self.caught_up_at
        return seen is not None and asyncio.get_running_loop().time() - seen <= self.max_lag

    def lost(self, exc: BaseException) -> None:
        """A read on the replica failed: use the primary until the replica catches up anew."""
        self.caught_up_at = None
        self.noted.clear()
        self._troubled(f"a read failed: {exc!r}")

    async def watch_forever(self) -> None:
        while True:
            try:
                await self.check()
            except Exception as exc:  # down, unreachable, promoted: not used until it is back
                self._troubled(repr(exc))
            metrics.REPLICA_USABLE.set(1 if self.fresh() else 0)
            if self.caught_up_at is not None:
                metrics.REPLICA_LAG.set(asyncio.get_running_loop().time() - self.caught_up_at)
            await asyncio.sleep(self.every)

    async def check(self) -> None:
        primary, replica = self.watching
        asked = asyncio.get_running_loop().time()
        self.noted.append((asked, await primary.value(Q["wal_position"])))
        row = await replica.row(Q["replay_position"])
        if not row["standby"]:
            raise RuntimeError("DATABASE_READ_URL is not a standby (promoted?); not reading it")
        while self.noted and self.noted[0][1] <= row["replayed"]:
            self.caught_up_at = self.noted.popleft()[0]
        if self.trouble is not None and self.fresh():
            log.warning("the read replica is caught up again; reads go to it")
            self.trouble = None

    async def close(self) -> None:
        for watch in self.watching:
            await watch.close()
        try:
            await asyncio.wait_for(self.pool.close(), timeout=10)
        except TimeoutError:
            self.pool.terminate()

    def _troubled(self, why: str) -> None:
        if self.trouble is None:
            log.warning("the read replica is not used, reads go to the primary: %s", why)
        self.trouble = why


class Watch:
    """One connection for the lag watch, opened when first needed and again after a
    failure; every step bounded by ASK_TIMEOUT."""

    def __init__(self, url: str, settings: dict[str, str]) -> None:
        self.url, self.settings = url, settings
        self.conn: asyncpg.Connection[asyncpg.Record] | None = None

    async def value(self, query: str) -> Any:
        return (await self.row(query))[0]

    async def row(self, query: str) -> asyncpg.Record:
        try:
            if self.conn is None or self.conn.is_closed():
                self.conn = await asyncpg.connect(
                    self.url, timeout=ASK_TIMEOUT, server_settings=self.settings
                )
            row = await self.conn.fetchrow(query, timeout=ASK_TIMEOUT)
        except BaseException:
            await self.close()
            raise
        assert row is not None
        return row

    async def close(self) -> None:
        if self.conn is not None:
            self.conn.terminate()
            self.conn = None
