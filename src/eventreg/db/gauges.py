"""What /metrics reads from the database at scrape time."""

from __future__ import annotations

import asyncpg

from eventreg import sql
from eventreg.db import Conn

Q = sql.load("gauges")


async def events_on_sale(conn: Conn, limit: int, seconds: float) -> list[asyncpg.Record]:
    """The `limit` newest live events whose registration has not closed, with their seats."""
    return list(await conn.fetch(Q["events_on_sale"], limit, timeout=seconds))
