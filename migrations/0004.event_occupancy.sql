-- depends: 0003.registrations
-- One row per event: the seat counter next to the count of active registrations, and
-- whether they agree (capacity = available_seats + active_registrations).
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
