-- Two subscriptions in one period: the counters of the period left behind are kept.
--
-- What changed, and why: an account counts spends into one billing period at a time, on its
-- own row (credit_accounts.period_*), so the spend stays one UPDATE. When a second
-- subscription starts a period while the first one's is still running (a second checkout, a
-- plan change Polar makes as a new subscription), credit_start_period moved the account to
-- the new period and reset the counters: the first period's overage count was lost, so
-- nothing could check it against its entries, show it, or stop the account from being
-- deleted before Polar billed it. Now the period left behind is archived in credit_periods
-- with its counters, under the account row lock, before the row moves on; period ends
-- (revocations) reach the archived row too; credit_ledger_problems checks an archived
-- period's overage counter against its overage bucket as it does the current one's.
-- A period that starts earlier than the current one is still ignored (a late event).
--
-- Lock order: the account row first, as every writer of it.

CREATE TABLE credit_periods (
    user_id      uuid NOT NULL REFERENCES credit_accounts (user_id),
    period_key   text NOT NULL,
    period_start timestamptz NOT NULL,
    period_end   timestamptz NOT NULL,
    allotment    bigint NOT NULL,
    spent        bigint NOT NULL,
    overage      bigint NOT NULL,
    -- The period's metered price and cap (NULL: none), so what it owes can be computed.
    unit_cents   bigint,
    cap_cents    bigint,
    archived_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, period_key)
);

CREATE OR REPLACE FUNCTION credit_start_period(p_user uuid, p_key text, p_start timestamptz, p_end timestamptz,
                                               p_allotment bigint, p_unit_cents bigint, p_cap_cents bigint, p_open boolean,
                                               p_default_cap_cents bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_acct credit_accounts;
BEGIN
    INSERT INTO credit_accounts (user_id) VALUES (p_user) ON CONFLICT DO NOTHING;
    SELECT * INTO v_acct FROM credit_accounts WHERE user_id = p_user FOR NO KEY UPDATE;
    IF v_acct.period_key IS NOT NULL AND v_acct.period_key <> p_key AND v_acct.period_start <= p_start THEN
        INSERT INTO credit_periods (user_id, period_key, period_start, period_end, allotment, spent, overage, unit_cents, cap_cents)
        VALUES (p_user, v_acct.period_key, v_acct.period_start, v_acct.period_end, v_acct.period_allotment,
                v_acct.period_spent, v_acct.period_overage, v_acct.overage_unit_cents,
                coalesce(least(v_acct.overage_cap_cents, v_acct.user_cap_cents), v_acct.overage_default_cap_cents))
        ON CONFLICT (user_id, period_key) DO UPDATE
           SET period_end = EXCLUDED.period_end, allotment = EXCLUDED.allotment, spent = EXCLUDED.spent,
               overage = EXCLUDED.overage, unit_cents = EXCLUDED.unit_cents, cap_cents = EXCLUDED.cap_cents,
               archived_at = now();
    END IF;
    UPDATE credit_accounts a
       SET period_allotment = CASE WHEN a.period_key = p_key THEN greatest(a.period_allotment, p_allotment) ELSE p_allotment END,
           period_spent = CASE WHEN a.period_key = p_key THEN a.period_spent ELSE 0 END,
           period_overage = CASE WHEN a.period_key = p_key THEN a.period_overage ELSE 0 END,
           period_key = p_key, period_start = p_start, period_end = p_end,
           overage_unit_cents = p_unit_cents, overage_cap_cents = p_cap_cents, overage_open = p_open,
           overage_default_cap_cents = CASE WHEN p_cap_cents IS NULL THEN p_default_cap_cents END
     WHERE a.user_id = p_user AND (a.period_start IS NULL OR a.period_start <= p_start);
END $$;

-- The ledger's checks (as in 20261206000001), and archived periods' overage counters.
CREATE OR REPLACE FUNCTION credit_ledger_problems(p_user uuid DEFAULT NULL)
RETURNS TABLE (user_id uuid, problem text) LANGUAGE sql STABLE AS $$
    SELECT a.user_id, format('balance %s but entries sum to %s', a.balance, coalesce(e.total, 0))
      FROM credit_accounts a
      LEFT JOIN (SELECT ce.user_id, sum(ce.amount) AS total FROM credit_entries ce GROUP BY ce.user_id) e ON e.user_id = a.user_id
     WHERE (p_user IS NULL OR a.user_id = p_user) AND a.balance <> coalesce(e.total, 0)
    UNION ALL
    SELECT a.user_id, format('balance %s but buckets hold %s', a.balance, coalesce(b.total, 0))
      FROM credit_accounts a
      LEFT JOIN (SELECT cb.user_id, sum(cb.remaining) AS total FROM credit_buckets cb GROUP BY cb.user_id) b ON b.user_id = a.user_id
     WHERE (p_user IS NULL OR a.user_id = p_user) AND a.balance <> coalesce(b.total, 0)
    UNION ALL
    SELECT b.user_id, format('bucket %s holds %s but its entries sum to %s', b.id, b.remaining, coalesce(e.total, 0))
      FROM credit_buckets b
      LEFT JOIN (SELECT ce.bucket_id, sum(ce.amount) AS total FROM credit_entries ce GROUP BY ce.bucket_id) e ON e.bucket_id = b.id
     WHERE (p_user IS NULL OR b.user_id = p_user) AND b.remaining <> coalesce(e.total, 0)
    UNION ALL
    SELECT p.user_id, format('period %s counts %s overage but its overage entries sum to %s', p.period_key, p.overage, coalesce(o.total, 0))
      FROM (SELECT a.user_id, a.period_key, a.period_overage AS overage FROM credit_accounts a WHERE a.period_key IS NOT NULL
            UNION ALL
            SELECT cp.user_id, cp.period_key, cp.overage FROM credit_periods cp) p
      LEFT JOIN (SELECT cb.user_id, cb.source_key, sum(ce.amount) AS total FROM credit_buckets cb
                   JOIN credit_entries ce ON ce.bucket_id = cb.id AND ce.kind = 'overage'
                  WHERE cb.kind = 'overage' GROUP BY cb.user_id, cb.source_key) o
        ON o.user_id = p.user_id AND o.source_key = 'overage:' || p.period_key
     WHERE (p_user IS NULL OR p.user_id = p_user) AND p.overage <> coalesce(o.total, 0)
    UNION ALL
    SELECT b.user_id, format('bucket %s records %s advanced but its advance entries sum to %s', b.id, coalesce(ac.advanced, 0), coalesce(ad.total, 0))
      FROM credit_buckets b
      LEFT JOIN (SELECT ca.bucket_id, sum(ca.advanced) AS advanced FROM credit_accruals ca GROUP BY ca.bucket_id) ac ON ac.bucket_id = b.id
      LEFT JOIN (SELECT ce.bucket_id, sum(ce.amount) AS total FROM credit_entries ce WHERE ce.kind = 'advance' GROUP BY ce.bucket_id) ad ON ad.bucket_id = b.id
     WHERE (p_user IS NULL OR b.user_id = p_user) AND coalesce(ac.advanced, 0) <> coalesce(ad.total, 0)
    UNION ALL
    SELECT ca.user_id, format('day %s of bucket %s released %s but is %s less %s advanced', ca.seq, ca.bucket_id, ce.amount, ca.amount, ca.advanced)
      FROM credit_accruals ca
      JOIN credit_entries ce ON ce.idempotency_key = format('accrual:%s:%s', ca.bucket_id, ca.seq)
     WHERE (p_user IS NULL OR ca.user_id = p_user) AND ce.amount <> ca.amount - ca.advanced
$$;
