-- Personal data is sealed in events under a data key per user
-- (commands::vault). The keys live here, each wrapped (AES-256-GCM) by
-- AGORA_DATA_KEY, which is never stored in the database. Erasure destroys a
-- user's key (wrapped_key NULL, erased_at set) and keeps the row as a
-- tombstone, so no new key is ever made for an erased user.
--
-- A schema of its own, so an operator can back it up apart from the rest
-- (or not at all): `pg_dump --exclude-schema=agora_keys` (see README).
-- Numbered 0013, after 0012: sqlx applies by version, and a 0011 added
-- after 0012 was applied would be out of order on existing databases.
CREATE SCHEMA IF NOT EXISTS agora_keys;

CREATE TABLE IF NOT EXISTS agora_keys.data_keys (
    user_id     uuid        PRIMARY KEY,
    wrapped_key bytea,
    created_at  timestamptz NOT NULL DEFAULT now(),
    erased_at   timestamptz,
    CHECK ((wrapped_key IS NULL) = (erased_at IS NOT NULL))
);

-- The read model keeps the sealed strings; an erased user has neither.
-- `email_lower` held an email in clear for `GET /users?email=`, which now
-- finds the user by its keyed-hash claim in unique_claims.
DROP INDEX IF EXISTS rm_users_email;
ALTER TABLE rm_users DROP COLUMN email_lower;
ALTER TABLE rm_users ALTER COLUMN email DROP NOT NULL;
ALTER TABLE rm_users ALTER COLUMN name DROP NOT NULL;

-- Users, orders and payments are no longer snapshotted (a snapshot of their
-- loaded state would hold personal data in clear): drop the old ones.
DELETE FROM aggregate_snapshots WHERE aggregate_type IN ('user', 'order', 'payment');

-- An erasure ends the user's sign-ins too.
ALTER TABLE sign_ins DROP CONSTRAINT IF EXISTS sign_ins_revoked_reason_check;
ALTER TABLE sign_ins ADD CONSTRAINT sign_ins_revoked_reason_check
    CHECK (revoked_reason IN ('logout', 'reuse', 'password', 'deactivated', 'erased'));
