"""Prometheus metrics: what is counted, and the text `/metrics` sends.

Several uvicorn workers each count in files of their own under PROMETHEUS_MULTIPROC_DIR
(`python -m eventreg serve` makes it fresh for every start), and `/metrics`, whichever
worker answers, adds them up. Without that variable (one process: the tests, a bare
`uvicorn`) the counts live in memory. prometheus_client picks one of the two when it is
first imported, so the variable must be set before anything imports this module; that is
why `MULTIPROCESS` is read at import, like the library itself does.

The hot paths (one request, one registration) touch children prepared once: a dict
lookup and an increment, no label parsing.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
CONTENT_TYPE = CONTENT_TYPE_LATEST

# Latency buckets, in seconds: a cached read takes about a millisecond, a registration in a
# rush up to the lock and acquire timeouts (1 s, 2 s) before it becomes a 503.
SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter(
    "eventreg_http_requests",
    "HTTP requests answered by the app, by route template, method and status",
    ("route", "method", "status"),
)
LATENCY = Histogram(
    "eventreg_http_request_duration_seconds",
    "Time from a request's arrival in the app to its last byte, by route template and method",
    ("route", "method"),
    buckets=SECONDS,
)
REGISTRATIONS = Counter(
    "eventreg_registrations",
    "Registration outcomes: created (a seat), waitlisted, full, duplicate; and promoted "
    "(a waiting registration took a freed seat)",
    ("outcome",),
)
OUTCOMES = ("created", "waitlisted", "full", "duplicate", "promoted")
_OUTCOME = {outcome: REGISTRATIONS.labels(outcome) for outcome in OUTCOMES}
CHECK_INS = Counter(
    "eventreg_check_ins",
    "Ticket scans by outcome (checked_in, already_checked_in, or the refusal's problem code) "
    "and source (scan: one at the door; batch: uploaded offline scans, one per item); "
    "undone: a check-in taken back",
    ("outcome", "source"),
)
GROUP_SIZE = Histogram(
    "eventreg_admission_group_size",
    "Registrations decided by one group-admission transaction (its _count: the groups)",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200),
)
LOCK_WAIT = Histogram(
    "eventreg_event_lock_wait_seconds",
    "Time to take an event's row lock (SELECT ... FOR UPDATE, round trip included), by what "
    "took it; lock timeouts are counted too",
    ("by",),
    buckets=SECONDS,
)
_LOCKERS = {by: LOCK_WAIT.labels(by) for by in ("register", "group", "cancel")}
UNAVAILABLE = Counter(
    "eventreg_unavailable",
    "503 answers by cause: pool_timeout, lock_timeout, statement_timeout, timeout, "
    "serialization, database_unavailable, too_many_connections",
    ("cause",),
)
POOL_OPEN = Gauge(
    "eventreg_db_pool_connections",
    "Connections open in the pools of the live workers (pool: primary or replica)",
    ("pool",),
    multiprocess_mode="livesum",
)
POOL_IN_USE = Gauge(
    "eventreg_db_pool_connections_in_use",
    "Of those, the connections a request holds right now (sampled each second)",
    ("pool",),
    multiprocess_mode="livesum",
)
POOL_MAX = Gauge(
    "eventreg_db_pool_max",
    "The most connections the live workers' pools may open (DB_POOL_MAX x workers)",
    ("pool",),
    multiprocess_mode="livesum",
)
REPLICA_USABLE = Gauge(
    "eventreg_db_replica_usable",
    "1 while every live worker sends replica-allowed reads to the replica; 0 while any "
    "worker finds it down, too far behind or unsure",
    multiprocess_mode="livemin",
)
REPLICA_LAG = Gauge(
    "eventreg_db_replica_lag_bound_seconds",
    "An upper bound on how far the replica is behind: every transaction committed on the "
    "primary this long ago is visible there (largest over the live workers)",
    multiprocess_mode="livemax",
)
REPLICA_FALLBACKS = Counter(
    "eventreg_db_replica_fallbacks",
    "Replica reads that failed (the replica went away) and were answered from the primary",
)


class RequestTally:
    """This process's request counts since they were last folded into the metrics above.

    Counting a request straight into prometheus_client takes three locked writes to the
    shared files (counter, bucket, sum): about 10 µs here, 4% of a cached GET. Here it is
    two dict updates; `fold()` adds them to the metrics once a second (each worker's
    `metrics_forever`), before every /metrics answer and at exit. Another worker's answer
    may therefore lag this one's by up to a second."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str, int], int] = {}
        self.times: dict[tuple[str, str], list[float]] = {}  # bucket counts, then the sum

    def add(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        self.answers[key] = self.answers.get(key, 0) + 1
        times = self.times.get(key[:2])
        if times is None:
            times = self.times[key[:2]] = [0.0] * (len(_BOUNDS) + 1)
        times[bisect_left(_BOUNDS, seconds)] += 1  # the first bucket with le >= seconds
        times[-1] += seconds

    def fold(self) -> None:
        answers, self.answers = self.answers, {}
        times, self.times = self.times, {}
        for (route, method, status), count in answers.items():
            REQUESTS.labels(route, method, str(status)).inc(count)
        for (route, method), counts in times.items():
            child = LATENCY.labels(route, method)
            # prometheus_client has no public call to add n observations to a bucket;
            # these two attributes are its per-bucket and sum values (a test reads the
            # text /metrics renders from them).
            for bucket, observed in zip(child._buckets, counts, strict=False):
                if observed:
                    bucket.inc(observed)
            child._sum.inc(counts[-1])


_BOUNDS = (*SECONDS, float("inf"))
TALLY = RequestTally()  # one per process, like the metrics it feeds


def registration(outcome: str, count: int = 1) -> None:
    """One of OUTCOMES happened `count` times."""
    _OUTCOME[outcome].inc(count)


def check_in(outcome: str, source: str = "scan", count: int = 1) -> None:
    CHECK_INS.labels(outcome, source).inc(count)


def lock_waited(by: str, seconds: float) -> None:
    _LOCKERS[by].observe(seconds)


def unavailable(cause: str) -> None:
    UNAVAILABLE.labels(cause).inc()


@dataclass(frozen=True, slots=True)
class Pools:
    """One worker's pool figures, sampled: (open, in use, max) per pool name."""

    figures: Sequence[tuple[str, int, int, int]]

    def publish(self) -> None:
        for name, size, in_use, most in self.figures:
            POOL_OPEN.labels(name).set(size)
            POOL_IN_USE.labels(name).set(in_use)
            POOL_MAX.labels(name).set(most)


@dataclass(frozen=True, slots=True)
class Seats:
    """The seat gauges of the newest events on sale, read from the primary at scrape time.
    `rows` is None when the database did not answer."""

    rows: Sequence[Any] | None

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "eventreg_metrics_database_up",
            "1 when this scrape could read the event gauges from the primary",
            value=0 if self.rows is None else 1,
        )
        yield up
        families = {
            column: GaugeMetricFamily(f"eventreg_event_{name}", about, labels=["event_id"])
            for column, name, about in _SEAT_GAUGES
        }
        for row in self.rows or ():
            for column, family in families.items():
                family.add_metric([str(row["id"])], row[column])
        yield from families.values()


_SEAT_GAUGES = (
    ("available_seats", "seats_available", "Seats left (events on sale, newest first)"),
    ("capacity", "capacity", "Seats in all"),
    ("waitlisted", "waitlisted", "Registrations waiting for a seat"),
)


class _Sources:
    """One collector made of several, so that a registry built per scrape can hold them."""

    def __init__(self, sources: Iterable[Any]) -> None:
        self.sources = list(sources)

    def collect(self) -> Iterator[Metric]:
        for source in self.sources:
            yield from source.collect()


def exposition(seats: Seats) -> bytes:
    """The whole text of /metrics: every worker's counts (or this process's), plus the
    seat gauges just read. Blocking file reads with several workers: run it in a thread."""
    if MULTIPROCESS:
        counted: Any = multiprocess.MultiProcessCollector(None)  # type: ignore[no-untyped-call]
    else:
        counted = REGISTRY
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Sources([counted, seats]))
    return generate_latest(registry)


def worker_exits() -> None:
    """A worker stopping gracefully drops its live gauges (pool, replica) from the sums."""
    if MULTIPROCESS:
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
