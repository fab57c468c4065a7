"""The waitlist's invariants (I9-I11), read from the database in one statement.

- I9: no event has a free seat while its queue is non-empty, and the queue counter agrees
  with the waiting rows.
- I10: promotions follow arrival order: nobody was promoted who queued after someone who
  is still waiting for the same event.
- I11: at most one live entry (active or waitlisted) per (user, event).

`queue_violations` is the final check; `QueueSampler` runs it every ~20 ms while load runs,
so a state that is wrong only for a moment (inside a transaction's commit) is caught too.
"""

from __future__ import annotations

from collections.abc import Iterable

from tests.reliability.harness import Db, Periodic

# One statement: one snapshot of every table it reads.
QUEUE_CHECK = """
SELECT 'I9' AS invariant, e.id AS event_id,
       format('%s free seats while %s wait (%s waiting rows)',
              e.available_seats, e.waitlisted, count(r.id)) AS detail
  FROM events e
  LEFT JOIN registrations r ON r.event_id = e.id AND r.status = 'waitlisted'
 WHERE e.id = ANY($1::bigint[])
 GROUP BY e.id
HAVING (e.available_seats > 0 AND count(r.id) > 0) OR e.waitlisted <> count(r.id)
UNION ALL
SELECT 'I10', p.event_id, format('registration %s promoted before %s, still waiting', p.id, w.id)
  FROM registrations p
  JOIN registrations w ON w.event_id = p.event_id AND w.status = 'waitlisted' AND w.id < p.id
 WHERE p.event_id = ANY($1::bigint[]) AND p.promoted_at IS NOT NULL
UNION ALL
SELECT 'I11', event_id, format('user %s has %s live entries', user_id, count(*))
  FROM registrations
 WHERE event_id = ANY($1::bigint[]) AND status IN ('active', 'waitlisted')
 GROUP BY event_id, user_id
HAVING count(*) > 1
"""


async def queue_violations(db: Db, events: Iterable[int]) -> list[str]:
    found = await db.fetch(QUEUE_CHECK, list(events))
    return [f"{r['invariant']}: event {r['event_id']}: {r['detail']}" for r in found]


class QueueSampler(Periodic):
    """I9-I11 every `interval` s, while load runs."""

    async def sample(self, conn: Db) -> None:
        found = await queue_violations(conn, self.events)
        self.violations.extend(found[: 50 - len(self.violations)])
