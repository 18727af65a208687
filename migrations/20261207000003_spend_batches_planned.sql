-- Group commit, as measured (issue 27): the first `credit_spend_batch` looked for the batch's
-- keys among the ledger's entries with a query the planner ran as a sequential scan of
-- credit_entries per account, so a batch cost more the longer the ledger (about 250 ms at
-- 20,000 entries). Now:
-- - one probe of the key index per spend finds the accounts with a key already in the ledger;
-- - the function plans every join as a nested loop (the batch's few rows on one side, an index
--   on the other), never hashing a whole table;
-- - the plain accounts' buckets and totals are computed once, the entries written first (their
--   foreign-key checks then lock buckets not yet updated), then each bucket and account updated
--   once; the outcomes come from the same computation as the entries' `balance_after`.
-- What it does is unchanged (see 20261207000002_spend_batches.sql).

CREATE OR REPLACE FUNCTION credit_spend_batch(p_users uuid[], p_costs bigint[], p_keys text[], p_metadata jsonb[],
                                              p_now timestamptz)
RETURNS TABLE (ord integer, status text, spent bigint, balance bigint, error text)
LANGUAGE plpgsql
-- Every join here has the batch's few rows on one side and an index on the other: never hash
-- or sort a whole table (the ledger's entries) for them.
SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
DECLARE
    v_seen uuid[];
    v_fast uuid[];
    v_buckets bigint[];
    v_totals bigint[];
    r record;
BEGIN
    IF cardinality(p_users) <> cardinality(p_costs) OR cardinality(p_users) <> cardinality(p_keys)
       OR cardinality(p_users) <> cardinality(p_metadata) THEN
        RAISE EXCEPTION 'credit_spend_batch: the arrays differ in length';
    END IF;
    -- Every account of the batch, locked in one order.
    PERFORM 1 FROM credit_accounts a WHERE a.user_id = ANY (p_users) ORDER BY a.user_id FOR NO KEY UPDATE;

    -- The accounts with a key already in the ledger (a retry, or another account's key): one
    -- probe of the key index per spend.
    SELECT array_agg(DISTINCT t.u) INTO v_seen
      FROM unnest(p_users, p_keys) AS t(u, k)
     WHERE EXISTS (SELECT 1 FROM credit_entries e WHERE e.idempotency_key = t.k);

    -- The accounts whose spends are all plain (see the top of this file), each with the bucket
    -- its spends come from and their total.
    WITH s AS (
        SELECT t.u, t.c, t.k, count(*) OVER (PARTITION BY t.k) AS uses
          FROM unnest(p_users, p_costs, p_keys) AS t(u, c, k)
    ), per AS (
        SELECT s.u, sum(s.c)::bigint AS total, bool_and(s.c > 0 AND s.uses = 1 AND credit_spend_key_ok(s.k)) AS plain
          FROM s GROUP BY s.u
    ), candidates AS (
        SELECT a.*, per.total,
               (SELECT b.id FROM credit_buckets b
                 WHERE b.user_id = a.user_id AND b.remaining > 0 AND (b.expires_at IS NULL OR b.expires_at > p_now)
                 ORDER BY b.burn_rank, b.expires_at NULLS LAST, b.id LIMIT 1) AS bucket
          FROM per JOIN credit_accounts a ON a.user_id = per.u
         WHERE per.plain AND NOT (per.u = ANY (coalesce(v_seen, '{}')))
    )
    SELECT array_agg(c.user_id), array_agg(c.bucket), array_agg(c.total) INTO v_fast, v_buckets, v_totals
      FROM candidates c
      JOIN credit_buckets b ON b.id = c.bucket
     WHERE c.balance >= c.total
       AND (c.next_event_at IS NULL OR c.next_event_at > p_now)
       -- Enough in the first bucket in burn order: each spend takes one entry.
       AND b.remaining >= c.total
       -- No percentage of the period's allotment crossed (credit_spend fires those alerts).
       AND NOT (c.period_key IS NOT NULL AND c.period_end > p_now AND c.period_start <= p_now AND c.period_allotment > 0
                AND EXISTS (SELECT 1 FROM unnest(ARRAY[80, 100, 150]) t
                             WHERE c.period_spent * 100 < t * c.period_allotment
                               AND (c.period_spent + c.total) * 100 >= t * c.period_allotment))
       -- Nor the user's low-balance line.
       AND NOT (c.alert_below IS NOT NULL AND c.balance - c.total < c.alert_below AND c.balance >= c.alert_below);

    IF v_fast IS NOT NULL THEN
        -- The entries, each with what its spend left, in the batch's order. (Written before the
        -- buckets change: the entries' foreign-key checks then lock buckets this transaction
        -- has not updated yet, which is cheaper.)
        RETURN QUERY
        WITH run AS (
            SELECT t.u, t.c, t.k, t.m, t.o, f.bucket,
                   (a.balance - sum(t.c) OVER (PARTITION BY t.u ORDER BY t.o))::bigint AS after
              FROM unnest(p_users, p_costs, p_keys, p_metadata) WITH ORDINALITY AS t(u, c, k, m, o)
              JOIN unnest(v_fast, v_buckets) AS f(u, bucket) ON f.u = t.u
              JOIN credit_accounts a ON a.user_id = t.u
        ), written AS (
            INSERT INTO credit_entries (user_id, bucket_id, kind, amount, idempotency_key, metadata, effective_at)
            SELECT run.u, run.bucket, 'spend', -run.c, run.k,
                   coalesce(run.m, '{}') || jsonb_build_object('spent', run.c, 'balance_after', run.after), p_now
              FROM run ORDER BY run.o
        )
        SELECT run.o::integer, 'spent'::text, run.c, run.after, NULL::text FROM run;
        UPDATE credit_buckets b SET remaining = b.remaining - t.total
          FROM unnest(v_buckets, v_totals) AS t(id, total) WHERE b.id = t.id;
        UPDATE credit_accounts a
           SET balance = a.balance - t.total, updated_at = p_now,
               period_spent = a.period_spent + CASE WHEN a.period_end > p_now AND a.period_start <= p_now THEN t.total ELSE 0 END
          FROM unnest(v_fast, v_totals) AS t(u, total) WHERE a.user_id = t.u;
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
