ALTER TABLE events DROP CONSTRAINT events_title_visible;
ALTER TABLE users DROP CONSTRAINT users_name_visible;
