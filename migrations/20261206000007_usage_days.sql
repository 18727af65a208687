-- The billing page's cost independent of history (issue 24).
--
-- 1. `credit_usage_days`: credits spent per user and credit day, kept by a trigger on the
--    insert of every `spend` entry, in the same transaction as the entry. The billing page's
--    30-day chart reads at most 30 rows of it instead of every spend of the month. Spends of one
--    user are already serialized on their account row (see credit_spend), so the upsert adds no
--    new contention and no new lock order: account row, entry, then this row.
-- 2. The credit day is the operator's CREDIT_DAY_BOUNDARY. It lives in `ledger_settings` (one
--    row) so that every writer, the app or psql, files a spend under the same day;
--    `credit_usage_set_offset` changes it and rebuilds the rollup exactly (see there).
-- 3. `credit_maintain` first looks without a lock: maintaining an account with nothing due
--    (the janitor's common case; pages read the balance without it since
--    20261206000005_balance_read) takes no lock on the account row.
-- 4. `credit_ledger_problems` (as in 20261206000002) also checks every rollup row against the
--    entries.

CREATE TABLE ledger_settings (
    only_row               boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    -- Seconds east of UTC at which a credit day begins (CREDIT_DAY_BOUNDARY).
    credit_day_offset_secs integer NOT NULL DEFAULT 0 CHECK (abs(credit_day_offset_secs) < 86400)
);
INSERT INTO ledger_settings DEFAULT VALUES;

-- The credit day an instant falls in, for a day that begins `p_offset_secs` east of UTC.
CREATE FUNCTION credit_day_of(p_at timestamptz, p_offset_secs integer) RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ((p_at AT TIME ZONE 'UTC') + make_interval(secs => p_offset_secs))::date
$$;

CREATE TABLE credit_usage_days (
    user_id uuid NOT NULL,
    day     date NOT NULL,
    spent   bigint NOT NULL CHECK (spent >= 0),
    PRIMARY KEY (user_id, day)
) WITH (fillfactor = 70);  -- room for HOT updates: every spend of the day rewrites its row

CREATE FUNCTION credit_usage_from_spend() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO credit_usage_days AS d (user_id, day, spent)
    VALUES (NEW.user_id,
            credit_day_of(NEW.effective_at, (SELECT s.credit_day_offset_secs FROM ledger_settings s)),
            -NEW.amount)
    ON CONFLICT (user_id, day) DO UPDATE SET spent = d.spent + EXCLUDED.spent;
    RETURN NULL;
END $$;

CREATE TRIGGER credit_entries_usage_days AFTER INSERT ON credit_entries
    FOR EACH ROW WHEN (NEW.kind = 'spend') EXECUTE FUNCTION credit_usage_from_spend();

-- Backfill from the spends already recorded.
INSERT INTO credit_usage_days (user_id, day, spent)
SELECT user_id, credit_day_of(effective_at, 0), -sum(amount) FROM credit_entries WHERE kind = 'spend'
 GROUP BY 1, 2;

-- Sets the credit day's offset; when it changes, rebuilds the rollup from the entries.
-- Returns whether it changed. Exact under concurrent spends: the SHARE ROW EXCLUSIVE lock
-- waits for every transaction that is inserting entries (so each has filed its spend under the
-- old offset and committed) and holds new inserts until this commits, after which their
-- trigger reads the new offset.
CREATE FUNCTION credit_usage_set_offset(p_offset_secs integer) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT credit_day_offset_secs FROM ledger_settings) = p_offset_secs THEN
        RETURN false;
    END IF;
    LOCK TABLE credit_entries IN SHARE ROW EXCLUSIVE MODE;
    UPDATE ledger_settings SET credit_day_offset_secs = p_offset_secs;
    DELETE FROM credit_usage_days;
    INSERT INTO credit_usage_days (user_id, day, spent)
    SELECT user_id, credit_day_of(effective_at, p_offset_secs), -sum(amount) FROM credit_entries
     WHERE kind = 'spend' GROUP BY 1, 2;
    RETURN true;
END $$;

-- Rebuilds one user's rollup from their entries (`tally credits rebuild-usage EMAIL`, should
-- credit_ledger_problems ever report a day). Under the account row lock, like every writer of
-- the user's spends, so no spend of theirs is half-counted.
CREATE FUNCTION credit_usage_rebuild(p_user uuid) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_days integer;
BEGIN
    PERFORM 1 FROM credit_accounts WHERE user_id = p_user FOR NO KEY UPDATE;
    DELETE FROM credit_usage_days WHERE user_id = p_user;
    INSERT INTO credit_usage_days (user_id, day, spent)
    SELECT user_id, credit_day_of(effective_at, (SELECT credit_day_offset_secs FROM ledger_settings)), -sum(amount)
      FROM credit_entries WHERE user_id = p_user AND kind = 'spend' GROUP BY 1, 2;
    GET DIAGNOSTICS v_days = ROW_COUNT;
    RETURN v_days;
END $$;

CREATE OR REPLACE FUNCTION credit_maintain(p_user uuid, p_now timestamptz) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_next timestamptz;
BEGIN
    -- Nothing due by the committed state: done, without a lock. (A concurrent writer that is
    -- moving next_event_at earlier has not committed; this read is ordered before it.)
    SELECT next_event_at INTO v_next FROM credit_accounts WHERE user_id = p_user;
    IF v_next IS NULL OR v_next > p_now THEN
        RETURN 0;
    END IF;
    SELECT next_event_at INTO v_next FROM credit_accounts WHERE user_id = p_user FOR NO KEY UPDATE;
    IF v_next IS NULL OR v_next > p_now THEN
        RETURN 0;
    END IF;
    RETURN credit_maintain_locked(p_user, p_now);
END $$;

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
    UNION ALL
    SELECT coalesce(d.user_id, s.user_id),
           format('day %s: usage rollup says %s spent but spend entries sum to %s',
                  coalesce(d.day, s.day), coalesce(d.spent, 0), coalesce(s.total, 0))
      FROM (SELECT cud.user_id, cud.day, cud.spent FROM credit_usage_days cud
             WHERE p_user IS NULL OR cud.user_id = p_user) d
      FULL JOIN (SELECT ce.user_id, credit_day_of(ce.effective_at, (SELECT credit_day_offset_secs FROM ledger_settings)) AS day,
                        -sum(ce.amount) AS total
                   FROM credit_entries ce
                  WHERE ce.kind = 'spend' AND (p_user IS NULL OR ce.user_id = p_user)
                  GROUP BY 1, 2) s
        ON s.user_id = d.user_id AND s.day = d.day
     WHERE coalesce(d.spent, 0) <> coalesce(s.total, 0)
$$;
