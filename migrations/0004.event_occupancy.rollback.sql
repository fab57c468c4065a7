DROP VIEW event_occupancy;
