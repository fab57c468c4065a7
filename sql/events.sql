-- name: share_lock_organizer
-- The would-be organizer, share-locked so it cannot be deleted or demoted until we commit.
SELECT id, role
  FROM users
 WHERE id = $1 AND deleted_at IS NULL
   FOR SHARE;

-- name: insert_event
-- A new event starts with every seat available; $4-$6 are its optional windows.
INSERT INTO events (title, capacity, available_seats, organizer_id, registration_opens_at,
                    registration_closes_at, cancellation_closes_at)
VALUES ($1, $2, $2, $3, $4, $5, $6)
RETURNING id;

-- name: get_event
-- An event with its organizer, flattened: organizer columns are prefixed with o_.
SELECT e.id, e.title, e.capacity, e.available_seats, e.organizer_id,
       e.created_at, e.updated_at, e.waitlisted, e.registration_opens_at,
       e.registration_closes_at, e.cancellation_closes_at,
       o.name AS o_name, o.email AS o_email, o.role AS o_role,
       o.created_at AS o_created_at, o.updated_at AS o_updated_at
  FROM events e
  JOIN users o ON o.id = e.organizer_id
 WHERE e.id = $1 AND e.deleted_at IS NULL;

-- name: list_events
-- Keyset page of live events with their organizers: ids after $1, at most $2 rows.
SELECT e.id, e.title, e.capacity, e.available_seats, e.organizer_id,
       e.created_at, e.updated_at, e.waitlisted, e.registration_opens_at,
       e.registration_closes_at, e.cancellation_closes_at,
       o.name AS o_name, o.email AS o_email, o.role AS o_role,
       o.created_at AS o_created_at, o.updated_at AS o_updated_at
  FROM events e
  JOIN users o ON o.id = e.organizer_id
 WHERE e.deleted_at IS NULL AND e.id > $1
 ORDER BY e.id
 LIMIT $2;

-- name: list_events_by_organizer
-- Keyset page of one organizer's live events ($1), ids after $2, at most $3 rows.
SELECT id, title, capacity, available_seats, organizer_id, created_at, updated_at,
       waitlisted, registration_opens_at, registration_closes_at, cancellation_closes_at
  FROM events
 WHERE organizer_id = $1 AND deleted_at IS NULL AND id > $2
 ORDER BY id
 LIMIT $3;

-- name: user_exists
SELECT EXISTS (SELECT 1 FROM users WHERE id = $1 AND deleted_at IS NULL);

-- name: update_event
-- NULL parameters keep the current value; updated_at moves only when a value changes. A
-- lower capacity takes its seats away here ($5 = the negative change); the seats of a
-- higher one are handed out next, queue first (registrations.settle). The seats CHECK
-- rejects a capacity below the active registrations.
UPDATE events
   SET title = coalesce($2, title),
       capacity = coalesce($3, capacity),
       available_seats = available_seats + $5,
       organizer_id = coalesce($4, organizer_id),
       updated_at = CASE WHEN (coalesce($2, title), coalesce($3, capacity),
                               coalesce($4, organizer_id))
                              IS DISTINCT FROM (title, capacity, organizer_id)
                         THEN now() ELSE updated_at END
 WHERE id = $1 AND deleted_at IS NULL;

-- name: lock_event_for_change
-- Row-lock a live event before changing or deleting it: who organizes it, how many seats
-- are taken (the lowest capacity it can have), how many wait, and its windows.
SELECT organizer_id, capacity, capacity - available_seats AS taken, waitlisted,
       registration_opens_at, registration_closes_at, cancellation_closes_at
  FROM events
 WHERE id = $1 AND deleted_at IS NULL
   FOR UPDATE;

-- name: cancel_event_registrations
-- Seats and places in the queue alike.
UPDATE registrations
   SET status = 'cancelled', cancelled_at = now(), updated_at = now()
 WHERE event_id = $1 AND status IN ('active', 'waitlisted');

-- name: soft_delete_event
-- The event goes with all its seats given back and its queue emptied, so the counters
-- stay truthful.
UPDATE events
   SET deleted_at = now(), updated_at = now(), available_seats = capacity, waitlisted = 0
 WHERE id = $1;

-- name: set_windows
-- The registration and cancellation windows ($2-$4), as the caller computed them.
UPDATE events
   SET registration_opens_at = $2, registration_closes_at = $3, cancellation_closes_at = $4,
       updated_at = CASE WHEN ($2, $3, $4) IS DISTINCT FROM
                              (registration_opens_at, registration_closes_at,
                               cancellation_closes_at)
                         THEN now() ELSE updated_at END
 WHERE id = $1;
