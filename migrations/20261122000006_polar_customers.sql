-- Each user's Polar customer (external_id = users.id) and a short-lived cache of its Customer
-- State. Polar stays the truth: the cache only spares a round trip and carries the last known
-- state through an outage (shown as such).
CREATE TABLE polar_customers (
    user_id           uuid PRIMARY KEY REFERENCES users (id),
    polar_customer_id text,
    -- pending: to be created or linked; linked; failed: gave up for now (see last_error);
    -- deleted: removed at Polar with the account.
    status            text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'linked', 'failed', 'deleted')),
    attempts          integer NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    last_error        text,
    state             jsonb,
    state_fetched_at  timestamptz,
    -- A webhook said the state changed: read it again before trusting the cache (the old one
    -- stays as the last known state for outages).
    state_stale       boolean NOT NULL DEFAULT false,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX polar_customers_pending_idx ON polar_customers (next_attempt_at) WHERE status = 'pending';

-- Billing details as the user entered them; pushed to the Polar customer, which puts them on
-- invoices. `polar_error` keeps why the last push failed.
CREATE TABLE billing_details (
    user_id         uuid PRIMARY KEY REFERENCES users (id),
    billing_email   text,
    company         text,
    line1           text,
    line2           text,
    city            text,
    region          text,
    postal_code     text,
    country         text NOT NULL CHECK (country ~ '^[A-Z]{2}$'),
    tax_id          text,
    tax_id_kind     text,
    polar_synced_at timestamptz,
    polar_error     text,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Invoices asked for and not yet ready at Polar (the invoices list shows "preparing").
CREATE TABLE invoice_requests (
    order_id     text PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES users (id),
    requested_at timestamptz NOT NULL DEFAULT now()
);

-- A deleted account keeps its row (pseudonymized) so ledger totals and history stay whole.
ALTER TABLE users ADD COLUMN deleted_at timestamptz;
