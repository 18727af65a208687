-- When an event's handler last failed (issue 28): the operator's health page counts the events
-- that failed in the last hour. Set by the worker in the same statement that records the
-- failure. Nullable without a default: adding it rewrites nothing.
ALTER TABLE webhook_events ADD COLUMN last_failed_at timestamptz;
