-- depends: 0008.waitlist
-- Tickets and check-in (issue 9).
--
-- A ticket code is computed (signed) from a registration's id and event id, never stored:
-- Ed25519 signatures are deterministic, so the same key always gives the same code.
-- What is stored is each check-in: one live row per registration at most (undoing one
-- keeps it, with undone_at set), tied to the registration's own event by a composite
-- foreign key, and inserted only while the registration is active (or, for a scan made
-- offline, was still active when scanned): the trigger below holds every writer to it.

-- The target of check_ins' composite foreign key: (id, event_id) of a registration.
ALTER TABLE registrations
    ADD CONSTRAINT registrations_id_event_key UNIQUE (id, event_id);
-- The revoked list of an event: its cancelled registrations, by time.
CREATE INDEX registrations_cancelled_by_event_idx
    ON registrations (event_id, cancelled_at) WHERE status = 'cancelled';

-- A door token: a token that may only check tickets in at one event (NULL: an ordinary
-- token). It belongs to the organizer or admin who made it.
ALTER TABLE api_tokens
    ADD COLUMN check_in_event_id bigint
        CONSTRAINT api_tokens_check_in_event_id_fkey REFERENCES events (id);

CREATE TABLE check_ins (
    id                  bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    registration_id     bigint      NOT NULL,
    event_id            bigint      NOT NULL,
    -- When the ticket was read: the server's clock for a live scan, the scanner's for one
    -- uploaded later (source 'offline').
    scanned_at          timestamptz NOT NULL,
    recorded_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    source              text        NOT NULL,
    -- Who scanned: the token used (its user and name are on it); NULL with EVENTREG_AUTH=open.
    -- No foreign key to users or events on purpose: inserting a check-in then takes no key
    -- lock on rows that user and event deletion lock FOR UPDATE (no deadlock with them).
    scanned_by_token_id bigint
                        CONSTRAINT check_ins_scanned_by_token_id_fkey REFERENCES api_tokens (id),
    undone_at           timestamptz,
    undone_by_token_id  bigint
                        CONSTRAINT check_ins_undone_by_token_id_fkey REFERENCES api_tokens (id),
    CONSTRAINT check_ins_registration_fkey FOREIGN KEY (registration_id, event_id)
        REFERENCES registrations (id, event_id),
    CONSTRAINT check_ins_source_known CHECK (source IN ('scan', 'offline')),
    CONSTRAINT check_ins_undone_by_only_when_undone
        CHECK (undone_at IS NOT NULL OR undone_by_token_id IS NULL)
);

-- The rule itself: at most one live check-in per ticket, whatever the application does.
CREATE UNIQUE INDEX check_ins_one_live_per_registration
    ON check_ins (registration_id) WHERE undone_at IS NULL;
CREATE INDEX check_ins_live_by_event_idx
    ON check_ins (event_id, registration_id) WHERE undone_at IS NULL;

-- Only a registration that holds its seat can be checked in; a scan made offline counts
-- if the registration was cancelled only after it. The row is share-locked, so a
-- concurrent cancellation waits for this transaction (and a check-in waits for one in
-- progress, then sees it).
CREATE FUNCTION check_in_of_active_registration() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    found_status text;
    found_cancelled_at timestamptz;
BEGIN
    SELECT status, cancelled_at INTO found_status, found_cancelled_at
      FROM registrations WHERE id = NEW.registration_id FOR SHARE;
    IF found_status = 'active'
       OR (found_status = 'cancelled' AND found_cancelled_at > NEW.scanned_at) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'registration % is % at the scan time', NEW.registration_id, found_status
        USING ERRCODE = 'check_violation', CONSTRAINT = 'check_ins_of_active_registration';
END;
$$;

CREATE TRIGGER check_ins_of_active_registration
    BEFORE INSERT OR UPDATE OF scanned_at, registration_id ON check_ins
    FOR EACH ROW EXECUTE FUNCTION check_in_of_active_registration();
