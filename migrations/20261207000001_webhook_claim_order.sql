-- The webhook worker claims the oldest due events first (ORDER BY received_at … LIMIT n FOR
-- UPDATE SKIP LOCKED). The index on next_attempt_at could not serve that order: every claim
-- sorted the whole due backlog, so a backlog of n events drained in O(n²). This index gives
-- pending events in the claim's order; the claim reads its first rows and stops.
CREATE INDEX webhook_events_claim_idx ON webhook_events (received_at) WHERE status = 'pending';
-- Nothing else reads pending events by next_attempt_at alone.
DROP INDEX webhook_events_due_idx;
