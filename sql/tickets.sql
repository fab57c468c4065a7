-- name: event_for_check_in
-- Who organizes live event $1 (no row: no such event). Read without a lock: check-ins
-- never lock the event row, so a whole event can be checked in at once.
SELECT organizer_id FROM events WHERE id = $1 AND deleted_at IS NULL;

-- name: share_lock_registration
-- The scanned registration, share-locked until COMMIT: a cancellation (an UPDATE of the
-- row) waits for this check-in, and this check-in waits for a cancellation in progress,
-- then reads it. Check-ins of other tickets do not wait for each other.
SELECT r.id, r.event_id, r.status, r.cancelled_at, u.name AS holder_name
  FROM registrations r
  JOIN users u ON u.id = r.user_id
 WHERE r.id = $1
   FOR SHARE OF r;

-- name: share_lock_registrations
-- The same for a batch of registration ids ($1), locked in id order.
SELECT r.id, r.event_id, r.status, r.cancelled_at, u.name AS holder_name
  FROM registrations r
  JOIN users u ON u.id = r.user_id
 WHERE r.id = ANY($1::bigint[])
 ORDER BY r.id
   FOR SHARE OF r;

-- name: insert_check_in
-- A scan at the door now ($1 registration, $2 event, $3 the scanner's token). No row: the
-- ticket was checked in already (the unique index check_ins_one_live_per_registration;
-- a concurrent first scan is waited for, then counted as the first).
WITH added AS (
    INSERT INTO check_ins (registration_id, event_id, scanned_at, source, scanned_by_token_id)
    VALUES ($1, $2, clock_timestamp(), 'scan', $3)
        ON CONFLICT (registration_id) WHERE undone_at IS NULL DO NOTHING
    RETURNING id, registration_id, event_id, scanned_at, recorded_at, source,
              scanned_by_token_id
)
SELECT a.id, a.registration_id, a.event_id, a.scanned_at, a.recorded_at, a.source,
       a.scanned_by_token_id, t.name AS token_name, t.user_id AS token_user_id
  FROM added a
  LEFT JOIN api_tokens t ON t.id = a.scanned_by_token_id;

-- name: record_offline_scan
-- A scan made offline at $3: the ticket's first scan, unless an earlier one is recorded
-- (the earliest scan wins, so uploading twice changes nothing). No row: an earlier or
-- equal scan is already the first.
WITH added AS (
    INSERT INTO check_ins (registration_id, event_id, scanned_at, source, scanned_by_token_id)
    VALUES ($1, $2, $3, 'offline', $4)
        ON CONFLICT (registration_id) WHERE undone_at IS NULL DO UPDATE
       SET scanned_at = excluded.scanned_at, source = excluded.source,
           scanned_by_token_id = excluded.scanned_by_token_id, recorded_at = clock_timestamp()
     WHERE check_ins.scanned_at > excluded.scanned_at
    RETURNING id, registration_id, event_id, scanned_at, recorded_at, source,
              scanned_by_token_id
)
SELECT a.id, a.registration_id, a.event_id, a.scanned_at, a.recorded_at, a.source,
       a.scanned_by_token_id, t.name AS token_name, t.user_id AS token_user_id
  FROM added a
  LEFT JOIN api_tokens t ON t.id = a.scanned_by_token_id;

-- name: live_check_in
-- Registration $1's live check-in with who scanned it, and whose ticket it is.
SELECT c.id, c.registration_id, c.event_id, c.scanned_at, c.recorded_at, c.source,
       c.scanned_by_token_id, t.name AS token_name, t.user_id AS token_user_id,
       u.name AS holder_name, r.user_id, e.organizer_id
  FROM check_ins c
  JOIN registrations r ON r.id = c.registration_id
  JOIN users u ON u.id = r.user_id
  JOIN events e ON e.id = c.event_id
  LEFT JOIN api_tokens t ON t.id = c.scanned_by_token_id
 WHERE c.registration_id = $1 AND c.undone_at IS NULL;

-- name: registration_for_ticket
-- A live registration (active or waiting) with its holder's name, its event (e_ prefix)
-- and when it was checked in (NULL: not yet).
SELECT r.id, r.user_id, r.event_id, r.status, u.name AS holder_name,
       e.title AS e_title, e.capacity AS e_capacity, e.available_seats AS e_available_seats,
       e.organizer_id AS e_organizer_id, e.created_at AS e_created_at,
       e.updated_at AS e_updated_at,
       (SELECT c.scanned_at FROM check_ins c
         WHERE c.registration_id = r.id AND c.undone_at IS NULL) AS checked_in_at
  FROM registrations r
  JOIN users u ON u.id = r.user_id
  JOIN events e ON e.id = r.event_id
 WHERE r.id = $1 AND r.status IN ('active', 'waitlisted');

-- name: registration_owners
-- Whose registration $1 is and who organizes its event, whatever its status.
SELECT r.user_id, r.event_id, e.organizer_id
  FROM registrations r
  JOIN events e ON e.id = r.event_id
 WHERE r.id = $1;

-- name: undo_check_in
-- Registration $1 is not checked in any more ($2: the token that undid it). The row stays,
-- as history. Returns the check-in undone; no row: there was none.
UPDATE check_ins
   SET undone_at = clock_timestamp(), undone_by_token_id = $2
 WHERE registration_id = $1 AND undone_at IS NULL
RETURNING id;

-- name: summary
-- One statement, so one snapshot: the checked-in are a subset of the registered.
SELECT (SELECT count(*) FROM registrations
         WHERE event_id = $1 AND status = 'active') AS registered,
       (SELECT count(*) FROM check_ins c
          JOIN registrations r ON r.id = c.registration_id
         WHERE c.event_id = $1 AND c.undone_at IS NULL AND r.status = 'active') AS checked_in,
       clock_timestamp() AS as_of;

-- name: revoked_since
-- Ids of event $1's registrations cancelled at or after $2 (NULL: ever), and the `since`
-- to ask with next: the clock minus $3 seconds, because cancelled_at is the cancelling
-- transaction's start and it may commit later than this read.
SELECT coalesce(array_agg(id ORDER BY id), ARRAY[]::bigint[]) AS ids,
       clock_timestamp() - make_interval(secs => $3) AS next_since
  FROM registrations
 WHERE event_id = $1 AND status = 'cancelled'
   AND ($2::timestamptz IS NULL OR cancelled_at >= $2);

-- name: insert_door_token
-- A door token for event $6, owned by user $1 (its maker): $2 the SHA-256 of its secret,
-- $3 the readable prefix, $4 a label, $5 days until it expires.
INSERT INTO api_tokens (user_id, secret_hash, prefix, name, expires_at, check_in_event_id)
VALUES ($1, $2, $3, $4, now() + make_interval(days => $5), $6)
RETURNING id, name, prefix, created_at, expires_at, last_used_at, revoked_at, check_in_event_id;

-- name: list_door_tokens
-- Keyset page of event $1's door tokens, whoever made them: ids after $2, at most $3 rows.
SELECT id, name, prefix, created_at, expires_at, last_used_at, revoked_at, check_in_event_id
  FROM api_tokens
 WHERE check_in_event_id = $1 AND id > $2
 ORDER BY id
 LIMIT $3;
