-- API keys for the metered API. The key is shown once at creation; only its SHA-256 is kept
-- (keys are 256 random bits, so a fast hash is enough to make the table useless to a thief).
CREATE TABLE api_keys (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 60),
    -- The first characters of the key, to tell keys apart in the settings page.
    prefix       text NOT NULL,
    key_hash     bytea NOT NULL CONSTRAINT api_keys_key_hash UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_keys_user_idx ON api_keys (user_id, created_at DESC);

-- A one-time message for the next page this session renders: a new API key created by a
-- plain (JavaScript-off) form post is shown this way, once, then cleared.
ALTER TABLE sessions ADD COLUMN flash jsonb;
