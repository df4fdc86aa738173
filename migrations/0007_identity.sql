-- Identity on the write side: what proves who a caller is. None of it is an
-- event, so none of it reaches JetStream, a read model or a replay. Every row
-- is keyed by a user id (or an API key's id), so a user's credentials and
-- tokens can be deleted with the user; none holds an email, a name or any
-- other personal data.

-- A user's password, as an Argon2id PHC string (algorithm, parameters, salt
-- and hash). `UserPasswordChanged` records that it changed; this row is the
-- only place the hash lives.
CREATE TABLE credentials (
    user_id       uuid PRIMARY KEY,
    password_hash text        NOT NULL,
    changed_at    timestamptz NOT NULL DEFAULT now()
);

-- One sign-in: a login and every refresh token rotated from it (RFC 9700's
-- token family). Access tokens name it in their `sid` claim, so revoking it
-- refuses them too.
CREATE TABLE sign_ins (
    id             uuid PRIMARY KEY,
    user_id        uuid        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz,
    revoked_reason text CHECK (revoked_reason IN ('logout', 'reuse', 'password', 'deactivated'))
);
CREATE INDEX sign_ins_user ON sign_ins (user_id);
CREATE INDEX sign_ins_revoked ON sign_ins (user_id, revoked_at) WHERE revoked_at IS NOT NULL;

-- Refresh tokens, by the SHA-256 of their 256 random bits: a dump of this
-- table signs nobody in. Single use: `used_at` is set when one is exchanged,
-- and presenting it again revokes its sign-in.
CREATE TABLE refresh_tokens (
    token_hash bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    sign_in_id uuid        NOT NULL REFERENCES sign_ins (id) ON DELETE CASCADE,
    user_id    uuid        NOT NULL,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX refresh_tokens_sign_in ON refresh_tokens (sign_in_id);
CREATE INDEX refresh_tokens_expiry ON refresh_tokens (expires_at);

-- Failed logins per email, shared by every API process, for the throttle of
-- 5 failures in 15 minutes. `email_key` is a keyed hash of the normalized
-- email, never the email. Rows older than the window are swept as new
-- failures arrive.
CREATE TABLE login_failures (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email_key bytea       NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_key ON login_failures (email_key, failed_at);
CREATE INDEX login_failures_age ON login_failures (failed_at);

-- API keys, by the SHA-256 of the key: the key itself is shown once, in the
-- answer that creates it. A deleted key keeps its row (revoked_at set) so
-- events that name it as their actor still say what it was.
CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    name         text        NOT NULL,
    role         text        NOT NULL CHECK (role IN ('admin', 'catalog')),
    key_hash     bytea       NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
    created_by   text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_keys_live ON api_keys (created_at, id) WHERE revoked_at IS NULL;
