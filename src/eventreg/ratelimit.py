"""Token buckets, one per key (a user id, or a client address for anonymous sign-up).

In memory, in each worker process: with N workers a client may get up to N times the rate,
depending on how the kernel spreads its connections. That bounds abuse without a shared
store; a hard global limit belongs in front of the API (see docs/operations.md).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

MAX_KEYS = 100_000  # past this, buckets that have refilled are forgotten


@dataclass(slots=True)
class Bucket:
    tokens: float
    stamp: float


@dataclass(slots=True)
class RateLimit:
    """`per_minute` requests a minute per key, in bursts of up to `per_minute`. 0: no limit."""

    per_minute: int
    buckets: dict[str, Bucket] = field(default_factory=dict)

    def take(self, key: str) -> float:
        """Take one request's token: 0.0 when allowed, else the seconds until one is free."""
        if self.per_minute <= 0:
            return 0.0
        now, rate = time.monotonic(), self.per_minute / 60
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= MAX_KEYS:
                self._forget_full(now)
            bucket = self.buckets[key] = Bucket(self.per_minute, now)
        bucket.tokens = min(self.per_minute, bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / rate

    def _forget_full(self, now: float) -> None:
        rate = self.per_minute / 60
        for key, b in list(self.buckets.items()):
            if b.tokens + (now - b.stamp) * rate >= self.per_minute:
                del self.buckets[key]


def retry_after(seconds: float) -> int:
    return max(1, math.ceil(seconds))
