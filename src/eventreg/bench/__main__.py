"""`python -m eventreg.bench` (`make bench`): how fast registration is, against the database.

Starts its own PostgreSQL (.data/bench/pg) and `python -m eventreg serve`, seeds users and
events, and drives each HTTP scenario from this process for a fixed time, bounded in count.
Right before hot and spread it measures the database's ceiling for the same registration
transaction without HTTP. Write scenarios run with group admission on (the default) and,
as `*_single`, off. Prints a table with each registration scenario's group sizes, read from
the rows' xmin, and writes JSON (default .data/bench/latest.json). With --chart, it sweeps
hot over 1 to 200 clients, on and off, and draws docs/hot-vs-clients.svg. Everything stays
on 127.0.0.1.
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
from typing import Any

import msgspec
import uvloop

from eventreg import spawn
from eventreg.bench import chart, run
from eventreg.bench.client import NONE, bearer
from eventreg.bench.run import Plan, Result, Row, say
from eventreg.config import default_pool_max

WRITES: tuple[str, ...] = (
    "hot", "hot_single", "hot_keys", "hot_tokens", "hot_observed", "spread",
    "low_1", "low_1_single", "low_4", "low_4_single", "rush", "rush_single", "checkin",
)  # fmt: skip
READS: tuple[str, ...] = (
    "read_one", "read_one_tokens", "read_one_observed", "read_one_replica",
    "read_list", "read_list_gzip",
)  # fmt: skip
SCENARIOS = WRITES + READS
GZIP = {"Accept-Encoding": "gzip"}
# What authentication (EVENTREG_AUTH=tokens) may cost, in % of the scenario's throughput
# with it off (issue 8).
AUTH_BUDGET_PCT = {"read_one": 10, "hot": 5}
# What metrics and JSON request lines (METRICS=on, LOG_FORMAT=json, ACCESS_LOG=1) may cost,
# in % of the same scenario's throughput with both off (issue 13).
OBSERVED_BUDGET_PCT = {"read_one": 5, "hot": 5}
# Scenarios measured beside another (A B … B A, see run.compare): the one they are read
# against. Group admission on is read against off.
BESIDE = {
    "hot": "hot_single", "hot_keys": "hot", "hot_tokens": "hot", "low_1": "low_1_single",
    "low_4": "low_4_single", "read_one_tokens": "read_one", "read_list_gzip": "read_list",
    "hot_observed": "hot", "read_one_observed": "read_one", "read_one_replica": "read_one",
}  # fmt: skip
# The sets run together, in this order; the first of a set is its A. hot's and spread's
# come right after their database ceiling.
WRITE_SETS: tuple[tuple[str, ...], ...] = (
    ("hot", "hot_single", "hot_keys", "hot_tokens", "hot_observed"), ("spread",),
    ("low_1", "low_1_single"), ("low_4", "low_4_single"), ("rush",), ("rush_single",),
    ("checkin",),
)  # fmt: skip
LOW_CLIENTS = {"low_1": 1, "low_4": 4}  # and their _single partners
HOT_VS_CEILING, LOW_P50_PCT, KEYS_BUDGET_PCT = 3, 105, 10  # issue 12, issue 11


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m eventreg.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument(
        "--quick",
        action="store_true",
        help="3 s per scenario instead of 10 (30 in a compared set), one round",
    )
    p.add_argument(
        "--duration", type=float, help="measured seconds per scenario, compared ones included"
    )
    p.add_argument("--workers", type=int, default=2, help="WEB_CONCURRENCY for writes (2)")
    p.add_argument("--read-workers", type=int, default=1, help="WEB_CONCURRENCY for reads (1)")
    p.add_argument("--clients", type=int, default=50, help="concurrent clients (50)")
    p.add_argument("--pool-max", type=int, help="DB_POOL_MAX for the server (its default)")
    p.add_argument("--only", nargs="+", choices=SCENARIOS, help="run only these scenarios")
    p.add_argument(
        "--chart",
        action="store_true",
        help="sweep hot over 1-200 clients, group admission on and off, and draw "
        "it (only the sweep, unless --only names scenarios too)",
    )
    p.add_argument("--chart-svg", type=Path, default=Path("docs/hot-vs-clients.svg"),
                   help="where --chart writes its SVG (its JSON goes beside it)")  # fmt: skip
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
        "pool_max": args.pool_max, "chart": args.chart,
        "scenarios": tuple(args.only or (() if args.chart else SCENARIOS)),
    }  # fmt: skip
    if args.duration is not None:
        changes["duration"] = changes["compared_duration"] = args.duration
    return dataclasses.replace(plan, **changes)


async def bench(plan: Plan) -> Result:
    started = datetime.now(UTC).isoformat(timespec="seconds")
    load_before = run.machine()
    cluster = run.bench_cluster()
    say(f"database: {cluster.datadir} (fresh database {run.DATABASE})")
    url = await run.fresh_database(cluster)
    read_url = ""
    if "read_one_replica" in plan.scenarios:
        read_url = run.fresh_standby(cluster).url(run.DATABASE)
        say(f"standby: {run.bench_standby().datadir}, streaming from the primary")
    neighbours = run.Neighbours(cluster)
    neighbours.start()
    try:
        seed = await run.seed(url, plan.users)
        say(f"seeded {len(seed.users)} users")
        rows = await http_scenarios(url, plan, seed, read_url)
        points = await chart.sweep(url, plan, seed) if plan.chart else []
        correct = {"every event: seats = capacity - active registrations":
                   await run.inconsistent_events(url) == 0}  # fmt: skip
        others = neighbours.percent()
    finally:
        run.bench_standby().stop()
        cluster.stop()
    rows_by = {r.scenario: r for r in rows}
    relate(rows_by)
    best = {k: r.ceiling_rps for k, r in rows_by.items() if r.ceiling_rps is not None}
    machine = {**load_before, "loadavg_end": run.machine()["loadavg"], "others_cpu_pct": others}
    for name in ("rush", "rush_single"):
        if name in rows_by:
            correct[f"{name}: no more than 500 sold"] = rush_correct(rows_by[name])
    if "checkin" in rows_by:
        e = rows_by["checkin"].extra
        correct["checkin: every ticket checked in exactly once"] = (
            e["db_live_check_ins"] == e["tickets"] and e["db_doubled"] == 0
        )
    return Result(started, dataclasses.asdict(plan), machine, best, rows,
                  targets_of(rows_by), correct, points)  # fmt: skip


async def http_scenarios(url: str, plan: Plan, seed: run.Seed, read_url: str) -> list[Row]:
    rows: list[Row] = []
    if any(name in WRITES for name in plan.scenarios):
        rows += await write_scenarios(url, plan, seed)
    if any(name in READS for name in plan.scenarios):
        rows += await read_scenarios(url, plan, seed, read_url)
    return rows


async def write_scenarios(url: str, plan: Plan, seed: run.Seed) -> list[Row]:
    """Each set of WRITE_SETS on its servers (group admission on, off, tokens), hot's and
    spread's right after their own database ceiling, so that each sees the same background
    load on a shared machine as its ceiling."""
    rows: list[Row] = []
    chosen = [name for name in WRITES if name in plan.scenarios]
    with contextlib.ExitStack() as stack:
        servers = {
            mode: stack.enter_context(
                run.server(url, plan.workers, plan.pool_max, mode, run.ticket_env(seed))
            )
            for mode in sorted({run.mode_of(name) for name in chosen})
        }
        for mode, srv in servers.items():
            say(f"server up ({mode}): {srv.url}, pid {srv.pid}, {plan.workers} worker(s)")
        for group in WRITE_SETS:
            names = [name for name in group if name in chosen]
            if names and names[0].startswith("rush"):
                (name,) = names
                rows.append(r := await run.rush(servers[run.mode_of(name)], url, plan, seed, name))
                say(rush_line(r))
            elif names == ["checkin"]:
                rows += await run.checkin(servers["open"], url, plan, seed)
                say(f"checkin: {rows[-1].rps:.0f}/s ({rows[-1].ceiling_pct}% of the "
                    f"database's own rate)")  # fmt: skip
            elif names:
                rows += await registration_set(url, plan, seed, servers, names)
    return rows


async def registration_set(
    url: str, plan: Plan, seed: run.Seed, servers: dict[str, spawn.Server], names: list[str]
) -> list[Row]:
    """hot's and spread's database ceiling, then the set's HTTP scenarios as one comparison,
    then the group sizes each scenario's transactions had."""
    kind = "spread" if names[0] == "spread" else "hot"
    rows = ceilings = [] if names[0].startswith("low") else await run.measure_ceiling(
        url, seed, plan, kind)  # fmt: skip
    best = max((c.rps for c in ceilings), default=None)
    count, capacity = (1, run.HOT_CAPACITY) if kind == "hot" else (run.SPREAD_EVENTS,
                                                                  run.SPREAD_CAPACITY)  # fmt: skip
    sides = []
    for name in names:
        events = await seed.events(url, name, count, capacity)
        srv = servers[run.mode_of(name)]
        sides.append(run.registrations_side(
            name, srv, plan.workers, events, seed, auth=name.endswith("_tokens"),
            keys=name.endswith("_keys"), clients=LOW_CLIENTS.get(name.removesuffix("_single")),
        ))  # fmt: skip
    measured = await run.compare(sides, plan, settle_url=url)
    for r, side in zip(measured, sides, strict=True):
        r.extra = {**r.extra, "groups": await run.group_sizes(url, side.events)}
        if best is not None:
            r.ceiling_rps, r.ceiling_pct = best, round(100 * r.rps / best, 1)
        share = "" if best is None else f" ({r.ceiling_pct}% of the database ceiling)"
        say(f"{r.scenario}: {r.rps:.0f}/s{share}; groups {groups_text(r)}")
    return rows + measured


