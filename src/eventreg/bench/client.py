"""A small keep-alive HTTP/1.1 client for load generation: asyncio + httptools' C parser.

httpx is the right client for the load script, but at thousands of requests per second its
per-request Python overhead would be measured instead of the server's. Here a request is
prebuilt bytes and a response is parsed in C down to its status code.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import zip_longest
from types import MappingProxyType

import httptools

NONE: Mapping[str, str] = MappingProxyType({})


def request_bytes(
    method: str, path: str, host: str, body: bytes = b"", headers: Mapping[str, str] = NONE
) -> bytes:
    """One whole HTTP/1.1 request; `headers` adds to Host and the body's two."""
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
    if body or method in ("POST", "PUT", "PATCH", "DELETE"):
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return head.encode() + b"\r\n" + body


def bearer(token: str) -> Mapping[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Connection(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[int] | None = None
        self._closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def on_message_complete(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(self._parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError(f"connection lost: {exc!r}"))

    async def request(self, raw: bytes) -> int:
        """Send prebuilt request bytes; the response's status code."""
        if self._closed or self._transport is None:
            raise ConnectionError("connection is closed")
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(raw)
        return await self._waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def connect(host: str, port: int) -> Connection:
    _, protocol = await asyncio.get_running_loop().create_connection(Connection, host, port)
    return protocol


async def connect_many(host: str, port: int, count: int, batch: int = 200) -> list[Connection]:
    connections: list[Connection] = []
    for start in range(0, count, batch):
        size = min(batch, count - start)
        connections += await asyncio.gather(*(connect(host, port) for _ in range(size)))
    return connections


@dataclass
class Tally:
    """What one measured phase saw: latencies (s) of answered requests, statuses, failures."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    seconds: float = 0.0
    cpu_seconds: list[float] = field(default_factory=list)  # one per meter, measured time only

    @property
    def answered(self) -> int:
        return len(self.latencies)

    def count(self, *ok: int) -> int:
        return sum(self.statuses[s] for s in ok)

    def add(self, other: Tally) -> None:
        """Fold in another measured phase of the same scenario."""
        self.latencies += other.latencies
        self.statuses.update(other.statuses)
        self.transport_errors += other.transport_errors
        self.seconds += other.seconds
        self.cpu_seconds = [a + b for a, b in zip_longest(self.cpu_seconds, other.cpu_seconds,
                                                          fillvalue=0.0)]  # fmt: skip


async def closed_loop(
    host: str, port: int, clients: int, make: Callable[[int], bytes], *, limit: int,
    warmup: float, duration: float, meters: Sequence[Callable[[], float]] = (),
) -> Tally:  # fmt: skip
    """`clients` connections, each sending its next request as soon as the last is answered.

    Request number i is `make(i)`, i < `limit` (so every one can use a distinct user). The
    first `warmup` seconds are not recorded; the phase ends after `duration` more seconds.
    Each of `meters` (CPU seconds of some processes) is read when recording starts and
    when the phase ends: Tally.cpu_seconds, for the recorded requests only.
    """
    connections = await connect_many(host, port, clients)
    tally, next_index = Tally(), iter(range(limit))
    started = time.perf_counter()
    measure_from, stop_at = started + warmup, started + warmup + duration
    at_start: list[float] = []
    loop = asyncio.get_running_loop()
    loop.call_later(warmup, lambda: at_start.extend(meter() for meter in meters))

    async def client(conn: Connection) -> None:
        for i in next_index:
            sent = time.perf_counter()
            if sent >= stop_at:
                return
            try:
                status = await conn.request(make(i))
            except ConnectionError:
                tally.transport_errors += 1
                return
            if sent >= measure_from:
                tally.latencies.append(time.perf_counter() - sent)
                tally.statuses[status] += 1

    try:
        await asyncio.gather(*(client(c) for c in connections))
    finally:
        for c in connections:
            c.close()
    tally.seconds = min(time.perf_counter(), stop_at) - measure_from
    if at_start:
        tally.cpu_seconds = [meter() - first for meter, first in zip(meters, at_start, strict=True)]
    return tally


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]
