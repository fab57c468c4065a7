DROP VIEW event_occupancy;
CREATE VIEW event_occupancy AS
SELECT e.id                                      AS event_id,
       e.title,
       e.capacity,
       e.available_seats,
       count(r.id)                               AS active_registrations,
       e.capacity = e.available_seats + count(r.id) AS consistent,
       e.deleted_at IS NOT NULL                  AS deleted
  FROM events e
  LEFT JOIN registrations r ON r.event_id = e.id AND r.status = 'active'
 GROUP BY e.id;
UPDATE registrations SET status = 'cancelled', cancelled_at = now() WHERE status = 'waitlisted';
DROP INDEX registrations_queue_idx;
DROP INDEX registrations_one_live_per_user;
CREATE UNIQUE INDEX registrations_one_active_per_user
    ON registrations (event_id, user_id) WHERE status = 'active';
ALTER TABLE registrations
    DROP CONSTRAINT registrations_promotion_recorded,
    DROP CONSTRAINT registrations_status_known,
    ADD CONSTRAINT registrations_status_known CHECK (status IN ('active', 'cancelled')),
    DROP COLUMN promoted_from,
    DROP COLUMN promoted_at;
ALTER TABLE events
    DROP CONSTRAINT events_window_in_order,
    DROP CONSTRAINT events_no_free_seat_while_queued,
    DROP CONSTRAINT events_waitlisted_not_negative,
    DROP COLUMN cancellation_closes_at,
    DROP COLUMN registration_closes_at,
    DROP COLUMN registration_opens_at,
    DROP COLUMN waitlisted;