async def read_scenarios(url: str, plan: Plan, seed: run.Seed, read_url: str) -> list[Row]:
    """read_one beside read_one_tokens (the same GET on a server with tokens on, sending a
    valid token: the token cache's path), read_one_observed (metrics and JSON request lines
    on) and read_one_replica (the standby answers: DATABASE_READ_URL); read_list beside
    read_list_gzip."""
    rows: list[Row] = []
    chosen = [name for name in READS if name in plan.scenarios]
    workers = plan.read_workers

    def start(stack: contextlib.ExitStack, mode: str, **extra: str) -> spawn.Server:
        srv = stack.enter_context(run.server(url, workers, plan.pool_max, mode, extra))
        say(f"server up ({'replica' if extra else mode}): {srv.url}, pid {srv.pid}, "
            f"{workers} worker(s)")  # fmt: skip
        return srv

    with contextlib.ExitStack() as stack:
        srv = start(stack, "open")
        tsrv = start(stack, "tokens") if "read_one_tokens" in chosen else srv
        osrv = start(stack, "observed") if "read_one_observed" in chosen else srv
        rsrv = start(stack, "open", DATABASE_READ_URL=read_url) if read_url else srv
        (event,) = await seed.events(url, "read", 1, 100)
        await seed.events(url, "list", run.LIST_EVENTS, 100)
        await run.analyze(url)  # thousands of events now; the seed's statistics say none
        one, page = f"/api/v1/events/{event}", "/api/v1/events?limit=100"
        # One token per client connection, as if each client were a signed-in user.
        users = [bearer(seed.token_of[u]) for u in seed.users[: plan.clients]]
        sides = {
            "read_one": run.read_side("read_one", srv, workers, one, [NONE]),
            "read_one_tokens": run.read_side("read_one_tokens", tsrv, workers, one, users),
            "read_one_observed": run.read_side("read_one_observed", osrv, workers, one, [NONE]),
            "read_one_replica": run.read_side("read_one_replica", rsrv, workers, one, [NONE]),
            "read_list": run.read_side("read_list", srv, workers, page, [NONE]),
            "read_list_gzip": run.read_side("read_list_gzip", srv, workers, page, [GZIP]),
        }
        if read_url:
            await run.wait_for_event(read_url, event)  # the standby has the rows to serve
            await asyncio.sleep(1)  # and the server has seen it caught up
            served_before = await run.transactions(read_url)
        groups = (
            ("read_one", "read_one_tokens", "read_one_observed", "read_one_replica"),
            ("read_list", "read_list_gzip"),
        )
        for group in groups:
            if names := [name for name in group if name in chosen]:
                measured = await run.compare([sides[name] for name in names], plan,
                                             settle_url=url)  # fmt: skip
                for r in measured:
                    if r.scenario.startswith("read_list"):
                        sent = GZIP if "gzip" in r.scenario else NONE
                        r.extra = {**r.extra, **await asyncio.to_thread(run.body_size, srv,
                                                                         page, sent)}  # fmt: skip
                    if r.scenario == "read_one_replica":
                        served = await run.transactions(read_url) - served_before
                        r.extra = {**r.extra, "standby_transactions": served}
                    say(f"{r.scenario}: {r.rps:.0f}/s")
                rows += measured
    return rows


