-- depends: 0001.users
-- Events: available_seats is the seat counter that registration decrements under a row
-- lock; the CHECK makes overbooking impossible even if the application had a bug.
CREATE TABLE events (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    title           text        NOT NULL,
    capacity        integer     NOT NULL,
    available_seats integer     NOT NULL,
    organizer_id    bigint      NOT NULL
                    CONSTRAINT events_organizer_id_fkey REFERENCES users (id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz,
    CONSTRAINT events_title_not_blank CHECK (btrim(title) <> '' AND char_length(title) <= 255),
    CONSTRAINT events_capacity_positive CHECK (capacity BETWEEN 1 AND 1000000),
    CONSTRAINT events_seats_within_capacity CHECK (available_seats BETWEEN 0 AND capacity)
);

CREATE INDEX events_live_organizer_idx ON events (organizer_id, id) WHERE deleted_at IS NULL;
