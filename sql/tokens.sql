-- name: insert_token
-- A new token for user $1: $2 is the SHA-256 of its secret, $3 the secret's readable
-- prefix, $4 a label, $5 days until it expires (NULL: never).
INSERT INTO api_tokens (user_id, secret_hash, prefix, name, expires_at)
VALUES ($1, $2, $3, $4, now() + make_interval(days => $5))
RETURNING id, name, prefix, created_at, expires_at, last_used_at, revoked_at;

-- name: authenticate
-- The live token with this hash and its live user. A read: the caller records the use
-- later, in bulk (touch_tokens), never on the request's path. check_in_event_id: a door
-- token's event (issue 9).
SELECT t.id, t.user_id, u.role, t.expires_at, t.check_in_event_id
  FROM api_tokens t
  JOIN users u ON u.id = t.user_id AND u.deleted_at IS NULL
 WHERE t.secret_hash = $1
   AND t.revoked_at IS NULL
   AND (t.expires_at IS NULL OR t.expires_at > now());

-- name: touch_tokens
-- Record that tokens $1 were used, at most once a minute each. One statement, whose commit
-- need not wait for the WAL flush (set_config(…, true) holds for this transaction only):
-- losing a last-use time in a crash costs nothing.
UPDATE api_tokens
   SET last_used_at = now()
  FROM (SELECT set_config('synchronous_commit', 'off', true)) AS relaxed
 WHERE id = ANY($1::bigint[])
   AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute');

-- name: list_tokens
-- Keyset page of user $1's tokens (never their secrets): ids after $2, at most $3 rows.
-- check_in_event_id: a door token's event (issue 9).
SELECT id, name, prefix, created_at, expires_at, last_used_at, revoked_at, check_in_event_id
  FROM api_tokens
 WHERE user_id = $1 AND id > $2
 ORDER BY id
 LIMIT $3;

-- name: revoke_token
-- Revoke token $1 if user $2 owns it (or $2 is NULL: an admin may revoke any). Revoking
-- twice keeps the first time. Returns the owner, or no row when there is no such token.
UPDATE api_tokens
   SET revoked_at = coalesce(revoked_at, now())
 WHERE id = $1 AND ($2::bigint IS NULL OR user_id = $2)
RETURNING user_id;

-- name: revoke_user_tokens
-- Every live token of user $1: run in the transaction that deletes the user.
UPDATE api_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL;

-- name: replace_token
-- Revoke the token with hash $1 and give its user a new one ($2: its hash, $3: prefix)
-- with the same name and expiry. For replaying an answer that carried the old secret; no
-- row when the old token has expired or its user is gone. A door token's replacement is
-- a door token of the same event (issue 9), never an ordinary token.
WITH old AS (
    UPDATE api_tokens t
       SET revoked_at = coalesce(t.revoked_at, now())
      FROM users u
     WHERE t.secret_hash = $1 AND u.id = t.user_id AND u.deleted_at IS NULL
       AND (t.expires_at IS NULL OR t.expires_at > now())
    RETURNING t.user_id, t.name, t.expires_at, t.check_in_event_id
)
INSERT INTO api_tokens (user_id, secret_hash, prefix, name, expires_at, check_in_event_id)
SELECT user_id, $2, $3, name, expires_at, check_in_event_id FROM old
RETURNING id, name, prefix, created_at, expires_at, last_used_at, revoked_at, check_in_event_id;