def groups_text(r: Row) -> str:
    """Group sizes as "mean/p99/max", or "-" for a scenario that registers nobody."""
    g = r.extra.get("groups")
    if not g or not g.get("groups"):
        return "-"
    return f"{g['mean']:.1f}/{g['p99']}/{g['max']}"


def rush_correct(r: Row) -> bool:
    e = r.extra
    return bool(
        e["sold"] == e["db_active_registrations"] <= run.RUSH_SEATS
        and e["db_available_seats"] == run.RUSH_SEATS - e["sold"] and e["db_consistent"]
    )  # fmt: skip


def relate(rows: dict[str, Row]) -> None:
    """Each paired scenario's throughput and median latency as a share of its partner's
    (extra.vs_pct, extra.p50_pct)."""
    for name, base in BESIDE.items():
        if name in rows and base in rows:
            r, b = rows[name], rows[base]
            pct = round(100 * r.rps / max(b.rps, 1e-9), 1)
            p50 = round(100 * r.p50_ms / max(b.p50_ms, 1e-9), 1)
            r.extra = {**r.extra, "vs": base, "vs_pct": pct, "p50_pct": p50}


def targets_of(rows: dict[str, Row]) -> dict[str, bool]:
    targets: dict[str, bool] = {}
    for base, budget in AUTH_BUDGET_PCT.items():
        paired = rows.get(f"{base}_tokens")
        if paired is not None and "vs_pct" in paired.extra:
            name = f"{base}_tokens >= {100 - budget}% of {base} (authentication costs <= {budget}%)"
            targets[name] = paired.extra["vs_pct"] >= 100 - budget
    for base, budget in OBSERVED_BUDGET_PCT.items():
        paired = rows.get(f"{base}_observed")
        if paired is not None and "vs_pct" in paired.extra:
            name = (f"{base}_observed >= {100 - budget}% of {base} (metrics and JSON request "
                    f"lines cost <= {budget}%)")  # fmt: skip
            targets[name] = paired.extra["vs_pct"] >= 100 - budget
    targets.update(group_targets(rows))
    if "spread" in rows:
        targets["spread >= 50% of the database ceiling"] = (rows["spread"].ceiling_pct or 0) >= 50
    if "read_one" in rows:
        ok = rows["read_one"].rps >= 5000 and rows["read_one"].workers == 1
        targets["read_one >= 5,000 req/s with 1 worker"] = ok
    for name, r in rows.items():
        targets[f"{name}: no errors"] = not r.errors
    return targets


