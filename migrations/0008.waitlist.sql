-- depends: 0007.idempotency
-- The waitlist and registration windows.
--
-- A registration may wait for a seat (status 'waitlisted'); the queue is in id order, and
-- events.waitlisted counts it, kept under the event's row lock like available_seats. The
-- database itself refuses a free seat while someone waits
-- (events_no_free_seat_while_queued), so every path that frees a seat must promote in the
-- same statement order: counters first, then the promoted rows.
ALTER TABLE events
    ADD COLUMN waitlisted integer NOT NULL DEFAULT 0,
    ADD COLUMN registration_opens_at timestamptz,
    ADD COLUMN registration_closes_at timestamptz,
    ADD COLUMN cancellation_closes_at timestamptz,
    ADD CONSTRAINT events_waitlisted_not_negative CHECK (waitlisted >= 0),
    ADD CONSTRAINT events_no_free_seat_while_queued CHECK (available_seats = 0 OR waitlisted = 0),
    ADD CONSTRAINT events_window_in_order
        CHECK (registration_opens_at < registration_closes_at);

ALTER TABLE registrations
    ADD COLUMN promoted_at timestamptz,
    ADD COLUMN promoted_from integer,
    DROP CONSTRAINT registrations_status_known,
    ADD CONSTRAINT registrations_status_known
        CHECK (status IN ('active', 'waitlisted', 'cancelled')),
    ADD CONSTRAINT registrations_promotion_recorded
        CHECK ((promoted_at IS NULL) = (promoted_from IS NULL) AND promoted_from >= 1);

-- One live entry (holding a seat or waiting for one) per user and event.
DROP INDEX registrations_one_active_per_user;
CREATE UNIQUE INDEX registrations_one_live_per_user
    ON registrations (event_id, user_id) WHERE status IN ('active', 'waitlisted');
CREATE INDEX registrations_queue_idx
    ON registrations (event_id, id) WHERE status = 'waitlisted';

-- Occupancy now also says whether the queue counter agrees with the queue.
DROP VIEW event_occupancy;
CREATE VIEW event_occupancy AS
SELECT e.id                                            AS event_id,
       e.title,
       e.capacity,
       e.available_seats,
       count(r.id) FILTER (WHERE r.status = 'active')     AS active_registrations,
       e.waitlisted,
       count(r.id) FILTER (WHERE r.status = 'waitlisted') AS queued_registrations,
       e.capacity = e.available_seats + count(r.id) FILTER (WHERE r.status = 'active')
         AND e.waitlisted = count(r.id) FILTER (WHERE r.status = 'waitlisted')
                                                       AS consistent,
       e.deleted_at IS NOT NULL                        AS deleted
  FROM events e
  LEFT JOIN registrations r ON r.event_id = e.id AND r.status IN ('active', 'waitlisted')
 GROUP BY e.id;
