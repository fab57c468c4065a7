"""`make bench ARGS=--chart`: hot throughput against clients, group admission on and off.

For each client count the two servers run as a pair (A B B A, short runs) on events of
their own. The points go to JSON and into a small SVG drawn here as plain text: two lines
over a log scale of clients, labelled axes, a legend.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any
from xml.sax.saxutils import escape

from eventreg.bench import run
from eventreg.bench.run import Plan, Seed, say

CLIENTS = (1, 4, 16, 50, 100, 200)
DURATION = 3.0  # seconds per side and client count, in two runs of half that
WARMUP = 0.5
LINES = (("on", "group admission on", "#1f6fb4"), ("off", "off: one transaction each", "#d2542a"))
WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 560, 320, 64, 20, 36, 52


async def sweep(url: str, plan: Plan, seed: Seed) -> list[dict[str, Any]]:
    """Hot at each client count, on and off; one dict per client count."""
    short = dataclasses.replace(plan, duration=DURATION, warmup=WARMUP)
    points = []
    with contextlib.ExitStack() as stack:
        servers = {
            mode: stack.enter_context(run.server(url, plan.workers, plan.pool_max, mode))
            for mode in ("open", "single")
        }
        for clients in CLIENTS:
            sides = []
            for mode, name in (("open", "on"), ("single", "off")):
                events = await seed.events(url, f"chart {name} {clients}", 1, run.HOT_CAPACITY)
                sides.append(run.registrations_side(name, servers[mode], plan.workers, events,
                                                    seed, auth=False, clients=clients))  # fmt: skip
            on, off = await run.compare(sides, short)
            point: dict[str, Any] = {"clients": clients}
            for r, side in ((on, sides[0]), (off, sides[1])):
                point[r.scenario] = r.rps
                point[f"{r.scenario}_p50_ms"] = r.p50_ms
                point[f"{r.scenario}_errors"] = sum(r.errors.values())
                point[f"{r.scenario}_groups"] = await run.group_sizes(url, side.events)
            say(f"chart: {clients} clients: on {on.rps:,.0f}/s, off {off.rps:,.0f}/s")
            points.append(point)
    return points


def nice_top(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten that is at least `value`."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return float(next(m * power for m in (1, 2, 5, 10) if m * power >= value))


def svg(points: list[dict[str, Any]], title: str) -> str:
    """The chart as SVG text: x is clients (log scale), y registrations per second."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = nice_top(max([p[key] for p in points for key, _, _ in LINES] + [1.0]))
    span = math.log(max(max(p["clients"] for p in points), 2))

    def x(clients: int) -> float:
        return LEFT + plot_w * math.log(clients) / span

    def y(rps: float) -> float:
        return TOP + plot_h * (1 - rps / top)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{WIDTH / 2}" y="20" text-anchor="middle" font-size="14">{escape(title)}</text>',
    ]
    for i in range(6):  # horizontal grid and y labels
        value = top * i / 5
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(value):.1f}" '
                   f'y2="{y(value):.1f}" stroke="#e4e4e4"/>')  # fmt: skip
        out.append(f'<text x="{LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end">'
                   f"{value:,.0f}</text>")  # fmt: skip
    for p in points:  # x ticks at the measured client counts
        out.append(f'<text x="{x(p["clients"]):.1f}" y="{TOP + plot_h + 16}" '
                   f'text-anchor="middle">{p["clients"]}</text>')  # fmt: skip
    out.append(f'<path d="M{LEFT},{TOP} V{TOP + plot_h} H{WIDTH - RIGHT}" fill="none" '
               f'stroke="#333"/>')  # fmt: skip
    out.append(f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 10}" text-anchor="middle">'
               "concurrent clients (log scale)</text>")  # fmt: skip
    out.append(f'<text transform="translate(16,{TOP + plot_h / 2}) rotate(-90)" '
               'text-anchor="middle">registrations/s</text>')  # fmt: skip
    for n, (key, label, colour) in enumerate(LINES):
        xy = " ".join(f"{x(p['clients']):.1f},{y(p[key]):.1f}" for p in points)
        out.append(f'<polyline points="{xy}" fill="none" stroke="{colour}" stroke-width="2"/>')
        out += [f'<circle cx="{x(p["clients"]):.1f}" cy="{y(p[key]):.1f}" r="3" '
                f'fill="{colour}"/>' for p in points]  # fmt: skip
        ly = TOP + 14 + 18 * n
        out.append(f'<line x1="{LEFT + 12}" x2="{LEFT + 36}" y1="{ly - 4}" y2="{ly - 4}" '
                   f'stroke="{colour}" stroke-width="2"/>')  # fmt: skip
        out.append(f'<text x="{LEFT + 42}" y="{ly}">{escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
