"""The check-in invariants (issue 9), beside harness.py's I1-I8 and in the same style.

- CI1: at most one live check-in per registration (the database's unique index; checked).
- CI2: a check-in's event is its registration's event.
- CI3: check-ins ⊆ registrations that were active when scanned: never a waitlisted one,
  and no acknowledged check-in was asked for after an acknowledged cancel of it completed.
- CI4: one acknowledged first scan per ticket: never two `checked_in` answers to live
  scans of one ticket, and every `checked_in` answer has its live row at the end.
- CI5: the summary never shows more checked in than registered (every sample, the end).

Call `check_check_ins(db, history, tickets)` after a run; `history` is a harness.History
whose scans were recorded with `scan()` below, `tickets` maps registration id to (user,
event). `SummarySampler` samples CI1 and CI5 in one snapshot every ~20 ms during a run,
like harness.Sampler does for I1/I2.
"""

from __future__ import annotations

import secrets
from collections import Counter, defaultdict
from collections.abc import Iterable

import asyncpg
import httpx

from eventreg.db.tokens import PREFIX, SHOWN, digest
from tests.reliability.harness import API, Db, History, Op, Periodic

SNAPSHOT = """
SELECT e.id,
       (SELECT count(*) FROM registrations r
         WHERE r.event_id = e.id AND r.status = 'active') AS registered,
       (SELECT count(*) FROM check_ins c JOIN registrations r ON r.id = c.registration_id
         WHERE c.event_id = e.id AND c.undone_at IS NULL AND r.status = 'active') AS checked_in,
       (SELECT count(*) FROM (SELECT 1 FROM check_ins c
                               WHERE c.event_id = e.id AND c.undone_at IS NULL
                               GROUP BY c.registration_id HAVING count(*) > 1) d) AS doubled
  FROM events e
 WHERE e.id = ANY($1::bigint[])
"""
ROWS = """
SELECT c.registration_id, c.event_id, r.event_id AS registration_event, r.status
  FROM check_ins c JOIN registrations r ON r.id = c.registration_id
 WHERE c.undone_at IS NULL
"""


async def door_tokens(db: Db, event: int, n: int) -> list[str]:
    """`n` door tokens of `event` (its organizer's), stored as the API stores tokens: what
    scanners at the door hold. Ignored by an API with tokens off."""
    made = [f"evr_{secrets.token_urlsafe(32)}" for _ in range(n)]
    await db.execute(
        """INSERT INTO api_tokens (user_id, secret_hash, prefix, name, check_in_event_id)
           SELECT e.organizer_id, t.secret_hash, t.prefix, 'door ' || t.n, e.id
             FROM events e,
                  unnest($2::bytea[], $3::text[]) WITH ORDINALITY AS t (secret_hash, prefix, n)
            WHERE e.id = $1""",
        event,
        [digest(s) for s in made],
        [s[: len(PREFIX) + SHOWN] for s in made],
    )
    return made


async def scan(
    history: History, client: httpx.AsyncClient, code: str, registration: int, event: int,
    proc: int = 0, token: str = "",
) -> Op:  # fmt: skip
    """A live scan with a door `token`, recorded as op `scan` (Op.user: the registration)."""
    op = Op(proc, "scan", registration, event, history.now())
    url = f"{API}/events/{event}/check-ins"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await history._call(client, op, "POST", url, headers=headers, json={"code": code})


def check_check_ins(
    rows: Iterable[asyncpg.Record], history: History, tickets: dict[int, tuple[int, int]]
) -> list[str]:
    """CI1-CI4 over the final live check-ins (`ROWS`) and the history."""
    violations: list[str] = []
    live = Counter(r["registration_id"] for r in rows)
    violations += [
        f"CI1: registration {r} has {n} live check-ins" for r, n in live.items() if n > 1
    ]
    for r in rows:
        if r["event_id"] != r["registration_event"]:
            violations.append(f"CI2: check-in of {r['registration_id']} at event {r['event_id']}")
        if r["status"] == "waitlisted":
            violations.append(f"CI3: check-in of waitlisted {r['registration_id']}")
    firsts = Counter(op.user for op in history.of("scan", "ok") if op.code == "checked_in")
    for registration, n in firsts.items():
        if n > 1:
            violations.append(f"CI4: {n} checked_in answers for registration {registration}")
        if registration not in live:
            violations.append(f"CI4: registration {registration} acknowledged, not checked in")
    violations += _scans_after_cancel(history, tickets)
    return violations[:50]


def _scans_after_cancel(history: History, tickets: dict[int, tuple[int, int]]) -> list[str]:
    cancelled: dict[tuple[int, int], float] = defaultdict(lambda: float("inf"))
    for op in history.of("cancel", "ok"):
        cancelled[op.user, op.event] = min(cancelled[op.user, op.event], op.t_complete)
    found = []
    for op in history.of("scan", "ok"):
        if op.code == "checked_in" and op.t_invoke > cancelled[tickets[op.user]]:
            found.append(f"CI3: {op.user} checked in at t={op.t_invoke:.3f}, after its cancel")
    return found


async def final_rows(db: Db) -> list[asyncpg.Record]:
    return list(await db.fetch(ROWS))


class SummarySampler(Periodic):
    """CI1 and CI5 in one statement every `interval` s; with a client, it also reads
    GET …/check-ins/summary, what the door sees."""

    def __init__(
        self, database_url: str, events: list[int], client: httpx.AsyncClient | None = None,
        interval: float = 0.02, token: str = "",
    ) -> None:  # fmt: skip
        super().__init__(database_url, events, interval)
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http_samples = 0
        self.most_checked_in = 0

    async def sample(self, conn: Db) -> None:
        for r in await conn.fetch(SNAPSHOT, self.events):
            self._check(r["id"], r["registered"], r["checked_in"], r["doubled"], "db")
        await self._sample_http()

    async def _sample_http(self) -> None:
        if self.client is None:
            return
        for event in self.events:
            url = f"{API}/events/{event}/check-ins/summary"
            body = (await self.client.get(url, headers=self.headers)).json()
            self._check(event, body["registered"], body["checked_in"], 0, "http")
            if body["not_arrived"] != body["registered"] - body["checked_in"]:
                self.violations.append(f"CI5 http: {body}")
        self.http_samples += 1

    def _check(self, event: int, registered: int, checked_in: int, doubled: int, how: str) -> None:
        self.most_checked_in = max(self.most_checked_in, checked_in)
        if checked_in > registered and len(self.violations) < 50:
            self.violations.append(f"CI5 {how}: event {event}: {checked_in} > {registered}")
        if doubled and len(self.violations) < 50:
            self.violations.append(f"CI1 sample: event {event}: {doubled} tickets doubled")
