-- name: share_lock_user
-- Before the event lock: the user must be live, and stays so until we commit. Also reads,
-- without a lock, the event's seats and whether the user already holds one or waits for
-- one, so a repeat or a sold-out event is answered without queueing for the event lock.
SELECT u.id,
       e.available_seats AS seats_hint,
       e.registration_opens_at > clock_timestamp() AS not_open_hint,
       e.registration_closes_at <= clock_timestamp() AS closed_hint,
       EXISTS (SELECT 1 FROM registrations r
                WHERE r.event_id = $2 AND r.user_id = u.id
                  AND r.status IN ('active', 'waitlisted'))
           AS registered_hint
  FROM users u
  LEFT JOIN events e ON e.id = $2 AND e.deleted_at IS NULL
 WHERE u.id = $1 AND u.deleted_at IS NULL
   FOR SHARE OF u;

-- name: lock_event
-- Row-lock the event for the rest of the transaction. Every writer of a seat count or a
-- registration takes this lock first, so what it reads here stays true until COMMIT. The
-- registration window is read against the database's clock at this moment, not the
-- transaction's start (now()): a request that waited for the lock past the window's
-- opening is in, one that got it after the closing is out.
SELECT e.available_seats,
       EXISTS (SELECT 1 FROM registrations r
                WHERE r.event_id = e.id AND r.user_id = $2
                  AND r.status IN ('active', 'waitlisted'))
           AS already_registered,
       e.registration_opens_at > clock_timestamp() AS not_open_yet,
       e.registration_closes_at <= clock_timestamp() AS closed
  FROM events e
 WHERE e.id = $1 AND e.deleted_at IS NULL
   FOR UPDATE OF e;

-- name: take_seat
-- Returns the new seat count, or no row when the event is already full.
UPDATE events
   SET available_seats = available_seats - 1
 WHERE id = $1 AND available_seats > 0
RETURNING available_seats;

-- name: insert_registration
-- Stamped by the clock at this moment, under the event lock: the time the seat was taken,
-- not when the transaction began (which may be before a window opened).
INSERT INTO registrations (event_id, user_id, created_at, updated_at)
VALUES ($1, $2, clock_timestamp(), clock_timestamp())
RETURNING id, user_id, event_id, status, created_at, updated_at, promoted_at, promoted_from;

-- name: join_queue
-- The event is full: one more waits. Returns the new length of the queue, which is the
-- newcomer's position (the queue only grows at its end, under the event lock).
UPDATE events
   SET waitlisted = waitlisted + 1
 WHERE id = $1 AND available_seats = 0
RETURNING waitlisted;

-- name: insert_queued_registration
INSERT INTO registrations (event_id, user_id, status, created_at, updated_at)
VALUES ($1, $2, 'waitlisted', clock_timestamp(), clock_timestamp())
RETURNING id, user_id, event_id, status, created_at, updated_at, promoted_at, promoted_from;

-- name: lock_event_for_cancel
-- Who organizes the event (they and admins may cancel anyone's seat), how many wait, and
-- whether cancelling has closed (by the database's clock).
SELECT organizer_id, waitlisted, cancellation_closes_at <= clock_timestamp() AS cancellation_closed
  FROM events
 WHERE id = $1
   FOR UPDATE;

-- name: cancel_registration
-- Cancel at most once: only a live row changes. Returns what it was: a seat to give back
-- ('active'), or a place in the queue to leave ('waitlisted').
UPDATE registrations r
   SET status = 'cancelled', cancelled_at = now(), updated_at = now()
  FROM (SELECT id, status FROM registrations
         WHERE event_id = $1 AND user_id = $2 AND status IN ('active', 'waitlisted')) old
 WHERE r.id = old.id
RETURNING old.status;

-- name: settle_seats
-- $2 seats come free and $3 of them go to the head of the queue (the caller, holding the
-- event lock, has chosen $3 = least($2, waitlisted)); $4 waiting entries left the queue.
-- One statement, so the seat and queue counters never show a free seat while anyone
-- waits (events_no_free_seat_while_queued). promote_head then flips the $3 rows.
UPDATE events
   SET available_seats = available_seats + $2 - $3,
       waitlisted = waitlisted - $3 - $4
 WHERE id = $1;

-- name: promote_head
-- The first $2 of event $1's queue take seats, in arrival order; each records when, and
-- from which position.
WITH head AS (
    SELECT id, row_number() OVER (ORDER BY id) AS position
      FROM registrations
     WHERE event_id = $1 AND status = 'waitlisted'
     ORDER BY id
     LIMIT $2
)
UPDATE registrations r
   SET status = 'active', promoted_at = clock_timestamp(), promoted_from = h.position,
       updated_at = clock_timestamp()
  FROM head h
 WHERE r.id = h.id;

-- name: get_registration
-- A live registration (active or waiting) with its user and event, flattened with u_ and
-- e_ prefixes; a waiting one with its place in the queue.
SELECT r.id, r.user_id, r.event_id, r.status, r.created_at, r.updated_at,
       r.promoted_at, r.promoted_from,
       CASE WHEN r.status = 'waitlisted' THEN
            (SELECT count(*) FROM registrations w
              WHERE w.event_id = r.event_id AND w.status = 'waitlisted' AND w.id <= r.id)
       END AS waitlist_position,
       u.name AS u_name, u.email AS u_email, u.role AS u_role,
       u.created_at AS u_created_at, u.updated_at AS u_updated_at,
       e.title AS e_title, e.capacity AS e_capacity, e.available_seats AS e_available_seats,
       e.organizer_id AS e_organizer_id,
       e.created_at AS e_created_at, e.updated_at AS e_updated_at
  FROM registrations r
  JOIN users u ON u.id = r.user_id
  JOIN events e ON e.id = r.event_id
 WHERE r.id = $1 AND r.status IN ('active', 'waitlisted');

-- name: list_registrations_by_user
-- Keyset page of a user's ($1) registrations in status $5 with their events; only at
-- events organized by $4 unless $4 is NULL.
SELECT r.id, r.user_id, r.event_id, r.status, r.created_at, r.updated_at,
       r.promoted_at, r.promoted_from,
       e.title AS e_title, e.capacity AS e_capacity, e.available_seats AS e_available_seats,
       e.organizer_id AS e_organizer_id,
       e.created_at AS e_created_at, e.updated_at AS e_updated_at
  FROM registrations r
  JOIN events e ON e.id = r.event_id
 WHERE r.user_id = $1 AND r.status = $5 AND r.id > $2
   AND ($4::bigint IS NULL OR e.organizer_id = $4)
 ORDER BY r.id
 LIMIT $3;

-- name: list_registrations_by_event
-- Keyset page of an event's ($1) registrations in status $4 with their users.
SELECT r.id, r.user_id, r.event_id, r.status, r.created_at, r.updated_at,
       r.promoted_at, r.promoted_from,
       u.name AS u_name, u.email AS u_email, u.role AS u_role,
       u.created_at AS u_created_at, u.updated_at AS u_updated_at
  FROM registrations r
  JOIN users u ON u.id = r.user_id
 WHERE r.event_id = $1 AND r.status = $4 AND r.id > $2
 ORDER BY r.id
 LIMIT $3;

-- name: user_exists
SELECT EXISTS (SELECT 1 FROM users WHERE id = $1 AND deleted_at IS NULL);

-- name: event_organizer
-- Who organizes live event $1 (no row: no such event).
SELECT organizer_id FROM events WHERE id = $1 AND deleted_at IS NULL;
