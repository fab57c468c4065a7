-- name: events_on_sale
-- The seat gauges of /metrics: the $1 newest live events whose registration has not closed.
SELECT id, capacity, available_seats, waitlisted
  FROM events
 WHERE deleted_at IS NULL
   AND (registration_closes_at IS NULL OR registration_closes_at > now())
 ORDER BY id DESC
 LIMIT $1;
