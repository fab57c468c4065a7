"""`python -m eventreg.bench` (`make bench`): how fast registration is, against the database.

Starts its own PostgreSQL (.data/bench/pg) and `python -m eventreg serve`, seeds users and
events, and drives each HTTP scenario from this process for a fixed time, bounded in count.
Right before hot and spread it measures the database's ceiling for the same registration
transaction without HTTP. Prints a table and writes JSON (default .data/bench/latest.json).
Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import math
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import uvloop

from eventreg import spawn
from eventreg.bench import run
from eventreg.bench.client import NONE, bearer
from eventreg.bench.run import Plan, Result, Row, say
from eventreg.config import default_pool_max

WRITES: tuple[str, ...] = ("hot", "hot_tokens", "spread", "rush")
READS: tuple[str, ...] = ("read_one", "read_one_tokens", "read_list", "read_list_gzip")
SCENARIOS = WRITES + READS
GZIP = {"Accept-Encoding": "gzip"}
# What authentication (EVENTREG_AUTH=tokens) may cost, in % of the scenario's throughput
# with it off (issue 8).
AUTH_BUDGET_PCT = {"read_one": 10, "hot": 5}
# Scenarios measured beside another (A B B A, see run.compare): the one they are read against.
BESIDE = {"hot_tokens": "hot", "read_one_tokens": "read_one", "read_list_gzip": "read_list"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m eventreg.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--quick", action="store_true", help="3 s per scenario instead of 10")
    p.add_argument("--duration", type=float, help="measured seconds per scenario")
    p.add_argument("--workers", type=int, default=2, help="WEB_CONCURRENCY for writes (2)")
    p.add_argument("--read-workers", type=int, default=1, help="WEB_CONCURRENCY for reads (1)")
    p.add_argument("--clients", type=int, default=50, help="concurrent clients (50)")
    p.add_argument("--pool-max", type=int, help="DB_POOL_MAX for the server (its default)")
    p.add_argument("--only", nargs="+", choices=SCENARIOS, help="run only these scenarios")
    p.add_argument("--json", type=Path, default=Path(".data/bench/latest.json"),
                   help="where to write the result (default .data/bench/latest.json)")  # fmt: skip
    args = p.parse_args(argv)
    if args.duration is not None and not 0.5 <= args.duration <= 120:
        p.error("--duration must be 0.5..120 seconds")
    if not 1 <= args.workers <= 16 or not 1 <= args.read_workers <= 16:
        p.error("--workers and --read-workers must be 1..16")
    if not 1 <= args.clients <= 1000:
        p.error("--clients must be 1..1000")
    return args


def plan_from(args: argparse.Namespace) -> Plan:
    plan = Plan.quick() if args.quick else Plan()
    changes = {
        "workers": args.workers, "read_workers": args.read_workers, "clients": args.clients,
        "pool_max": args.pool_max, "scenarios": tuple(args.only or SCENARIOS),
    }  # fmt: skip
    if args.duration is not None:
        changes["duration"] = args.duration
    return dataclasses.replace(plan, **changes)


async def bench(plan: Plan) -> Result:
    started = datetime.now(UTC).isoformat(timespec="seconds")
    load_before = run.machine()
    cluster = run.bench_cluster()
    say(f"database: {cluster.datadir} (fresh database {run.DATABASE})")
    url = await run.fresh_database(cluster)
    neighbours = run.Neighbours(cluster)
    neighbours.start()
    try:
        seed = await run.seed(url, plan.users)
        say(f"seeded {len(seed.users)} users")
        rows = await http_scenarios(url, plan, seed)
        correct = {"every event: seats = capacity - active registrations":
                   await run.inconsistent_events(url) == 0}  # fmt: skip
        others = neighbours.percent()
    finally:
        cluster.stop()
    rows_by = {r.scenario: r for r in rows}
    relate(rows_by)
    best = {k: r.ceiling_rps for k, r in rows_by.items() if r.ceiling_rps is not None}
    machine = {**load_before, "loadavg_end": run.machine()["loadavg"], "others_cpu_pct": others}
    if "rush" in rows_by:
        correct["rush: no more than 500 sold"] = rush_correct(rows_by["rush"])
    return Result(started, dataclasses.asdict(plan), machine, best, rows,
                  targets_of(rows_by), correct)  # fmt: skip


async def http_scenarios(url: str, plan: Plan, seed: run.Seed) -> list[Row]:
    rows: list[Row] = []
    if any(name in WRITES for name in plan.scenarios):
        rows += await write_scenarios(url, plan, seed)
    if any(name in READS for name in plan.scenarios):
        rows += await read_scenarios(url, plan, seed)
    return rows


async def write_scenarios(url: str, plan: Plan, seed: run.Seed) -> list[Row]:
    """hot and hot_tokens (paired) right after the hot ceiling, spread right after its
    own, so that each sees the same background load on a shared machine as its ceiling."""
    rows: list[Row] = []
    chosen = [name for name in WRITES if name in plan.scenarios]
    with contextlib.ExitStack() as stack:
        auths = sorted({"tokens" if name.endswith("_tokens") else "open" for name in chosen})
        servers = {
            auth: stack.enter_context(run.server(url, plan.workers, plan.pool_max, auth))
            for auth in auths
        }
        for auth, srv in servers.items():
            say(f"server up ({auth}): {srv.url}, pid {srv.pid}, {plan.workers} worker(s)")
        groups: tuple[tuple[str, ...], ...] = (("hot", "hot_tokens"), ("spread",), ("rush",))
        for group in groups:
            names = [name for name in group if name in chosen]
            if names == ["rush"]:
                rows.append(await run.rush(servers["open"], url, plan, seed))
            elif names:
                rows += await registration_group(url, plan, seed, servers, names)
    return rows


async def registration_group(
    url: str, plan: Plan, seed: run.Seed, servers: dict[str, spawn.Server], names: list[str]
) -> list[Row]:
    """The database ceiling for one kind (hot or spread), then its HTTP scenario(s)."""
    kind = names[0].removesuffix("_tokens")
    rows = ceilings = await run.measure_ceiling(url, seed, plan, kind)
    best = max(c.rps for c in ceilings)
    count, capacity = (1, run.HOT_CAPACITY) if kind == "hot" else (run.SPREAD_EVENTS,
                                                                  run.SPREAD_CAPACITY)  # fmt: skip
    sides = []
    for name in names:
        auth = name.endswith("_tokens")
        events = await seed.events(url, name, count, capacity)
        srv = servers["tokens" if auth else "open"]
        sides.append(run.registrations_side(name, srv, plan.workers, events, seed, auth=auth))
    measured = await run.compare(sides, plan)
    for r in measured:
        r.ceiling_rps, r.ceiling_pct = best, round(100 * r.rps / best, 1)
        say(f"{r.scenario}: {r.rps:.0f}/s ({r.ceiling_pct}% of the database ceiling)")
    return rows + measured


async def read_scenarios(url: str, plan: Plan, seed: run.Seed) -> list[Row]:
    """read_one beside read_one_tokens (the same GET on a server with tokens on, sending a
    valid token: the token cache's path), and read_list beside read_list_gzip."""
    rows: list[Row] = []
    chosen = [name for name in READS if name in plan.scenarios]
    workers = plan.read_workers
    with contextlib.ExitStack() as stack:
        srv = stack.enter_context(run.server(url, workers, plan.pool_max))
        say(f"server up (open): {srv.url}, pid {srv.pid}, {workers} worker(s)")
        tsrv = srv
        if "read_one_tokens" in chosen:
            tsrv = stack.enter_context(run.server(url, workers, plan.pool_max, "tokens"))
            say(f"server up (tokens): {tsrv.url}, pid {tsrv.pid}, {workers} worker(s)")
        (event,) = await seed.events(url, "read", 1, 100)
        await seed.events(url, "list", run.LIST_EVENTS, 100)
        await run.analyze(url)  # thousands of events now; the seed's statistics say none
        one, page = f"/api/v1/events/{event}", "/api/v1/events?limit=100"
        # One token per client connection, as if each client were a signed-in user.
        users = [bearer(seed.token_of[u]) for u in seed.users[: plan.clients]]
        sides = {
            "read_one": run.read_side("read_one", srv, workers, one, [NONE]),
            "read_one_tokens": run.read_side("read_one_tokens", tsrv, workers, one, users),
            "read_list": run.read_side("read_list", srv, workers, page, [NONE]),
            "read_list_gzip": run.read_side("read_list_gzip", srv, workers, page, [GZIP]),
        }
        for group in (("read_one", "read_one_tokens"), ("read_list", "read_list_gzip")):
            if names := [name for name in group if name in chosen]:
                measured = await run.compare([sides[name] for name in names], plan)
                for r in measured:
                    if r.scenario.startswith("read_list"):
                        sent = GZIP if "gzip" in r.scenario else NONE
                        r.extra = await asyncio.to_thread(run.body_size, srv, page, sent)
                    say(f"{r.scenario}: {r.rps:.0f}/s")
                rows += measured
    return rows


def rush_correct(r: Row) -> bool:
    e = r.extra
    return bool(
        e["sold"] == e["db_active_registrations"] <= run.RUSH_SEATS
        and e["db_available_seats"] == run.RUSH_SEATS - e["sold"] and e["db_consistent"]
    )  # fmt: skip


def relate(rows: dict[str, Row]) -> None:
    """Each paired scenario's throughput as a share of its partner's (extra.vs_pct)."""
    for name, base in BESIDE.items():
        if name in rows and base in rows:
            pct = round(100 * rows[name].rps / max(rows[base].rps, 1e-9), 1)
            rows[name].extra = {**rows[name].extra, "vs": base, "vs_pct": pct}


def targets_of(rows: dict[str, Row]) -> dict[str, bool]:
    targets: dict[str, bool] = {}
    for base, budget in AUTH_BUDGET_PCT.items():
        paired = rows.get(f"{base}_tokens")
        if paired is not None and "vs_pct" in paired.extra:
            name = f"{base}_tokens >= {100 - budget}% of {base} (authentication costs <= {budget}%)"
            targets[name] = paired.extra["vs_pct"] >= 100 - budget
    if "hot" in rows:
        targets["hot >= 70% of the database ceiling"] = (rows["hot"].ceiling_pct or 0) >= 70
    if "spread" in rows:
        targets["spread >= 50% of the database ceiling"] = (rows["spread"].ceiling_pct or 0) >= 50
    if "read_one" in rows:
        ok = rows["read_one"].rps >= 5000 and rows["read_one"].workers == 1
        targets["read_one >= 5,000 req/s with 1 worker"] = ok
    if "rush" in rows:
        e = rows["rush"].extra
        targets["rush: exactly 500 sold"] = e["sold"] == run.RUSH_SEATS
        targets["rush: all 2,000 answered within 2 s"] = e["all_answered_s"] <= 2.0
    for name, r in rows.items():
        targets[f"{name}: no errors"] = not r.errors
    return targets


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def table(result: Result) -> str:
    head = ("scenario", "workers", "clients", "req/s", "p50 ms", "p95 ms", "p99 ms",
            "errors", "peak RSS MB", "% of DB")  # fmt: skip
    lines = [head]
    for r in result.rows:
        errors = ", ".join(f"{k}: {v}" for k, v in r.errors.items()) or "0"
        lines.append((
            r.scenario, str(r.workers or "-"), str(r.clients), fmt(r.rps, 0), fmt(r.p50_ms, 2),
            fmt(r.p95_ms, 2), fmt(r.p99_ms, 2), errors, fmt(r.peak_rss_mb),
            fmt(r.ceiling_pct) + ("%" if r.ceiling_pct is not None else ""),
        ))  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths,
           strict=True))) for line in lines]  # fmt: skip
    out.insert(1, "  ".join("-" * w for w in widths))
    out += [rush_line(r) for r in result.rows if r.scenario == "rush"]
    by_name = {r.scenario: r for r in result.rows}
    out += [beside_line(r, by_name[r.extra["vs"]]) for r in result.rows if "vs" in r.extra]
    p = result.plan
    out.append(f"server: {p['workers']} worker(s) x {pool_of(p['workers'], p['pool_max'])} "
               f"pooled connections for writes, {p['read_workers']} x "
               f"{pool_of(p['read_workers'], p['pool_max'])} for reads")  # fmt: skip
    m = result.machine
    out.append(f"machine: {m['cpus']} CPUs; other processes used {m['others_cpu_pct']}% of "
               f"them during the run; load average {m['loadavg']} at start, "
               f"{m['loadavg_end']} at end; commit {m['commit']}")  # fmt: skip
    out += [f"{'met ' if ok else 'MISS'}  {name}" for name, ok in result.targets.items()]
    out += [f"{'ok  ' if ok else 'FAIL'}  {name}" for name, ok in result.correct.items()]
    return "\n".join(out)


