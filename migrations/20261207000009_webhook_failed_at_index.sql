-- no-transaction
-- The events whose handler failed, by when (only those: a healthy inbox adds nothing to it),
-- for the health page's "failed in the last hour". Built without blocking the receiver's
-- inserts; alone in its file, because CREATE INDEX CONCURRENTLY cannot share a transaction.
CREATE INDEX CONCURRENTLY IF NOT EXISTS webhook_events_failed_at_idx
    ON webhook_events (last_failed_at) WHERE last_failed_at IS NOT NULL;
