-- name: share_lock_user
-- Before the event lock: the user must be live, and stays so until we commit. Also reads,
-- without a lock, the event's seats and whether the user already holds one, so a repeat or
-- a sold-out event is answered without queueing for the event lock.
SELECT u.id,
       (SELECT available_seats FROM events
         WHERE id = $2 AND deleted_at IS NULL) AS seats_hint,
       EXISTS (SELECT 1 FROM registrations r
                WHERE r.event_id = $2 AND r.user_id = u.id AND r.status = 'active')
           AS registered_hint
  FROM users u
 WHERE u.id = $1 AND u.deleted_at IS NULL
   FOR SHARE OF u;

-- name: lock_event
-- Row-lock the event for the rest of the transaction. Every writer of a seat count or a
-- registration takes this lock first, so what it reads here stays true until COMMIT.
SELECT e.available_seats,
       EXISTS (SELECT 1 FROM registrations r
                WHERE r.event_id = e.id AND r.user_id = $2 AND r.status = 'active')
           AS already_registered
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
INSERT INTO registrations (event_id, user_id)
VALUES ($1, $2)
RETURNING id, user_id, event_id, status, created_at, updated_at;

-- name: lock_event_for_cancel
-- Returns who organizes the event: they (and admins) may cancel anyone's seat.
SELECT organizer_id FROM events WHERE id = $1 FOR UPDATE;

-- name: cancel_registration
-- Cancel at most once: only an active row changes, and only then is a seat given back.
UPDATE registrations
   SET status = 'cancelled', cancelled_at = now(), updated_at = now()
 WHERE event_id = $1 AND user_id = $2 AND status = 'active'
RETURNING id;

-- name: release_seat
UPDATE events SET available_seats = available_seats + 1 WHERE id = $1;

-- name: get_registration
-- An active registration with its user and event, flattened with u_ and e_ prefixes.
SELECT r.id, r.user_id, r.event_id, r.status, r.created_at, r.updated_at,
       u.name AS u_name, u.email AS u_email, u.role AS u_role,
       u.created_at AS u_created_at, u.updated_at AS u_updated_at,
       e.title AS e_title, e.capacity AS e_capacity, e.available_seats AS e_available_seats,
       e.organizer_id AS e_organizer_id,
       e.created_at AS e_created_at, e.updated_at AS e_updated_at
  FROM registrations r
  JOIN users u ON u.id = r.user_id
  JOIN events e ON e.id = r.event_id
 WHERE r.id = $1 AND r.status = 'active';

-- name: list_registrations_by_user
-- Keyset page of a user's active registrations ($1) with their events; only at events
-- organized by $4 unless $4 is NULL.
SELECT r.id, r.user_id, r.event_id, r.status, r.created_at, r.updated_at,
       e.title AS e_title, e.capacity AS e_capacity, e.available_seats AS e_available_seats,
       e.organizer_id AS e_organizer_id,
       e.created_at AS e_created_at, e.updated_at AS e_updated_at
  FROM registrations r
  JOIN events e ON e.id = r.event_id
 WHERE r.user_id = $1 AND r.status = 'active' AND r.id > $2
   AND ($4::bigint IS NULL OR e.organizer_id = $4)
 ORDER BY r.id
 LIMIT $3;

-- name: list_registrations_by_event
-- Keyset page of an event's active registrations ($1) with their users.
SELECT r.id, r.user_id, r.event_id, r.status, r.created_at, r.updated_at,
       u.name AS u_name, u.email AS u_email, u.role AS u_role,
       u.created_at AS u_created_at, u.updated_at AS u_updated_at
  FROM registrations r
  JOIN users u ON u.id = r.user_id
 WHERE r.event_id = $1 AND r.status = 'active' AND r.id > $2
 ORDER BY r.id
 LIMIT $3;

-- name: user_exists
SELECT EXISTS (SELECT 1 FROM users WHERE id = $1 AND deleted_at IS NULL);

-- name: event_organizer
-- Who organizes live event $1 (no row: no such event).
SELECT organizer_id FROM events WHERE id = $1 AND deleted_at IS NULL;
