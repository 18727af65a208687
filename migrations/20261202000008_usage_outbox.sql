-- Usage billing: every spend the ledger records is mirrored to Polar's meters, exactly once.
--
-- The ledger stays the real-time gate; Polar is the invoicing mirror. Each `spend` entry
-- writes one outbox row in the same statement (a trigger, so no writer can forget it and
-- a rolled-back spend leaves no row). The usage shipper (src/server/usage/) claims due rows
-- with FOR UPDATE SKIP LOCKED, sends them to POST /v1/events/ingest in batches, and marks them
-- sent. The event's external_id is the entry's own idempotency key, which is unique, so a
-- batch sent again after a crash between sending and marking is counted by Polar as
-- duplicates, never twice.
CREATE TABLE usage_outbox (
    id              bigserial PRIMARY KEY,
    user_id         uuid NOT NULL,
    -- The entry's idempotency key, unique in credit_entries (so not indexed again here: this
    -- insert is on the spend path, and the trigger is its only writer).
    external_id     text NOT NULL,
    -- Credits consumed (positive); a correction would be negative, on a Sum meter.
    units           bigint NOT NULL CHECK (units <> 0),
    occurred_at     timestamptz NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    sent_at         timestamptz
);
-- The shipper's claim: pending rows in order (a small index, rows leave it once sent).
CREATE INDEX usage_outbox_pending ON usage_outbox (id) WHERE status = 'pending';
-- Parked rows (rare), for /metrics; sent rows by age, for the janitor's pruning. Neither is
-- touched by a spend: rows enter them when the shipper marks them.
CREATE INDEX usage_outbox_failed ON usage_outbox (id) WHERE status = 'failed';
CREATE INDEX usage_outbox_sent ON usage_outbox (sent_at) WHERE status = 'sent';

CREATE FUNCTION usage_outbox_from_spend() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO usage_outbox (user_id, external_id, units, occurred_at)
    VALUES (NEW.user_id, NEW.idempotency_key, -NEW.amount, NEW.effective_at);
    RETURN NULL;
END $$;

CREATE TRIGGER credit_entries_usage_outbox AFTER INSERT ON credit_entries
    FOR EACH ROW WHEN (NEW.kind = 'spend') EXECUTE FUNCTION usage_outbox_from_spend();
