-- name: drop_database
-- The benchmark's own database, recreated on every run so runs do not inherit rows.
DROP DATABASE IF EXISTS eventreg_bench WITH (FORCE);

-- name: create_database
CREATE DATABASE eventreg_bench;

-- name: insert_organizer
INSERT INTO users (name, email, role)
VALUES ('Bench organizer', $1, 'organizer')
RETURNING id;

-- name: insert_attendees
-- $2 attendees whose emails carry the run token $1; returns their ids in order.
INSERT INTO users (name, email)
SELECT 'Bench user ' || g, 'bench-' || $1::text || '-' || g || '@bench.example'
  FROM generate_series(1, $2::int) AS g
RETURNING id;

-- name: insert_tokens
-- One token per user: user $1[i] gets the secret whose SHA-256 is $2[i] and whose readable
-- prefix is $3[i] (the secrets are made in Python, as eventreg.db.tokens makes them).
INSERT INTO api_tokens (user_id, secret_hash, prefix, name)
SELECT user_id, secret_hash, prefix, 'bench'
  FROM unnest($1::bigint[], $2::bytea[], $3::text[]) AS t (user_id, secret_hash, prefix);

-- name: insert_events
-- $3 events titled $1 <n>, each with capacity $2, all organized by $4.
INSERT INTO events (title, capacity, available_seats, organizer_id)
SELECT $1::text || ' ' || g, $2::int, $2::int, $4::bigint
  FROM generate_series(1, $3::int) AS g
RETURNING id;

-- name: occupancy
-- Seats against active registrations, per event, for the events in $1.
SELECT event_id, capacity, available_seats, active_registrations, consistent
  FROM event_occupancy
 WHERE event_id = ANY($1::bigint[])
 ORDER BY event_id;

-- name: inconsistent_events
-- Events whose seat counter disagrees with their active registrations (must be 0).
SELECT count(*) FROM event_occupancy WHERE NOT consistent;

-- name: analyze
-- Fresh tables: give the planner real statistics before anything is measured, and set the
-- seeded rows' hint bits and visibility map, as autovacuum would in time, so that the
-- first scenario to read them does not pay for it.
VACUUM (ANALYZE) users, api_tokens, events, registrations;

-- name: analyze_seed
-- `analyze` for the seed, which has no registrations yet. An empty table that was vacuumed
-- is known to be empty: a generic plan made from that (a group's probe of registrations,
-- cached per connection) scans the whole table rather than its unique index, and keeps
-- doing so as the table grows, until autovacuum analyzes it (seen: 7,148 such scans in the
-- first 13 s of `hot`). A table never vacuumed gets the planner's small-table guess, which
-- picks the index, as it does on a freshly migrated database.
VACUUM (ANALYZE) users, api_tokens, events;

-- name: group_sizes
-- How many registrations for the events in $1 each transaction inserted: a row's xmin is
-- the id of the transaction that inserted it (cast to text, since xid has no ordering).
SELECT count(*)::int AS size
  FROM registrations
 WHERE event_id = ANY($1::bigint[])
 GROUP BY xmin::text;

-- name: seat_users
-- Issue 9: users $2 take seats at event $1 (a full event of tickets to check in); returns
-- the registration ids in user order.
WITH seats AS (
    UPDATE events SET available_seats = available_seats - cardinality($2::bigint[])
     WHERE id = $1
)
INSERT INTO registrations (event_id, user_id)
SELECT $1, u FROM unnest($2::bigint[]) WITH ORDINALITY AS t(u, n)
 ORDER BY n
RETURNING id;

-- name: check_in_tally
-- Issue 9: live check-ins at the events $1, and tickets checked in more than once (0).
SELECT count(*) AS live,
       count(*) - count(DISTINCT registration_id) AS doubled
  FROM check_ins
 WHERE event_id = ANY($1::bigint[]) AND undone_at IS NULL;

-- name: transactions
-- Transactions this server has run in the benchmark's database (on a standby: the reads it
-- served), to show that a replica scenario was answered by the replica.
SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'eventreg_bench';

-- name: has_event
-- Whether this server (the standby) has the event yet.
SELECT EXISTS (SELECT 1 FROM events WHERE id = $1);

-- name: busy_backends
-- What else the server is doing: autovacuum workers, and clients in mid-statement (the
-- API's connections sit idle between runs). The benchmark waits for none before a run.
SELECT count(*)
  FROM pg_stat_activity
 WHERE pid <> pg_backend_pid()
   AND (backend_type = 'autovacuum worker'
        OR (backend_type = 'client backend' AND state = 'active'));
