-- name: terminate_backend
-- Test hook only: terminate backend $1 and wait up to $2 ms for it to exit.
SELECT pg_terminate_backend($1, $2::bigint);
