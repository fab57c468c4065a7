"""The benchmark's own arithmetic: group sizes read back from xmin, the chart, the targets.
Nothing here is timed; speed is `make bench`'s business."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import asyncpg

from eventreg.bench import chart, run
from eventreg.bench.__main__ import group_targets, relate
from eventreg.bench.run import Row
from eventreg.caller import OPEN
from eventreg.db import admission, registrations
from eventreg.db.admission import Member
from eventreg.routes.registrations import answer


async def test_group_sizes_count_the_rows_each_transaction_inserted(
    database_url: str, db: asyncpg.Connection[asyncpg.Record]
) -> None:
    seed = await run.seed(database_url, 4)
    (event,) = await seed.events(database_url, "groups", 1, 10)
    u = seed.users
    members = [Member(u[0]), Member(u[1]), Member(u[2])]
    await admission.admit(db, event, members, answer=answer, key_ttl=60)
    await registrations.register(db, OPEN, event, u[3])
    sizes = await run.group_sizes(database_url, [event])
    assert sizes == {"groups": 2, "mean": 2.0, "p99": 3, "max": 3}


def test_group_stats_of_nothing_and_of_many() -> None:
    assert run.group_stats([]) == {"groups": 0}
    stats = run.group_stats([1] * 99 + [40])
    assert stats == {"groups": 100, "mean": 1.39, "p99": 40, "max": 40}


def test_the_chart_is_svg_with_two_lines_axes_and_a_legend() -> None:
    points = [{"clients": c, "on": 100.0 * c, "off": 300.0} for c in chart.CLIENTS]
    text = chart.svg(points, "hot & clients")
    root = ET.fromstring(text)
    ns = "{http://www.w3.org/2000/svg}"
    assert len(root.findall(f"{ns}polyline")) == 2
    labels = [t.text for t in root.findall(f"{ns}text")]
    assert "hot & clients" in labels
    assert {"concurrent clients (log scale)", "registrations/s"} <= set(labels)
    assert {label for _, label, _ in chart.LINES} <= set(labels)
    ticks = {str(c) for c in chart.CLIENTS}
    assert [x for x in labels if x in ticks] == [str(c) for c in chart.CLIENTS]
    assert chart.nice_top(20_000) == 20_000
    assert chart.nice_top(1_560) == 2_000


def fake(name: str, rps: float, p50: float, **extra: Any) -> Row:
    return Row(name, 2, 50, 1, 1.0, rps, p50, p50, p50, {}, {}, extra=extra)


def test_targets_read_on_against_off_keys_against_hot_and_the_rush() -> None:
    rows = {
        "hot": fake("hot", 2_000, 20),
        "hot_single": fake("hot_single", 600, 80),
        "hot_keys": fake("hot_keys", 1_700, 25),
        "spread": fake("spread", 1_500, 30),
        "low_1": fake("low_1", 400, 2.2),
        "low_1_single": fake("low_1_single", 420, 2.0),
        "rush": fake("rush", 2_000, 300, sold=500, all_answered_s=0.45),
    }
    rows["hot"].ceiling_pct = 310.0
    relate(rows)
    assert rows["hot"].extra["vs"] == "hot_single"
    assert rows["hot_keys"].extra["vs_pct"] == 85.0
    targets = group_targets(rows)
    assert targets == {
        "hot >= 3x the single-transaction database ceiling": True,
        "hot >= spread": True,
        "rush: exactly 500 sold": True,
        "rush: all 2,000 answered within 0.5 s": True,
        "low_1: p50 with group admission <= 105% of without": False,  # 110%
        "hot_keys >= 90% of hot (keys cost <= 10%)": False,  # 85%
    }
