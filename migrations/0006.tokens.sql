-- depends: 0005.visible_text
-- Identity: an admin role, and bearer tokens. A token is stored only as the SHA-256 of its
-- secret; the secret is shown once, when it is made. A token dies when revoked, when it
-- expires, or when its user is deleted (deleting a user also revokes its tokens).
ALTER TABLE users DROP CONSTRAINT users_role_known;
ALTER TABLE users ADD CONSTRAINT users_role_known
    CHECK (role IN ('attendee', 'organizer', 'admin'));

CREATE TABLE api_tokens (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      bigint      NOT NULL
                 CONSTRAINT api_tokens_user_id_fkey REFERENCES users (id),
    name         text        NOT NULL DEFAULT '',
    secret_hash  bytea       NOT NULL,
    prefix       text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz,
    CONSTRAINT api_tokens_secret_hash_key UNIQUE (secret_hash),
    CONSTRAINT api_tokens_hash_is_sha256 CHECK (octet_length(secret_hash) = 32),
    CONSTRAINT api_tokens_name_length CHECK (char_length(name) <= 100),
    CONSTRAINT api_tokens_expires_after_creation CHECK (expires_at > created_at)
);

CREATE INDEX api_tokens_by_user_idx ON api_tokens (user_id, id);
