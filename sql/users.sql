-- name: insert_user
-- A new live user; a live user with the same email (any case) raises unique_violation.
INSERT INTO users (name, email, role)
VALUES ($1, $2, $3)
RETURNING id, name, email, role, created_at, updated_at;

-- name: get_user
SELECT id, name, email, role, created_at, updated_at
  FROM users
 WHERE id = $1 AND deleted_at IS NULL;

-- name: list_users
-- Keyset page: ids after $1, at most $2 rows; only user $3 unless $3 is NULL.
SELECT id, name, email, role, created_at, updated_at
  FROM users
 WHERE deleted_at IS NULL AND id > $1 AND ($3::bigint IS NULL OR id = $3)
 ORDER BY id
 LIMIT $2;

-- name: lock_user
-- Row-lock a live user before changing or deleting it; registration takes FOR SHARE on
-- the same row first, so a user cannot gain a registration while being deleted.
SELECT id, role
  FROM users
 WHERE id = $1 AND deleted_at IS NULL
   FOR UPDATE;

-- name: update_user
-- NULL parameters keep the current value; updated_at moves only when a value changes.
UPDATE users
   SET name = coalesce($2, name),
       email = coalesce($3, email),
       role = coalesce($4, role),
       updated_at = CASE WHEN (coalesce($2, name), coalesce($3, email), coalesce($4, role))
                              IS DISTINCT FROM (name, email, role)
                         THEN now() ELSE updated_at END
 WHERE id = $1 AND deleted_at IS NULL
RETURNING id, name, email, role, created_at, updated_at;

-- name: organizes_live_events
SELECT EXISTS (SELECT 1 FROM events WHERE organizer_id = $1 AND deleted_at IS NULL);

-- name: lock_events_of_user_registrations
-- Lock, in id order (the order every writer uses), the events where the user holds a seat
-- or waits for one, with the length of each queue.
SELECT e.id, e.waitlisted
  FROM events e
 WHERE e.id IN (SELECT r.event_id FROM registrations r
                 WHERE r.user_id = $1 AND r.status IN ('active', 'waitlisted'))
 ORDER BY e.id
   FOR UPDATE;

-- name: soft_delete_user
UPDATE users SET deleted_at = now(), updated_at = now() WHERE id = $1 AND deleted_at IS NULL;
