-- Accounts, server-side sessions and sign-in attempts.

CREATE TABLE users (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email         text NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
-- One account per address, whatever its case. The name is matched in code (users.rs).
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));

-- A session row per signed-in browser. The cookie holds a random token; only its keyed hash
-- (HMAC-SHA256 under SESSION_SECRET) is stored, so this table alone opens no session.
CREATE TABLE sessions (
    token_hash  bytea PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);

-- Failed sign-ins, counted per email and per client address to rate-limit guessing.
CREATE TABLE login_failures (
    id               bigserial PRIMARY KEY,
    email_normalized text NOT NULL,
    client_ip        text,
    failed_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_email_idx ON login_failures (email_normalized, failed_at);
CREATE INDEX login_failures_ip_idx ON login_failures (client_ip, failed_at);