def pool_of(workers: int, pool_max: int | None) -> int:
    """DB_POOL_MAX as each server worker computes it."""
    return pool_max or default_pool_max({"WEB_CONCURRENCY": str(workers)})


def beside_line(r: Row, base: Row) -> str:
    """One paired scenario against its partner: throughput share, median latency, and for
    gzip what it saves on the wire."""
    line = (
        f"{r.scenario}: {fmt(r.rps, 0)}/s = {r.extra['vs_pct']}% of {base.scenario} "
        f"({fmt(base.rps, 0)}/s); p50 {fmt(r.p50_ms, 2)} ms vs {fmt(base.p50_ms, 2)} ms"
    )
    if "body_bytes" in r.extra and "body_bytes" in base.extra:
        line += (
            f"; body {base.extra['body_bytes']:,} bytes ({base.extra['content_encoding']}) -> "
            f"{r.extra['body_bytes']:,} ({r.extra['content_encoding']})"
        )
    return line


def rush_line(r: Row) -> str:
    e = r.extra
    return (
        f"rush: {e['sold']} of {e['seats']} seats sold to {r.clients} clients; sold out after "
        f"{fmt(e['sold_out_s'], 3)} s, all answered after {fmt(e['all_answered_s'], 3)} s; "
        f"database: {e['db_active_registrations']} active, {e['db_available_seats']} left"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = plan_from(args)
    t0 = time.monotonic()
    result = uvloop.run(bench(plan))
    print()
    print(table(result))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_bytes(msgspec.json.format(msgspec.json.encode(result)))
    say(f"wrote {args.json} ({time.monotonic() - t0:.0f} s in all)")
    return 0 if all(result.correct.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
