-- depends: 0002.events
-- Registrations are never deleted: cancelling flips status to 'cancelled' exactly once.
-- Only one ACTIVE registration per (event, user), so a user may register again after
-- cancelling.
CREATE TABLE registrations (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     bigint      NOT NULL
                 CONSTRAINT registrations_event_id_fkey REFERENCES events (id),
    user_id      bigint      NOT NULL
                 CONSTRAINT registrations_user_id_fkey REFERENCES users (id),
    status       text        NOT NULL DEFAULT 'active',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    cancelled_at timestamptz,
    CONSTRAINT registrations_status_known CHECK (status IN ('active', 'cancelled')),
    CONSTRAINT registrations_cancelled_at_iff_cancelled
        CHECK ((status = 'cancelled') = (cancelled_at IS NOT NULL))
);

CREATE UNIQUE INDEX registrations_one_active_per_user
    ON registrations (event_id, user_id) WHERE status = 'active';
CREATE INDEX registrations_active_by_user_idx
    ON registrations (user_id, id) WHERE status = 'active';
