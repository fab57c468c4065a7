-- name: share_lock_users
-- Group admission: every member's user, share-locked in id order (users before events, as
-- everywhere); a missing id is a user that does not exist or was deleted.
SELECT id
  FROM users
 WHERE id = ANY($1::bigint[]) AND deleted_at IS NULL
 ORDER BY id
   FOR SHARE;

-- name: lock_event_for_group
-- Group admission: the event's row lock for the whole group, with its seats, its queue,
-- its window by the database's clock at this moment, and which of the users $2 already
-- hold a seat or a place in its queue (one round trip while the lock is held).
SELECT e.available_seats, e.waitlisted,
       e.registration_opens_at > clock_timestamp() AS not_open_yet,
       e.registration_closes_at <= clock_timestamp() AS closed,
       ARRAY(SELECT r.user_id FROM registrations r
              WHERE r.event_id = e.id AND r.user_id = ANY($2::bigint[])
                AND r.status IN ('active', 'waitlisted')) AS live_users
  FROM events e
 WHERE e.id = $1 AND e.deleted_at IS NULL
   FOR UPDATE OF e;

-- name: admit_group
-- $2 seats taken and $3 places added to the queue, in one conditional UPDATE: the caller
-- chose $2 <= available_seats under the lock, and queues only once no seat is left (the
-- events_no_free_seat_while_queued CHECK holds it to that). No row: the seats were not
-- there (never, under the lock; the backstop).
UPDATE events
   SET available_seats = available_seats - $2,
       waitlisted = waitlisted + $3
 WHERE id = $1 AND available_seats >= $2
RETURNING available_seats;

-- name: insert_group
-- The group's registrations in one statement, in arrival order ($2 users, $3 statuses),
-- stamped by the clock under the lock.
INSERT INTO registrations (event_id, user_id, status, created_at, updated_at)
SELECT $1, m.user_id, m.status, clock_timestamp(), clock_timestamp()
  FROM unnest($2::bigint[], $3::text[]) WITH ORDINALITY AS m(user_id, status, n)
 ORDER BY m.n
RETURNING id, user_id, event_id, status, created_at, updated_at, promoted_at, promoted_from;

-- name: try_lock_keys
-- The Idempotency-Keys of the group's members ($1 scopes, $2 keys), each held for this
-- transaction if free. A key held elsewhere is a request with that key still running:
-- that member is told so, and the group does not wait for it.
SELECT pg_try_advisory_xact_lock(hashtextextended(k.scope || E'\n' || k.key, 0)) AS held
  FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(scope, key, n)
 ORDER BY k.n;

-- name: find_keys
-- The stored answers among the members' keys ($1 scopes, $2 keys) that are still live: one
-- primary-key lookup per key. The LIMIT (the key is unique anyway) keeps the lookup a
-- subquery: as a join, a plan cached while the table was nearly empty hashes the keys and
-- scans the whole table, and keeps doing so as the table grows (seen: 14 ms at 60,000 keys).
SELECT k.scope, k.key, i.fingerprint, i.status, i.location, i.body
  FROM unnest($1::text[], $2::text[]) AS k(scope, key)
 CROSS JOIN LATERAL (SELECT fingerprint, status, location, body
                       FROM idempotency_keys
                      WHERE scope = k.scope AND key = k.key AND expires_at > now()
                      LIMIT 1) AS i;

-- name: store_keys
-- The answers of the members that succeeded, in the group's transaction ($7 the seconds to
-- keep them); an expired row with the same key is replaced.
INSERT INTO idempotency_keys (scope, key, fingerprint, status, location, body, expires_at)
SELECT a.scope, a.key, a.fingerprint, a.status, a.location, a.body,
       now() + make_interval(secs => $7)
  FROM unnest($1::text[], $2::text[], $3::bytea[], $4::smallint[], $5::text[], $6::text[])
       AS a(scope, key, fingerprint, status, location, body)
    ON CONFLICT (scope, key) DO UPDATE
   SET fingerprint = excluded.fingerprint, status = excluded.status,
       location = excluded.location, body = excluded.body, revealed_token_hash = NULL,
       created_at = excluded.created_at, expires_at = excluded.expires_at
 WHERE idempotency_keys.expires_at <= now();
