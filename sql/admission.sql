-- name: lock_members
-- Group admission, before the event lock ($1 the members' users, $4 the event), in one
-- round trip; none of it needs the lock, so it runs while another group holds it:
-- * for the rest of the transaction, the statements' cached generic plans: PostgreSQL
--   would otherwise plan a statement that takes arrays afresh on every execution (its
--   custom plans, sized to the arrays at hand, look cheaper than the generic one, which
--   expects 10 elements each): 0.2 ms of the server's time a group, seen when the event's
--   lock statement took the keys;
-- * every member's user share-locked in id order (users before events, as everywhere; a
--   missing id is a user that does not exist or was deleted);
-- * each Idempotency-Key ($2 scopes, $3 keys, arrival order) held for this transaction if
--   free. A key held elsewhere is a request with that key still running: that member is
--   told so, and the group does not wait for it. Try-locks never wait, so taking them
--   beside the row locks cannot deadlock;
-- * the answers stored for the keys (`n` their 1-based index), with whether each has
--   expired (not yet swept): one primary-key probe per key. The LIMIT (the key is unique
--   anyway) keeps it a subquery: as a join, a plan cached while the table was nearly
--   empty hashes the keys and scans the whole table, and keeps doing so as it grows
--   (seen: 14 ms a group at 60,000 keys). This statement's snapshot is older than its
--   try-locks, so it can miss the answer of a key's previous holder that committed in
--   between; the key's primary key then refuses the INSERT, and the caller runs the group
--   again, with a snapshot that sees it;
-- * which of the users already hold a seat or a place in the event's queue, one probe of
--   the unique index per user (the LIMIT keeps a cached plan from filtering every
--   registration of the event instead: 1 ms a group at 5,000 registrations). Read before
--   the lock, this can miss a registration another transaction commits before this one
--   gets the lock (so could a read under it: a statement that waits for a row lock keeps
--   the snapshot it took before waiting). The unique index then refuses the INSERT, and
--   the caller runs the group again, likewise;
-- * an id for each member's registration, should it get a seat (a member refused or
--   queued leaves its id unused: a gap, as a rolled-back insert leaves), and the time the
--   group's registrations are made, by the database's clock (unless the event's window
--   opens while the group waits for the lock: see there): with these, a seat's answer
--   is known before the lock, and stored with its key while the lock is awaited
--   (lock_event_storing_answers). A place in the queue takes its id under the lock
--   instead (admit_group), because the queue is in id order;
-- * the event's free seats, read without its lock: how many members to expect a seat.
SELECT set_config('plan_cache_mode', 'force_generic_plan', true) AS plan_cache_mode,
       ARRAY(SELECT id FROM users
              WHERE id = ANY($1::bigint[]) AND deleted_at IS NULL
              ORDER BY id
                FOR SHARE) AS live,
       ARRAY(SELECT pg_try_advisory_xact_lock(hashtextextended(k.scope || E'\n' || k.key, 0))
               FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS k(scope, key, n)
              ORDER BY k.n) AS held,
       ARRAY(SELECT (k.n, i.fingerprint, i.status, i.location, i.body,
                     i.expires_at <= now())
               FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS k(scope, key, n)
              CROSS JOIN LATERAL (SELECT fingerprint, status, location, body, expires_at
                                    FROM idempotency_keys
                                   WHERE scope = k.scope AND key = k.key
                                   LIMIT 1) AS i) AS stored,
       ARRAY(SELECT u.id
               FROM unnest($1::bigint[]) AS u(id)
              CROSS JOIN LATERAL (SELECT FROM registrations r
                                   WHERE r.event_id = $4 AND r.user_id = u.id
                                     AND r.status IN ('active', 'waitlisted')
                                   LIMIT 1) AS live) AS registered,
       ARRAY(SELECT nextval('registrations_id_seq')
               FROM unnest($1::bigint[]) WITH ORDINALITY AS g(user_id, n)
              ORDER BY g.n) AS ids,
       clock_timestamp() AS made_at,
       (SELECT available_seats FROM events WHERE id = $4 AND deleted_at IS NULL) AS seats;

-- name: lock_event_for_group
-- Group admission: the event's row lock for the whole group, and in the same round trip
-- its seats and queue, and its window by the database's clock at this moment: a group
-- that waited for the lock across the opening instant is judged at that instant. Whether
-- the window opened after the group was made ($2, from lock_members): its registrations
-- are then made now (`locked_at`), never before the opening. Nothing else is read here:
-- after a wait for the lock, PostgreSQL evaluates the row's expressions again.
SELECT e.available_seats, e.waitlisted,
       e.registration_opens_at > clock_timestamp() AS not_open_yet,
       e.registration_closes_at <= clock_timestamp() AS closed,
       e.registration_opens_at > $2 AS opened_since,
       clock_timestamp() AS locked_at
  FROM events e
 WHERE e.id = $1 AND e.deleted_at IS NULL
   FOR UPDATE OF e;