def group_targets(rows: dict[str, Row]) -> dict[str, bool]:
    """Issue 12 (group admission) and issue 11 (keys) in numbers."""
    targets: dict[str, bool] = {}
    if "hot" in rows:
        name = f"hot >= {HOT_VS_CEILING}x the single-transaction database ceiling"
        targets[name] = (rows["hot"].ceiling_pct or 0) >= 100 * HOT_VS_CEILING
        if "spread" in rows:
            targets["hot >= spread"] = rows["hot"].rps >= rows["spread"].rps
    if "rush" in rows:
        e = rows["rush"].extra
        targets["rush: exactly 500 sold"] = e["sold"] == run.RUSH_SEATS
        targets["rush: all 2,000 answered within 0.5 s"] = e["all_answered_s"] <= 0.5
    for low in LOW_CLIENTS:
        if low in rows and "p50_pct" in rows[low].extra:
            name = f"{low}: p50 with group admission <= {LOW_P50_PCT}% of without"
            targets[name] = rows[low].extra["p50_pct"] <= LOW_P50_PCT
    if "hot_keys" in rows and "vs_pct" in rows["hot_keys"].extra:
        name = f"hot_keys >= {100 - KEYS_BUDGET_PCT}% of hot (keys cost <= {KEYS_BUDGET_PCT}%)"
        targets[name] = rows["hot_keys"].extra["vs_pct"] >= 100 - KEYS_BUDGET_PCT
    return targets


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def table(result: Result) -> str:
    head = ("scenario", "workers", "clients", "req/s", "p50 ms", "p95 ms", "p99 ms",
            "errors", "peak RSS MB", "% of DB", "group mean/p99/max",
            "CPU ms/req API+DB")  # fmt: skip
    lines = [head]
    for r in result.rows:
        errors = ", ".join(f"{k}: {v}" for k, v in r.errors.items()) or "0"
        cpu = (f"{r.extra['api_cpu_ms']:.3f}+{r.extra['db_cpu_ms']:.3f}"
               if "api_cpu_ms" in r.extra else "-")  # fmt: skip
        lines.append((
            r.scenario, str(r.workers or "-"), str(r.clients), fmt(r.rps, 0), fmt(r.p50_ms, 2),
            fmt(r.p95_ms, 2), fmt(r.p99_ms, 2), errors, fmt(r.peak_rss_mb),
            fmt(r.ceiling_pct) + ("%" if r.ceiling_pct is not None else ""), groups_text(r),
            cpu,
        ))  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths,
           strict=True))) for line in lines]  # fmt: skip
    out.insert(1, "  ".join("-" * w for w in widths))
    out += [rush_line(r) for r in result.rows if r.scenario.startswith("rush")]
    by_name = {r.scenario: r for r in result.rows}
    out += [beside_line(r, by_name[r.extra["vs"]]) for r in result.rows if "vs" in r.extra]
    out += [chart_line(p) for p in result.sweep]
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
        f"({fmt(base.rps, 0)}/s); p50 {fmt(r.p50_ms, 2)} ms vs {fmt(base.p50_ms, 2)} ms "
        f"({r.extra['p50_pct']}%), p99 {fmt(r.p99_ms, 2)} ms vs {fmt(base.p99_ms, 2)} ms"
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
        f"{r.scenario}: {e['sold']} of {e['seats']} seats sold to {r.clients} clients; sold "
        f"out after {fmt(e['sold_out_s'], 3)} s, all answered after "
        f"{fmt(e['all_answered_s'], 3)} s; database: {e['db_active_registrations']} active, "
        f"{e['db_available_seats']} left; groups {groups_text(r)} (mean/p99/max)"
    )


