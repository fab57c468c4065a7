"""`python -m eventreg.bench` (`make bench`): how fast registration is, against the database.

Starts its own PostgreSQL (.data/bench/pg) and `python -m eventreg serve`, seeds users and
events, and drives each HTTP scenario from this process for a fixed time, bounded in count.
Right before hot and spread it measures the database's ceiling for the same registration
transaction without HTTP. Prints a table and writes JSON (default .data/bench/latest.json).
Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import uvloop

from eventreg.bench import run
from eventreg.bench.run import Plan, Result, Row, say
from eventreg.config import default_pool_max

SCENARIOS = ("hot", "spread", "rush", "read_one", "read_list")


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
    best = {k: r.ceiling_rps for k, r in rows_by.items() if r.ceiling_rps is not None}
    machine = {**load_before, "loadavg_end": run.machine()["loadavg"], "others_cpu_pct": others}
    if "rush" in rows_by:
        correct["rush: no more than 500 sold"] = rush_correct(rows_by["rush"])
    return Result(started, dataclasses.asdict(plan), machine, best, rows,
                  targets_of(rows_by), correct)  # fmt: skip


async def http_scenarios(url: str, plan: Plan, seed: run.Seed) -> list[Row]:
    """Each of hot and spread right after its own database ceiling, so that both see the
    same background load on a shared machine."""
    rows: list[Row] = []
    writes = [s for s in plan.scenarios if s in ("hot", "spread", "rush")]
    reads = [s for s in plan.scenarios if s in ("read_one", "read_list")]
    if writes:
        with run.server(url, plan.workers, plan.pool_max) as srv:
            say(f"server up: {srv.url}, pid {srv.pid}, {plan.workers} worker(s)")
            host = srv.url.removeprefix("http://")
            for name in writes:
                if name == "rush":
                    rows.append(await run.rush(srv, url, plan, seed))
                    continue
                rows += (ceilings := await run.measure_ceiling(url, seed, plan, name))
                best = max(c.rps for c in ceilings)
                capacity = run.HOT_CAPACITY if name == "hot" else run.SPREAD_CAPACITY
                count = 1 if name == "hot" else run.SPREAD_EVENTS
                events = await seed.events(url, name, count, capacity)
                pairs = run.spread_pairs(events, seed.users)
                r = await run.write_scenario(name, srv, plan, run.registration(host, pairs), seed)
                r.ceiling_rps, r.ceiling_pct = best, round(100 * r.rps / best, 1)
                rows.append(r)
                say(f"{name}: {r.rps:.0f}/s ({r.ceiling_pct}% of the database ceiling)")
    if reads:
        with run.server(url, plan.read_workers, plan.pool_max) as srv:
            say(f"server up: {srv.url}, pid {srv.pid}, {plan.read_workers} worker(s)")
            (event,) = await seed.events(url, "read", 1, 100)
            await seed.events(url, "list", run.LIST_EVENTS, 100)
            await run.analyze(url)  # thousands of events now; the seed's statistics say none
            paths = {"read_one": f"/api/v1/events/{event}", "read_list": "/api/v1/events?limit=100"}
            for name in reads:
                r = await run.read_scenario(name, srv, plan, paths[name], plan.read_workers)
                rows.append(r)
                say(f"{name}: {r.rps:.0f}/s")
    return rows


def rush_correct(r: Row) -> bool:
    e = r.extra
    return bool(
        e["sold"] == e["db_active_registrations"] <= run.RUSH_SEATS
        and e["db_available_seats"] == run.RUSH_SEATS - e["sold"] and e["db_consistent"]
    )  # fmt: skip


def targets_of(rows: dict[str, Row]) -> dict[str, bool]:
    targets: dict[str, bool] = {}
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