-- name: lock_event_storing_answers
-- lock_event_for_group, storing on the way the answers of the members expected to get a
-- seat ($3 scopes, $4 keys, $5 fingerprints, $6 statuses, $7 Locations, $8 bodies; kept
-- $9 seconds) before it waits for the lock, not while holding it: one event's
-- registrations run one lock holder at a time, so what a holder does sets the hot
-- event's rate, and a key row costs about as much as the registration it answers for.
-- The `stored` count is an uncorrelated subquery (an InitPlan), evaluated as the event's
-- row is first read, before the lock is awaited, and not again after the wait; reading
-- it runs the INSERT then (tested: test_seat_answers_are_stored_before_the_lock_wait).
-- An answer that turns out wrong under the lock (the seat went to someone else, the
-- window closed, or opened since the group was made) is replaced or deleted before
-- COMMIT (unstore_answers).
WITH stored AS (
    INSERT INTO idempotency_keys (scope, key, fingerprint, status, location, body, expires_at)
    SELECT a.scope, a.key, a.fingerprint, a.status, a.location, a.body,
           now() + make_interval(secs => $9)
      FROM unnest($3::text[], $4::text[], $5::bytea[], $6::smallint[], $7::text[], $8::text[])
           AS a(scope, key, fingerprint, status, location, body)
    RETURNING 1
)
SELECT e.available_seats, e.waitlisted,
       e.registration_opens_at > clock_timestamp() AS not_open_yet,
       e.registration_closes_at <= clock_timestamp() AS closed,
       e.registration_opens_at > $2 AS opened_since,
       clock_timestamp() AS locked_at,
       (SELECT count(*) FROM stored) AS stored
  FROM events e
 WHERE e.id = $1 AND e.deleted_at IS NULL
   FOR UPDATE OF e;

-- name: unstore_answers
-- Answers stored before the lock (lock_event_storing_answers) that the lock proved wrong
-- ($1 scopes, $2 keys): their members were refused, or queued instead of seated.
DELETE FROM idempotency_keys
 WHERE (scope, key) IN (SELECT * FROM unnest($1::text[], $2::text[]));

-- name: admit_group
-- $2 seats taken and $3 places added to the queue, in one conditional UPDATE: the caller
-- chose $2 <= available_seats under the lock, and queues only once no seat is left (the
-- events_no_free_seat_while_queued CHECK holds it to that). Returns the queued places'
-- ids, drawn now, under the lock: an id drawn before it could be lower than one the
-- previous holder queued, and put this place ahead of that one. No row: the seats were
-- not there (never, under the lock; the backstop).
UPDATE events
   SET available_seats = available_seats - $2,
       waitlisted = waitlisted + $3
 WHERE id = $1 AND available_seats >= $2
RETURNING ARRAY(SELECT nextval('registrations_id_seq')
                  FROM generate_series(1, $3) AS g(n)
                 ORDER BY g.n) AS queue_ids;

-- name: delete_expired_keys
-- Keys of the group's members that expired but were not swept yet ($1 scopes, $2 keys),
-- deleted so insert_group can store them anew (rare: the sweep deletes expired keys every
-- IDEMPOTENCY_SWEEP_SECONDS).
DELETE FROM idempotency_keys
 WHERE (scope, key) IN (SELECT * FROM unnest($1::text[], $2::text[]))
   AND expires_at <= now();

-- name: insert_group
-- The group's registrations ($2 ids: a seat's from lock_members, a queued place's from
-- admit_group; $3 users, $4 statuses, all made at $5) and the answers of its members'
-- Idempotency-Keys ($6 scopes, $7 keys, $8 fingerprints, $9 statuses, $10 Locations,
-- $11 bodies; kept $12 seconds), in one statement: they commit together or not at all.
-- Only the keys not stored before the lock are here. No key should be there: its lock is
-- held, lock_members found none (see there for the one exception), delete_expired_keys
-- removed any that had expired, and unstore_answers any stored wrongly.
WITH registered AS (
    INSERT INTO registrations (id, event_id, user_id, status, created_at, updated_at)
    OVERRIDING SYSTEM VALUE
    SELECT m.id, $1, m.user_id, m.status, $5, $5
      FROM unnest($2::bigint[], $3::bigint[], $4::text[]) AS m(id, user_id, status)
)
INSERT INTO idempotency_keys (scope, key, fingerprint, status, location, body, expires_at)
SELECT a.scope, a.key, a.fingerprint, a.status, a.location, a.body,
       now() + make_interval(secs => $12)
  FROM unnest($6::text[], $7::text[], $8::bytea[], $9::smallint[], $10::text[], $11::text[])
       AS a(scope, key, fingerprint, status, location, body);