def chart_line(p: dict[str, Any]) -> str:
    on, off = p["on_groups"], p["off_groups"]
    return (
        f"chart, {p['clients']} clients: on {fmt(p['on'], 0)}/s (groups mean "
        f"{on.get('mean', 0):.1f}, p50 {fmt(p['on_p50_ms'], 2)} ms), off {fmt(p['off'], 0)}/s "
        f"(groups mean {off.get('mean', 0):.1f}, p50 {fmt(p['off_p50_ms'], 2)} ms)"
    )


def write_chart(result: Result, path: Path) -> None:
    """The sweep's SVG at `path` and its points beside it (.json), with the machine's load."""
    title = f"hot: one event, {result.plan['workers']} workers, registrations/s"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(chart.svg(result.sweep, title))
    data = {"started_at": result.started_at, "machine": result.machine, "points": result.sweep}
    path.with_suffix(".json").write_bytes(msgspec.json.format(msgspec.json.encode(data)))
    say(f"wrote {path} and {path.with_suffix('.json')}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = plan_from(args)
    t0 = time.monotonic()
    result = uvloop.run(bench(plan))
    print()
    print(table(result))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_bytes(msgspec.json.format(msgspec.json.encode(result)))
    if result.sweep:
        write_chart(result, args.chart_svg)
    say(f"wrote {args.json} ({time.monotonic() - t0:.0f} s in all)")
    return 0 if all(result.correct.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
