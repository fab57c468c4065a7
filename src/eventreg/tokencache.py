"""A worker's short memory of token lookups, so most requests need no database round trip.

An entry lives `ttl` seconds. That is how long a token revoked (or a user deleted, or a
role changed) through another worker keeps working here; the worker that made the change
forgets the affected entries at once. Failed lookups are remembered too, so a flood of
bad tokens costs one query per distinct token per `ttl`.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from eventreg.caller import Caller

MAX_ENTRIES = 50_000


@dataclass(frozen=True, slots=True)
class Entry:
    caller: Caller | None  # None: no live token has this secret
    fresh_until: float  # time.monotonic()
    expires_at: datetime | None  # the token's own expiry


@dataclass(slots=True)
class TokenCache:
    ttl: float
    entries: OrderedDict[bytes, Entry] = field(default_factory=OrderedDict)
    # Lookups in flight: concurrent requests with one new token share one query.
    pending: dict[bytes, asyncio.Future[Caller | None]] = field(default_factory=dict)
    used: set[int] = field(default_factory=set)  # token ids whose use is not yet recorded

    def get(self, digest: bytes) -> Entry | None:
        entry = self.entries.get(digest)
        if entry is None or entry.fresh_until < time.monotonic():
            return None
        if entry.expires_at is not None and entry.expires_at <= datetime.now(UTC):
            return Entry(None, entry.fresh_until, None)
        return entry

    def put(self, digest: bytes, caller: Caller | None, expires_at: datetime | None) -> None:
        if self.ttl <= 0:
            return
        self.entries[digest] = Entry(caller, time.monotonic() + self.ttl, expires_at)
        self.entries.move_to_end(digest)
        while len(self.entries) > MAX_ENTRIES:
            self.entries.popitem(last=False)

    def forget_user(self, user_id: int) -> None:
        """After a change to the user or their tokens: look them up afresh."""
        stale = [d for d, e in self.entries.items() if e.caller and e.caller.user_id == user_id]
        for digest in stale:
            del self.entries[digest]
