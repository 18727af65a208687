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
    external_id     text NOT NULL CONSTRAINT usage_outbox_external_id UNIQUE,
    -- Credits consumed (positive); a correction would be negative, on a Sum meter.
    units           bigint NOT NULL CHECK (units <> 0),
    occurred_at     timestamptz NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    sent_at         timestamptz
);
CREATE INDEX usage_outbox_due ON usage_outbox (next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX usage_outbox_user ON usage_outbox (user_id, occurred_at);

CREATE FUNCTION usage_outbox_from_spend() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO usage_outbox (user_id, external_id, units, occurred_at)
    VALUES (NEW.user_id, NEW.idempotency_key, -NEW.amount, NEW.effective_at);
    RETURN NULL;
END $$;

CREATE TRIGGER credit_entries_usage_outbox AFTER INSERT ON credit_entries
    FOR EACH ROW WHEN (NEW.kind = 'spend') EXECUTE FUNCTION usage_outbox_from_spend();
