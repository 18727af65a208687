-- Keys the ledger reserves for itself.
--
-- The ledger writes entries under keys it derives: a spend that touches several buckets adds
-- `key#2`, `key#3`…; accruals, expiries and rollovers are keyed `accrual:…`, `expiry:…` and
-- `rollover:…`. A caller that could choose such a key could make its entry collide with one
-- the ledger writes later: a spend keyed `k#2`, then a two-bucket spend keyed `k`, minted
-- credits (the balance read 1,001 while its entries summed to 999). So every entry point now
-- refuses those shapes, whoever calls it, and a spend may not use the business namespaces of
-- grants either (`free:`, `order:`, `refund:`, `allotment:`, `upgrade:`), whose later grant
-- would otherwise fail on the spend's key. A clash on a continuation key is an error, never
-- a "duplicate".

CREATE FUNCTION credit_check_key(p_key text, p_spend boolean) RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_key IS NULL OR length(p_key) = 0 OR length(p_key) > 300 THEN
        RAISE EXCEPTION 'ledger key must be 1 to 300 characters' USING ERRCODE = '22023';
    END IF;
    IF strpos(p_key, '#') > 0 OR p_key ~ '^(accrual|expiry|rollover):' THEN
        RAISE EXCEPTION 'ledger key % has a shape the ledger reserves for its own entries', p_key USING ERRCODE = '22023';
    END IF;
    IF p_spend AND p_key ~ '^(free|order|refund|allotment|upgrade):' THEN
        RAISE EXCEPTION 'ledger key % is in a grant''s namespace and cannot key a spend', p_key USING ERRCODE = '22023';
    END IF;
END $$;

CREATE OR REPLACE FUNCTION credit_grant(
    p_user uuid, p_bucket_kind text, p_entry_kind text, p_source_key text, p_amount bigint,
    p_expires_at timestamptz, p_key text, p_metadata jsonb, p_now timestamptz,
    p_schedule_due timestamptz[] DEFAULT NULL, p_schedule_amount bigint[] DEFAULT NULL)
RETURNS TABLE (applied boolean, balance bigint) LANGUAGE plpgsql AS $$
DECLARE
    v_op bigint;
    v_bucket bigint;
    v_rank smallint := CASE p_bucket_kind WHEN 'allotment' THEN 0 WHEN 'purchase' THEN 1 WHEN 'adjustment' THEN 2 ELSE 3 END;
    v_balance bigint;
    i integer;
    v_seq_base integer;
BEGIN
    PERFORM credit_check_key(p_key, false);
    IF p_amount <= 0 THEN
        RAISE EXCEPTION 'credit_grant: amount must be positive, got %', p_amount;
    END IF;
    INSERT INTO credit_accounts (user_id) VALUES (p_user) ON CONFLICT DO NOTHING;
    INSERT INTO credit_operations (user_id, kind, idempotency_key)
    VALUES (p_user, p_entry_kind, p_key) ON CONFLICT ON CONSTRAINT credit_operations_key DO NOTHING
    RETURNING id INTO v_op;
    IF v_op IS NULL THEN
        SELECT a.balance INTO v_balance FROM credit_accounts a WHERE a.user_id = p_user;
        RETURN QUERY SELECT false, v_balance;
        RETURN;
    END IF;

    PERFORM 1 FROM credit_accounts a WHERE a.user_id = p_user FOR NO KEY UPDATE;
    INSERT INTO credit_buckets (user_id, kind, burn_rank, source_key, expires_at, metadata)
    VALUES (p_user, p_bucket_kind, v_rank, p_source_key, p_expires_at, coalesce(p_metadata, '{}'))
    ON CONFLICT ON CONSTRAINT credit_buckets_source_key DO UPDATE SET expires_at = EXCLUDED.expires_at
    RETURNING id INTO v_bucket;

    IF p_schedule_due IS NULL THEN
        INSERT INTO credit_entries (operation_id, user_id, bucket_id, kind, amount, idempotency_key, metadata, effective_at)
        VALUES (v_op, p_user, v_bucket, p_entry_kind, p_amount, p_key, coalesce(p_metadata, '{}'), p_now);
        UPDATE credit_buckets SET remaining = remaining + p_amount WHERE id = v_bucket;
        UPDATE credit_accounts a SET balance = a.balance + p_amount, updated_at = p_now WHERE a.user_id = p_user;
    ELSE
        IF (SELECT sum(x) FROM unnest(p_schedule_amount) x) <> p_amount THEN
            RAISE EXCEPTION 'credit_grant: schedule sums to %, not %', (SELECT sum(x) FROM unnest(p_schedule_amount) x), p_amount;
        END IF;
        SELECT coalesce(max(seq) + 1, 0) INTO v_seq_base FROM credit_accruals WHERE bucket_id = v_bucket;
        FOR i IN 1 .. array_length(p_schedule_due, 1) LOOP
            INSERT INTO credit_accruals (bucket_id, seq, user_id, due_at, amount, entry_kind)
            VALUES (v_bucket, v_seq_base + i - 1, p_user, p_schedule_due[i], p_schedule_amount[i],
                    CASE WHEN array_length(p_schedule_due, 1) = 1 THEN p_entry_kind ELSE 'daily_accrual' END);
        END LOOP;
    END IF;

    UPDATE credit_accounts a SET next_event_at = credit_next_event(p_user) WHERE a.user_id = p_user;
    PERFORM credit_maintain_locked(p_user, p_now)
       FROM credit_accounts a WHERE a.user_id = p_user AND a.next_event_at <= p_now;
    SELECT a.balance INTO v_balance FROM credit_accounts a WHERE a.user_id = p_user;
    UPDATE credit_operations SET result = jsonb_build_object('applied', true, 'balance', v_balance) WHERE id = v_op;
    RETURN QUERY SELECT true, v_balance;
