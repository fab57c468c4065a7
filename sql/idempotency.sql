-- name: lock_key
-- Serialize requests with the same key (scope $1, key $2) until this transaction ends: a
-- retry that arrives while the first is running waits here, then sees its stored answer.
SELECT pg_advisory_xact_lock(hashtextextended($1 || E'\n' || $2, 0));

-- name: find_key
-- The stored answer for a live key, if any.
SELECT fingerprint, status, location, body, revealed_token_hash
  FROM idempotency_keys
 WHERE scope = $1 AND key = $2 AND expires_at > now();

-- name: store_key
-- The answer of a write that succeeded, in the write's own transaction. An expired row
-- with the same key (not yet swept) is replaced.
INSERT INTO idempotency_keys
       (scope, key, fingerprint, status, location, body, revealed_token_hash, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8))
    ON CONFLICT (scope, key) DO UPDATE
   SET fingerprint = excluded.fingerprint, status = excluded.status,
       location = excluded.location, body = excluded.body,
       revealed_token_hash = excluded.revealed_token_hash,
       created_at = excluded.created_at, expires_at = excluded.expires_at
 WHERE idempotency_keys.expires_at <= now();

-- name: try_sweep_lock
-- One worker at a time sweeps; the others skip their turn (two-int4 advisory keys never
-- meet the one-bigint keys of lock_key).
SELECT pg_try_advisory_xact_lock(1701147251, 1);

-- name: delete_expired
-- At most $1 expired keys, oldest first.
DELETE FROM idempotency_keys
 WHERE (scope, key) IN (SELECT scope, key FROM idempotency_keys
                         WHERE expires_at <= now()
                         ORDER BY expires_at
                         LIMIT $1);
