-- Users: attendees and organizers. Rows are soft-deleted (deleted_at) so history stays
-- readable; an email is unique only among live users, case-insensitively.
CREATE TABLE users (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text        NOT NULL,
    email       text        NOT NULL,
    role        text        NOT NULL DEFAULT 'attendee',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz,
    CONSTRAINT users_name_not_blank CHECK (btrim(name) <> '' AND char_length(name) <= 255),
    CONSTRAINT users_email_shape CHECK (email ~ '^[^@[:space:]]+@[^@[:space:]]+$'
                                        AND char_length(email) <= 255),
    CONSTRAINT users_role_known CHECK (role IN ('attendee', 'organizer'))
);

CREATE UNIQUE INDEX users_live_email_key ON users (lower(email)) WHERE deleted_at IS NULL;
