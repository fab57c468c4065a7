-- name: wal_position
-- On the primary: how far its write-ahead log is written, in bytes from the start. Every
-- transaction acknowledged before this was asked ends at or before it (synchronous_commit).
SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint AS position;

-- name: replay_position
-- On the replica: whether it is still a standby (a promoted one no longer follows our
-- primary), and how far it has replayed the primary's log, in the same bytes.
SELECT pg_is_in_recovery() AS standby,
       pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint AS replayed;
