-- Accounts a person can recover: verified email addresses, single-use expiring tokens for
-- verification and password reset (only their SHA-256 is stored), and account mail sent
-- through an outbox so a slow or failing mail server neither blocks a request nor loses a mail.

ALTER TABLE users ADD COLUMN email_verified_at timestamptz;
-- Accounts from before verification existed received their free credits at sign-up.
UPDATE users SET email_verified_at = created_at WHERE email_verified_at IS NULL;

CREATE TABLE account_tokens (
    -- SHA-256 of the token in the link; the token itself is never stored.
    token_hash bytea PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose    text NOT NULL CHECK (purpose IN ('verify_email', 'reset_password')),
    -- The address the link was sent to: verification confirms exactly this one.
    email      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX account_tokens_user_idx ON account_tokens (user_id, purpose);
CREATE INDEX account_tokens_expires_idx ON account_tokens (expires_at);

CREATE TABLE outgoing_mail (
    id              bigserial PRIMARY KEY,
    user_id         uuid REFERENCES users (id),
    kind            text NOT NULL,
    to_address      text NOT NULL,
    subject         text NOT NULL,
    -- Erased once sent: it may carry a one-time link.
    body_text       text,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz
);
CREATE INDEX outgoing_mail_due_idx ON outgoing_mail (next_attempt_at) WHERE status = 'pending';
CREATE INDEX outgoing_mail_user_idx ON outgoing_mail (user_id);

-- Local mode without SMTP_URL: mail is delivered here and shown at /dev/mailbox (local mode
-- only, behind the stand-in's controls token).
CREATE TABLE dev_mailbox (
    id          bigserial PRIMARY KEY,
    to_address  text NOT NULL,
    from_address text NOT NULL,
    subject     text NOT NULL,
    body_text   text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
