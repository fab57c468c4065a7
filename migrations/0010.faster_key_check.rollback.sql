ALTER TABLE idempotency_keys
    DROP CONSTRAINT idempotency_keys_key_printable,
    ADD CONSTRAINT idempotency_keys_key_printable CHECK (key ~ '^[\x20-\x7e]{1,255}$');
