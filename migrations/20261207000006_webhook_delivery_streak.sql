-- Polar disables a webhook endpoint after 10 consecutive failed deliveries (POLAR.md) and
-- only a person can turn it back on; meanwhile no order, refund or subscription change
-- arrives. The receiver keeps the current run of refused deliveries here (one row, shared by
-- every instance): a delivery it accepts ends the run. The operator console's health page and
-- /metrics warn while the run is long enough to matter (issue 28).
CREATE TABLE webhook_delivery_streak (
    id               boolean PRIMARY KEY DEFAULT true CHECK (id),
    -- Deliveries refused in a row (bad or missing signature, not configured, not stored).
    refused          integer NOT NULL DEFAULT 0 CHECK (refused >= 0),
    first_refused_at timestamptz,
    last_refused_at  timestamptz,
    -- Why the last one was refused (no secrets: the verifier's or the database's message).
    last_error       text,
    last_accepted_at timestamptz
);
INSERT INTO webhook_delivery_streak DEFAULT VALUES;
