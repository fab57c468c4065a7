DROP TABLE api_tokens;
UPDATE users SET role = 'organizer' WHERE role = 'admin';
ALTER TABLE users DROP CONSTRAINT users_role_known;
ALTER TABLE users ADD CONSTRAINT users_role_known CHECK (role IN ('attendee', 'organizer'));