END $$;

CREATE OR REPLACE FUNCTION credit_spend(p_user uuid, p_cost bigint, p_key text, p_metadata jsonb, p_now timestamptz,
                             p_kind text DEFAULT 'spend',
                             OUT status text, OUT spent bigint, OUT balance bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_balance bigint;
    v_next timestamptz;
    v_left bigint := p_cost;
    v_take bigint;
    v_entry bigint;
    v_n integer := 1;
    r record;
BEGIN
    PERFORM credit_check_key(p_key, true);
    IF p_cost <= 0 THEN
        RAISE EXCEPTION 'credit_spend: cost must be positive, got %', p_cost;
    END IF;
    -- Fast path: nothing falls due, enough credits. Locks and debits the account in one
    -- statement. (A retry of a committed spend is caught below by the entry's unique key.)
    UPDATE credit_accounts a SET balance = a.balance - p_cost, updated_at = p_now
     WHERE a.user_id = p_user AND a.balance >= p_cost AND (a.next_event_at IS NULL OR a.next_event_at > p_now)
    RETURNING a.balance INTO v_balance;
    IF NOT FOUND THEN
        -- Slow path. A retry must get its first answer even if the balance is now too low.
        SELECT p.spent, p.balance INTO spent, balance FROM credit_prior_spend(p_user, p_key) p;
        IF spent IS NOT NULL THEN
            status := 'duplicate';
            RETURN;
        END IF;
        -- Apply what fell due (accruals, expiries), then decide.
        SELECT a.balance, a.next_event_at INTO v_balance, v_next FROM credit_accounts a WHERE a.user_id = p_user FOR NO KEY UPDATE;
        IF NOT FOUND THEN
            status := 'insufficient'::text; spent := 0::bigint; balance := 0::bigint;
            RETURN;
        END IF;
        IF v_next IS NOT NULL AND v_next <= p_now THEN
            v_balance := v_balance + credit_maintain_locked(p_user, p_now);
        END IF;
        IF v_balance < p_cost THEN
            status := 'insufficient'::text; spent := 0::bigint; balance := v_balance;
            RETURN;
        END IF;
        UPDATE credit_accounts a SET balance = a.balance - p_cost, updated_at = p_now
         WHERE a.user_id = p_user RETURNING a.balance INTO v_balance;
    END IF;

    -- The account row lock serializes every writer of this user's buckets, so they need no
    -- lock of their own.
    LOOP
        -- The next bucket in burn order (usually the only one a spend touches).
        SELECT b.id, b.remaining INTO r FROM credit_buckets b
         WHERE b.user_id = p_user AND b.remaining > 0 AND (b.expires_at IS NULL OR b.expires_at > p_now)
         ORDER BY b.burn_rank, b.expires_at NULLS LAST, b.id
         LIMIT 1;
        EXIT WHEN NOT FOUND;
        v_take := least(v_left, r.remaining);
        INSERT INTO credit_entries (user_id, bucket_id, kind, amount, idempotency_key, metadata, effective_at)
        VALUES (p_user, r.id, p_kind, -v_take,
                CASE WHEN v_n = 1 THEN p_key ELSE format('%s#%s', p_key, v_n) END,
                CASE WHEN v_n = 1 THEN coalesce(p_metadata, '{}') || jsonb_build_object('spent', p_cost, 'balance_after', v_balance)
                     ELSE coalesce(p_metadata, '{}') END,
                p_now)
        ON CONFLICT ON CONSTRAINT credit_entries_key DO NOTHING
        RETURNING id INTO v_entry;
        IF v_entry IS NULL AND v_n > 1 THEN
            -- A continuation key is derived from a key no caller can choose (the check above
            -- refuses '#'), so a clash here is a bug: refuse the whole spend.
            RAISE EXCEPTION 'credit_spend: continuation key %#% already exists', p_key, v_n;
        END IF;
        IF v_entry IS NULL THEN
            -- A retry: this key already committed (earlier, or while we waited for the account
            -- lock). Undo our debit and answer with the first result.
            UPDATE credit_accounts a SET balance = a.balance + p_cost WHERE a.user_id = p_user;
            SELECT p.spent, p.balance INTO spent, balance FROM credit_prior_spend(p_user, p_key) p;
            status := 'duplicate';
            RETURN;
        END IF;
        UPDATE credit_buckets SET remaining = remaining - v_take WHERE id = r.id;
        v_left := v_left - v_take;
        v_n := v_n + 1;
        EXIT WHEN v_left = 0;
    END LOOP;
    IF v_left <> 0 THEN
        RAISE EXCEPTION 'credit_spend: buckets of % hold less than the balance', p_user;
    END IF;
    status := 'spent'; spent := p_cost; balance := v_balance;
END $$;

CREATE OR REPLACE FUNCTION credit_clawback(p_user uuid, p_source_key text, p_key text, p_metadata jsonb, p_now timestamptz)
RETURNS TABLE (applied boolean, clawed_back bigint, shortfall bigint, balance bigint) LANGUAGE plpgsql AS $$
DECLARE
    v_op bigint;
    v_bucket bigint;
    v_remaining bigint;
    v_granted bigint;
    v_balance bigint;
    v_prev jsonb;
BEGIN
    PERFORM credit_check_key(p_key, false);
    INSERT INTO credit_accounts (user_id) VALUES (p_user) ON CONFLICT DO NOTHING;
    INSERT INTO credit_operations (user_id, kind, idempotency_key)
    VALUES (p_user, 'refund_clawback', p_key) ON CONFLICT ON CONSTRAINT credit_operations_key DO NOTHING
    RETURNING id INTO v_op;
    IF v_op IS NULL THEN
        SELECT o.result INTO v_prev FROM credit_operations o WHERE o.idempotency_key = p_key;
        RETURN QUERY SELECT false, (v_prev ->> 'clawed_back')::bigint, (v_prev ->> 'shortfall')::bigint, (v_prev ->> 'balance')::bigint;
        RETURN;
    END IF;
    PERFORM 1 FROM credit_accounts a WHERE a.user_id = p_user FOR NO KEY UPDATE;
    SELECT b.id, b.remaining INTO v_bucket, v_remaining FROM credit_buckets b
     WHERE b.user_id = p_user AND b.source_key = p_source_key FOR NO KEY UPDATE;
    IF v_bucket IS NULL THEN
        v_remaining := 0;
        v_granted := 0;
    ELSE
        SELECT coalesce(sum(amount), 0) INTO v_granted FROM credit_entries
         WHERE user_id = p_user AND bucket_id = v_bucket AND kind IN ('purchase', 'allotment', 'daily_accrual', 'free_grant', 'adjustment') AND amount > 0;
    END IF;
    IF v_remaining > 0 THEN
        INSERT INTO credit_entries (operation_id, user_id, bucket_id, kind, amount, idempotency_key, metadata, effective_at)
        VALUES (v_op, p_user, v_bucket, 'refund_clawback', -v_remaining, p_key,
                coalesce(p_metadata, '{}') || jsonb_build_object('shortfall', v_granted - v_remaining), p_now);
        UPDATE credit_buckets SET remaining = 0 WHERE id = v_bucket;
        UPDATE credit_accounts a SET balance = a.balance - v_remaining, updated_at = p_now WHERE a.user_id = p_user;
    END IF;
    SELECT a.balance INTO v_balance FROM credit_accounts a WHERE a.user_id = p_user;
    UPDATE credit_accounts a SET next_event_at = credit_next_event(p_user) WHERE a.user_id = p_user;
    UPDATE credit_operations SET result = jsonb_build_object('clawed_back', v_remaining, 'shortfall', v_granted - v_remaining, 'balance', v_balance)
     WHERE id = v_op;
    RETURN QUERY SELECT true, v_remaining, v_granted - v_remaining, v_balance;
END $$;
