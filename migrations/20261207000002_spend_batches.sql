-- Group commit for spends (issue 27): many spends, one transaction, one lock per account, one
-- commit.
--
-- 1. `credit_spend_batch` applies a batch of spends in one call. It locks every account of the
--    batch first, in user id order (so two batches, on one instance or two, never deadlock),
--    then takes the common case set-based: for an account whose spends in the batch are all
--    plain (valid keys never seen before and not repeated, positive costs, nothing due, enough
--    credits in the first bucket in burn order for all of them, no alert line crossed), one
--    INSERT writes every entry, and one UPDATE each debits the buckets and the accounts. Each
--    entry records what its own spend left (`balance_after`), in the batch's order, exactly as
--    `credit_spend` would have one by one. Every other account's spends go, in the batch's
--    order, through `credit_spend` itself, each in a block of its own: a spend that raises an
--    error (a bad key, a key of another account) fails alone, its batch-mates do not.
-- 2. The triggers that mirror spends into the usage outbox and the daily rollup become
--    statement triggers over the inserted rows: a batch writes its outbox rows in one INSERT
--    and each account's day row once, instead of once per spend. What they write is unchanged.

CREATE FUNCTION usage_outbox_from_entries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO usage_outbox (user_id, external_id, units, occurred_at, event)
    SELECT n.user_id, n.idempotency_key, abs(n.amount), n.effective_at,
           CASE n.kind WHEN 'overage' THEN 'credits.overage' ELSE 'credits.spent' END
      FROM new_entries n
     WHERE n.kind IN ('spend', 'overage')
     ORDER BY n.id;
    RETURN NULL;
END $$;
DROP TRIGGER credit_entries_usage_outbox ON credit_entries;
CREATE TRIGGER credit_entries_usage_outbox AFTER INSERT ON credit_entries
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION usage_outbox_from_entries();
DROP FUNCTION usage_outbox_from_spend();

CREATE FUNCTION credit_usage_from_entries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO credit_usage_days AS d (user_id, day, spent)
    SELECT n.user_id, credit_day_of(n.effective_at, s.credit_day_offset_secs), -sum(n.amount)
      FROM new_entries n CROSS JOIN ledger_settings s
     WHERE n.kind = 'spend'
     GROUP BY 1, 2
     -- One order for every writer: two transactions never wait on each other's day rows crosswise.
     ORDER BY 1, 2
    ON CONFLICT (user_id, day) DO UPDATE SET spent = d.spent + EXCLUDED.spent;
    RETURN NULL;
END $$;
DROP TRIGGER credit_entries_usage_days ON credit_entries;
CREATE TRIGGER credit_entries_usage_days AFTER INSERT ON credit_entries
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION credit_usage_from_entries();
DROP FUNCTION credit_usage_from_spend();

-- Whether `credit_check_key(p_key, true)` would accept the key, without raising.
CREATE FUNCTION credit_spend_key_ok(p_key text) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT p_key IS NOT NULL AND length(p_key) BETWEEN 1 AND 300 AND strpos(p_key, '#') = 0
       AND p_key !~ '^(accrual|expiry|rollover|overage|free|order|refund|allotment|upgrade):'
$$;

-- Applies the spends (p_users[i], p_costs[i], p_keys[i], p_metadata[i]) in that order, as
-- `credit_spend(…, 'spend')` would one by one, in the caller's transaction. One row per spend,
-- by its 1-based position: status 'spent' | 'duplicate' | 'insufficient' | 'over_cap' with
-- what `credit_spend` answers, or 'error' with the message of the error that spend raised.
CREATE FUNCTION credit_spend_batch(p_users uuid[], p_costs bigint[], p_keys text[], p_metadata jsonb[],
                                   p_now timestamptz)
RETURNS TABLE (ord integer, status text, spent bigint, balance bigint, error text)
LANGUAGE plpgsql AS $$
DECLARE
    v_fast uuid[];
    r record;
