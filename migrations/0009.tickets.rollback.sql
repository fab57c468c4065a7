DROP TABLE check_ins;
DROP FUNCTION check_in_of_active_registration();
ALTER TABLE api_tokens DROP COLUMN check_in_event_id;
DROP INDEX registrations_cancelled_by_event_idx;
ALTER TABLE registrations DROP CONSTRAINT registrations_id_event_key;
