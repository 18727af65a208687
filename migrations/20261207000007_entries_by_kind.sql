-- no-transaction
-- The operator console filters a customer's ledger by kind (issue 28). Spends and overage are
-- nearly every entry of a busy account, read through credit_entries_user_idx; every other kind
-- is rare, and a filter on one of them would pick it out of the account's whole history (a
-- million spends for one purchase). This index holds only those rare kinds, so a spend's insert
-- never touches it (the batch and spend benchmarks are unchanged), and it is built without
-- blocking writes (hence no transaction: CREATE INDEX CONCURRENTLY cannot run in one).
CREATE INDEX CONCURRENTLY IF NOT EXISTS credit_entries_user_kind_idx
    ON credit_entries (user_id, kind, effective_at DESC, id DESC)
 WHERE kind NOT IN ('spend', 'overage');
