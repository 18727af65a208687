-- Verified Polar webhook deliveries, stored before they are acknowledged and processed
-- asynchronously. `webhook_id` is Polar's `webhook-id` header: the same on every retry, so a
-- redelivery is a no-op insert.
CREATE TABLE webhook_events (
    webhook_id      text PRIMARY KEY,
    event_type      text NOT NULL,
    payload         jsonb,
    -- The body exactly as received when it was not JSON (kept for inspection).
    raw_body        text,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'done', 'skipped', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text,
    received_at     timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    processed_at    timestamptz
);
CREATE INDEX webhook_events_due_idx ON webhook_events (next_attempt_at) WHERE status = 'pending';
