-- The operator console's ground (issue 28): who is an operator, and a record of every change an
-- operator makes.
--
-- 1. `operators`: accounts with the operator role. Granted and removed only from the server's
--    command line (`tally operator add|remove|list`); nothing the web serves writes it.
-- 2. `operator_audit`: one row per operator action, written in the same transaction as the
--    action's effect (so the two commit together or not at all): who, what, to whom, why, what
--    it was before and after. Append-only: a trigger refuses UPDATE, DELETE and TRUNCATE.
--    An operator's row outlives their account (no foreign key to users): the record stays.

CREATE TABLE operators (
    user_id    uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    granted_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE operator_audit (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    operator_id uuid NOT NULL,
    -- The operator's email then (the account may change its address or be deleted later).
    operator_email text NOT NULL,
    action      text NOT NULL CHECK (action IN ('grant_credits', 'take_credits', 'resync', 'retry_webhook',
                                                'retry_usage_event', 'revoke_api_key', 'resend_verification')),
    target_user uuid,
    reason      text NOT NULL CHECK (length(btrim(reason)) BETWEEN 3 AND 500),
    before      jsonb,
    after       jsonb,
    -- What makes a repeated submit of one form the same action (a double click applies once).
    idempotency_key text NOT NULL CONSTRAINT operator_audit_key UNIQUE
);
CREATE INDEX operator_audit_target_idx ON operator_audit (target_user, id DESC);
CREATE INDEX operator_audit_at_idx ON operator_audit (at DESC, id DESC);

CREATE FUNCTION operator_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'operator_audit is append-only (% refused)', TG_OP;
END $$;
CREATE TRIGGER operator_audit_no_change BEFORE UPDATE OR DELETE ON operator_audit
    FOR EACH STATEMENT EXECUTE FUNCTION operator_audit_append_only();
CREATE TRIGGER operator_audit_no_truncate BEFORE TRUNCATE ON operator_audit
    FOR EACH STATEMENT EXECUTE FUNCTION operator_audit_append_only();
