-- depends: 0006.tokens
-- Idempotency keys: the answer to a write, stored in the transaction that made the write,
-- so a retry with the same key gets the same answer and causes no second effect. Only
-- successes are stored (a failure changed nothing, so a retry may run again). A secret an
-- answer carried (a new token) is not kept: only its hash, to replace it on a replay.
CREATE TABLE idempotency_keys (
    scope               text        NOT NULL,
    key                 text        NOT NULL,
    fingerprint         bytea       NOT NULL,
    status              smallint    NOT NULL,
    location            text,
    body                text        NOT NULL,
    revealed_token_hash bytea,
    created_at          timestamptz NOT NULL DEFAULT now(),
    expires_at          timestamptz NOT NULL,
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (scope, key),
    CONSTRAINT idempotency_keys_key_printable CHECK (key ~ '^[\x20-\x7e]{1,255}$'),
    CONSTRAINT idempotency_keys_success_only CHECK (status BETWEEN 200 AND 299),
    CONSTRAINT idempotency_keys_fingerprint_sha256 CHECK (octet_length(fingerprint) = 32),
    CONSTRAINT idempotency_keys_expire_later CHECK (expires_at > created_at)
);

CREATE INDEX idempotency_keys_expiry_idx ON idempotency_keys (expires_at);