BEGIN
    IF cardinality(p_users) <> cardinality(p_costs) OR cardinality(p_users) <> cardinality(p_keys)
       OR cardinality(p_users) <> cardinality(p_metadata) THEN
        RAISE EXCEPTION 'credit_spend_batch: the arrays differ in length';
    END IF;
    -- Every account of the batch, locked in one order.
    PERFORM 1 FROM credit_accounts a WHERE a.user_id = ANY (p_users) ORDER BY a.user_id FOR NO KEY UPDATE;

    -- The accounts whose spends are all plain (see the top of this file).
    WITH s AS (
        SELECT t.u, t.c, t.k, count(*) OVER (PARTITION BY t.k) AS uses
          FROM unnest(p_users, p_costs, p_keys) AS t(u, c, k)
    ), per AS (
        SELECT s.u, sum(s.c) AS total, bool_and(s.c > 0 AND s.uses = 1 AND credit_spend_key_ok(s.k)) AS plain
          FROM s GROUP BY s.u
    )
    SELECT array_agg(a.user_id) INTO v_fast
      FROM per
      JOIN credit_accounts a ON a.user_id = per.u
     WHERE per.plain
       AND a.balance >= per.total
       AND (a.next_event_at IS NULL OR a.next_event_at > p_now)
       -- Enough in the first bucket in burn order: each spend takes one entry.
       AND (SELECT b.remaining FROM credit_buckets b
             WHERE b.user_id = a.user_id AND b.remaining > 0 AND (b.expires_at IS NULL OR b.expires_at > p_now)
             ORDER BY b.burn_rank, b.expires_at NULLS LAST, b.id LIMIT 1) >= per.total
       -- No percentage of the period's allotment crossed (credit_spend fires those alerts).
       AND NOT (a.period_key IS NOT NULL AND a.period_end > p_now AND a.period_start <= p_now AND a.period_allotment > 0
                AND EXISTS (SELECT 1 FROM unnest(ARRAY[80, 100, 150]) t
                             WHERE a.period_spent * 100 < t * a.period_allotment
                               AND (a.period_spent + per.total) * 100 >= t * a.period_allotment))
       -- Nor the user's low-balance line.
       AND NOT (a.alert_below IS NOT NULL AND a.balance - per.total < a.alert_below AND a.balance >= a.alert_below)
       -- Keys never seen: a retry is answered by credit_spend.
       AND NOT EXISTS (SELECT 1 FROM credit_entries e
                        WHERE e.idempotency_key IN (SELECT s.k FROM s WHERE s.u = per.u));

    IF v_fast IS NOT NULL THEN
        -- The entries, each with what its spend left, in the batch's order.
        WITH s AS (
            SELECT t.u, t.c, t.k, t.m, t.o FROM unnest(p_users, p_costs, p_keys, p_metadata) WITH ORDINALITY AS t(u, c, k, m, o)
             WHERE t.u = ANY (v_fast)
        ), first_bucket AS (
            SELECT DISTINCT ON (b.user_id) b.user_id, b.id FROM credit_buckets b
             WHERE b.user_id = ANY (v_fast) AND b.remaining > 0 AND (b.expires_at IS NULL OR b.expires_at > p_now)
             ORDER BY b.user_id, b.burn_rank, b.expires_at NULLS LAST, b.id
        ), run AS (
            SELECT s.*, a.balance - sum(s.c) OVER (PARTITION BY s.u ORDER BY s.o) AS after
              FROM s JOIN credit_accounts a ON a.user_id = s.u
        ), written AS (
            INSERT INTO credit_entries (user_id, bucket_id, kind, amount, idempotency_key, metadata, effective_at)
            SELECT run.u, fb.id, 'spend', -run.c, run.k,
                   coalesce(run.m, '{}') || jsonb_build_object('spent', run.c, 'balance_after', run.after), p_now
              FROM run JOIN first_bucket fb ON fb.user_id = run.u
             ORDER BY run.o
            RETURNING user_id, bucket_id, -amount AS c
        ), bucket_totals AS (
            UPDATE credit_buckets b SET remaining = b.remaining - w.total
              FROM (SELECT bucket_id, sum(c) AS total FROM written GROUP BY bucket_id) w
             WHERE b.id = w.bucket_id
            RETURNING b.id
        )
        UPDATE credit_accounts a
           SET balance = a.balance - w.total, updated_at = p_now,
               period_spent = a.period_spent + CASE WHEN a.period_end > p_now AND a.period_start <= p_now THEN w.total ELSE 0 END
          FROM (SELECT user_id, sum(c) AS total FROM written GROUP BY user_id) w
         WHERE a.user_id = w.user_id;

        RETURN QUERY
        SELECT t.o::integer, 'spent'::text, t.c, (e.metadata ->> 'balance_after')::bigint, NULL::text
          FROM unnest(p_users, p_costs, p_keys) WITH ORDINALITY AS t(u, c, k, o)
          JOIN credit_entries e ON e.idempotency_key = t.k
         WHERE t.u = ANY (v_fast);
    END IF;

    -- Everything else, one by one in the batch's order; an error undoes only its own spend.
    FOR r IN
        SELECT t.u, t.c, t.k, t.m, t.o FROM unnest(p_users, p_costs, p_keys, p_metadata) WITH ORDINALITY AS t(u, c, k, m, o)
         WHERE v_fast IS NULL OR NOT (t.u = ANY (v_fast))
         ORDER BY t.o
    LOOP
        BEGIN
            RETURN QUERY SELECT r.o::integer, x.status, x.spent, x.balance, NULL::text
                           FROM credit_spend(r.u, r.c, r.k, r.m, p_now, 'spend') x;
        EXCEPTION WHEN OTHERS THEN
            RETURN QUERY SELECT r.o::integer, 'error'::text, 0::bigint, 0::bigint, SQLERRM;
        END;
    END LOOP;
END $$;
