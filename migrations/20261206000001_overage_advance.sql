-- Overage starts only where the period's allotment ends; overage always has a bound.
--
-- What changed, and why:
-- - An allotment accrues daily (5,000 credits a month arrive ~167 a day), so early in a
--   period the *released* balance is small while the plan pays for the whole month. With
--   overage on, credit_spend went into overage as soon as the released balance was short:
--   a Pro customer spending 3,000 credits on day one was billed ~1,800 credits the plan
--   already covers. Now a spend the released balance cannot cover first *advances* the
--   period's unreleased allotment: an `advance` entry into the allotment's bucket releases
--   credits early, and the pending daily releases it was taken from shrink by the same
--   amount (credit_accruals.advanced), latest days first, so the period's total is unchanged
--   and the coming days still release as planned until the advanced ones. Only what neither
--   the released credits nor the rest of the period's allotment can cover becomes overage.
--   With overage off nothing changes: a spend past the released balance is `insufficient`.
-- - The advance is decided with the overage, under the account row lock, and a spend past
--   the cap advances nothing (nothing happens at all).
-- - credit_maintain_locked releases a day's accrual less what was advanced from it (and
--   writes no entry for a day that was advanced whole).
-- - A plan whose metered price has no cap and a customer who set none: the period carries
--   Tally's default cap (OVERAGE_DEFAULT_CAP_CENTS), stored on the account by the new
--   credit_start_period overload, and credit_overage_room bounds overage by it.
-- - credit_ledger_problems learns two checks: a bucket's advance entries equal what its
--   accruals record as advanced, and each released day equals its amount less its advance.
--
-- Lock order is unchanged: the account row, then the spend's entry key; the accruals and the
-- allotment bucket are written under the account lock like every bucket. Keys: an advance
-- entry is `<spend key>#advance:<bucket id>`, a shape no caller can choose (credit_check_key
-- refuses '#').

ALTER TABLE credit_accruals ADD COLUMN advanced bigint NOT NULL DEFAULT 0;
ALTER TABLE credit_accruals ADD CONSTRAINT credit_accruals_advanced_check CHECK (advanced >= 0 AND advanced <= amount);

ALTER TABLE credit_entries DROP CONSTRAINT credit_entries_kind_check;
ALTER TABLE credit_entries ADD CONSTRAINT credit_entries_kind_check
    CHECK (kind IN ('free_grant', 'allotment', 'daily_accrual', 'purchase', 'spend',
                    'refund_clawback', 'adjustment', 'expiry', 'overage', 'advance'));

-- Tally's default cap for a period whose metered price has none (NULL: the price has one).
ALTER TABLE credit_accounts ADD COLUMN overage_default_cap_cents bigint CHECK (overage_default_cap_cents >= 0);

-- As before, with the default cap. Callers move to this one; the 8-argument one stays until
-- no released binary calls it (it leaves the default cap as it was).
CREATE FUNCTION credit_start_period(p_user uuid, p_key text, p_start timestamptz, p_end timestamptz,
                                    p_allotment bigint, p_unit_cents bigint, p_cap_cents bigint, p_open boolean,
                                    p_default_cap_cents bigint)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO credit_accounts (user_id) VALUES (p_user) ON CONFLICT DO NOTHING;
    UPDATE credit_accounts a
       SET period_allotment = CASE WHEN a.period_key = p_key THEN greatest(a.period_allotment, p_allotment) ELSE p_allotment END,
           period_spent = CASE WHEN a.period_key = p_key THEN a.period_spent ELSE 0 END,
           period_overage = CASE WHEN a.period_key = p_key THEN a.period_overage ELSE 0 END,
           period_key = p_key, period_start = p_start, period_end = p_end,
           overage_unit_cents = p_unit_cents, overage_cap_cents = p_cap_cents, overage_open = p_open,
           overage_default_cap_cents = CASE WHEN p_cap_cents IS NULL THEN p_default_cap_cents END
     WHERE a.user_id = p_user AND (a.period_start IS NULL OR a.period_start <= p_start);
END $$;

-- The most overage credits the account may still take this period (NULL: no overage, see
-- the previous definition). Bounded always: the lower of the plan's and the user's caps, or
-- Tally's default cap when neither has one; a period with none of the three (only rows
-- written before this migration) takes no overage.
CREATE OR REPLACE FUNCTION credit_overage_room(a credit_accounts, p_now timestamptz) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN NOT a.overage_allowed OR NOT a.overage_open OR a.overage_unit_cents IS NULL OR a.period_end IS NULL
          OR a.period_end - interval '10 minutes' <= p_now OR a.period_start > p_now THEN NULL
        ELSE greatest(0, coalesce(least(a.overage_cap_cents, a.user_cap_cents), a.overage_default_cap_cents, 0)
                         / a.overage_unit_cents - a.period_overage)
    END
$$;

-- Credits of the current period's allotment not yet released at p_now: the pending daily
-- releases due before the period ends, less what was already advanced from them.
CREATE FUNCTION credit_advanceable(p_user uuid, p_period_end timestamptz, p_now timestamptz) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(a.amount - a.advanced), 0)::bigint
      FROM credit_accruals a JOIN credit_buckets b ON b.id = a.bucket_id
     WHERE a.user_id = p_user AND a.applied_at IS NULL AND a.advanced < a.amount AND b.kind = 'allotment'
       AND a.due_at > p_now AND a.due_at < p_period_end AND (b.expires_at IS NULL OR a.due_at < b.expires_at)
$$;

-- Releases p_amount credits of the period's allotment now, taken from the latest pending
-- days first: one `advance` entry per allotment bucket touched. The caller holds the account
-- row lock, has checked p_amount <= credit_advanceable(...), and adds p_amount to the
-- account's balance in its own update of the row.
CREATE FUNCTION credit_advance(p_user uuid, p_key text, p_amount bigint, p_period_key text,
                               p_period_end timestamptz, p_now timestamptz)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_buckets bigint[];
    v_sums bigint[];
    v_days integer[];
    v_taken bigint;
BEGIN
    WITH pending AS (
        SELECT a.bucket_id, a.seq, a.amount - a.advanced AS free,
               sum(a.amount - a.advanced) OVER (ORDER BY a.due_at DESC, a.bucket_id DESC, a.seq DESC) AS upto
          FROM credit_accruals a JOIN credit_buckets b ON b.id = a.bucket_id
         WHERE a.user_id = p_user AND a.applied_at IS NULL AND a.advanced < a.amount AND b.kind = 'allotment'
           AND a.due_at > p_now AND a.due_at < p_period_end AND (b.expires_at IS NULL OR a.due_at < b.expires_at)
    ), takes AS (
        SELECT bucket_id, seq, least(free, p_amount - (upto - free)) AS take FROM pending WHERE upto - free < p_amount
    ), moved AS (
        UPDATE credit_accruals a SET advanced = a.advanced + t.take
          FROM takes t WHERE a.bucket_id = t.bucket_id AND a.seq = t.seq
        RETURNING a.bucket_id, t.take
    )
    SELECT array_agg(bucket_id ORDER BY bucket_id), array_agg(s ORDER BY bucket_id), array_agg(n ORDER BY bucket_id)
      INTO v_buckets, v_sums, v_days
      FROM (SELECT bucket_id, sum(take)::bigint AS s, count(*)::integer AS n FROM moved GROUP BY bucket_id) x;
    v_taken := 0;
    FOR i IN 1 .. coalesce(array_length(v_buckets, 1), 0) LOOP
        INSERT INTO credit_entries (user_id, bucket_id, kind, amount, idempotency_key, metadata, effective_at)
        VALUES (p_user, v_buckets[i], 'advance', v_sums[i], format('%s#advance:%s', p_key, v_buckets[i]),
                jsonb_build_object('period', p_period_key, 'days', v_days[i]), p_now);
        UPDATE credit_buckets SET remaining = remaining + v_sums[i] WHERE id = v_buckets[i];
        v_taken := v_taken + v_sums[i];
    END LOOP;
    IF v_taken <> p_amount THEN
        RAISE EXCEPTION 'credit_advance: % of % credits could be advanced for %', v_taken, p_amount, p_user;
    END IF;
END $$;

-- As before, except that a day's release is its amount less what was advanced from it.
CREATE OR REPLACE FUNCTION credit_maintain_locked(p_user uuid, p_now timestamptz) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    r record;
    v_delta bigint := 0;
    v_carry bigint;
    v_new_bucket bigint;
BEGIN
    FOR r IN
        SELECT a.bucket_id, a.seq, a.amount - a.advanced AS amount, a.due_at, a.entry_kind, b.expires_at
          FROM credit_accruals a JOIN credit_buckets b ON b.id = a.bucket_id
         WHERE a.user_id = p_user AND a.applied_at IS NULL AND a.due_at <= p_now
         ORDER BY a.bucket_id, a.seq
    LOOP
        UPDATE credit_accruals SET applied_at = p_now WHERE bucket_id = r.bucket_id AND seq = r.seq;
        -- A day that falls due after its bucket expired adds nothing (the period is over), nor
        -- does a day that was advanced whole.
        CONTINUE WHEN r.expires_at IS NOT NULL AND r.expires_at <= r.due_at;
        CONTINUE WHEN r.amount = 0;
        INSERT INTO credit_entries (user_id, bucket_id, kind, amount, idempotency_key, metadata, effective_at)
        VALUES (p_user, r.bucket_id, r.entry_kind, r.amount, format('accrual:%s:%s', r.bucket_id, r.seq),
                jsonb_build_object('day', r.seq), r.due_at);
        UPDATE credit_buckets SET remaining = remaining + r.amount WHERE id = r.bucket_id;
        v_delta := v_delta + r.amount;
    END LOOP;

    FOR r IN
        SELECT id, remaining, expires_at, kind, source_key, metadata FROM credit_buckets
         WHERE user_id = p_user AND remaining > 0 AND expires_at IS NOT NULL AND expires_at <= p_now
         ORDER BY id FOR NO KEY UPDATE
    LOOP
        INSERT INTO credit_entries (user_id, bucket_id, kind, amount, idempotency_key, metadata, effective_at)
        VALUES (p_user, r.id, 'expiry', -r.remaining, format('expiry:%s:%s', r.id, r.expires_at), '{}', r.expires_at);
        UPDATE credit_buckets SET remaining = 0 WHERE id = r.id;
        v_delta := v_delta - r.remaining;
        v_carry := CASE WHEN r.kind = 'allotment' THEN least(r.remaining, coalesce((r.metadata ->> 'rollover_cap')::bigint, 0)) ELSE 0 END;
        IF v_carry > 0 THEN
            INSERT INTO credit_buckets (user_id, kind, burn_rank, source_key, expires_at, metadata)
            VALUES (p_user, 'allotment', 0, 'rollover:' || r.source_key,
                    r.expires_at + make_interval(secs => coalesce((r.metadata ->> 'period_seconds')::double precision, 2592000)),
                    jsonb_build_object('rollover_from', r.source_key))
            ON CONFLICT ON CONSTRAINT credit_buckets_source_key DO NOTHING
            RETURNING id INTO v_new_bucket;
            IF v_new_bucket IS NOT NULL THEN
                INSERT INTO credit_entries (user_id, bucket_id, kind, amount, idempotency_key, metadata, effective_at)
                VALUES (p_user, v_new_bucket, 'allotment', v_carry, 'rollover:' || r.source_key,
                        jsonb_build_object('rollover_from', r.source_key), r.expires_at);
                UPDATE credit_buckets SET remaining = v_carry WHERE id = v_new_bucket;
                v_delta := v_delta + v_carry;
            END IF;
        END IF;
    END LOOP;

    UPDATE credit_accounts
       SET balance = balance + v_delta, next_event_at = credit_next_event(p_user), updated_at = p_now
     WHERE user_id = p_user;
    RETURN v_delta;
END $$;

-- As before (20261202000009), with the advance: see the header.
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
    v_counted bigint;
    v_over bigint := 0;
    v_bucket bigint;
    v_adv bigint := 0;
    v_room bigint;
    v_acct credit_accounts;
    v_before bigint;
    r record;
BEGIN
    PERFORM credit_check_key(p_key, true);
    IF p_cost <= 0 THEN
        RAISE EXCEPTION 'credit_spend: cost must be positive, got %', p_cost;
    END IF;
    -- Fast path: nothing falls due, enough credits. Locks and debits the account, and counts
    -- the spend in its period, in one statement. (A retry of a committed spend is caught below
    -- by the entry's unique key.)
    UPDATE credit_accounts a SET balance = a.balance - p_cost, updated_at = p_now,
           period_spent = a.period_spent + CASE WHEN p_kind = 'spend' AND a.period_end > p_now AND a.period_start <= p_now THEN p_cost ELSE 0 END
     WHERE a.user_id = p_user AND a.balance >= p_cost AND (a.next_event_at IS NULL OR a.next_event_at > p_now)
    RETURNING a.* INTO v_acct;
    IF FOUND THEN
        v_balance := v_acct.balance;
        v_before := v_balance + p_cost;
    ELSE
        -- Slow path. A retry must get its first answer even if the balance is now too low.
        SELECT p.spent, p.balance INTO spent, balance FROM credit_prior_spend(p_user, p_key) p;
        IF spent IS NOT NULL THEN
            status := 'duplicate';
            RETURN;
        END IF;
        -- Apply what fell due (accruals, expiries), then decide.
        SELECT * INTO v_acct FROM credit_accounts x WHERE x.user_id = p_user FOR NO KEY UPDATE;
        IF NOT FOUND THEN
            status := 'insufficient'::text; spent := 0::bigint; balance := 0::bigint;
            RETURN;
        END IF;
        v_balance := v_acct.balance;
        IF v_acct.next_event_at IS NOT NULL AND v_acct.next_event_at <= p_now THEN
            v_balance := v_balance + credit_maintain_locked(p_user, p_now);
        END IF;
        v_before := v_balance;
        IF v_balance < p_cost THEN
            v_room := CASE WHEN p_kind = 'spend' THEN credit_overage_room(v_acct, p_now) END;
            IF v_room IS NULL THEN
                status := 'insufficient'::text; spent := 0::bigint; balance := v_balance;
                RETURN;
            END IF;
            -- Overage is on. The same key may have committed while this call waited for the lock.
            SELECT p.spent, p.balance INTO spent, balance FROM credit_prior_spend(p_user, p_key) p;
            IF spent IS NOT NULL THEN
                status := 'duplicate';
                RETURN;
            END IF;
            -- First the rest of the period's allotment (released early), then overage for
            -- what even the whole period's allotment does not cover.
            v_adv := least(p_cost - v_balance, credit_advanceable(p_user, v_acct.period_end, p_now));
            v_over := p_cost - v_balance - v_adv;
            IF v_over > v_room THEN
                status := 'over_cap'::text; spent := 0::bigint; balance := v_balance;
                RETURN;
            END IF;
            IF v_adv > 0 THEN
                PERFORM credit_advance(p_user, p_key, v_adv, v_acct.period_key, v_acct.period_end, p_now);
                v_balance := v_balance + v_adv;
            END IF;
        END IF;
        IF v_over > 0 THEN
            INSERT INTO credit_buckets (user_id, kind, burn_rank, source_key, expires_at, metadata)
            VALUES (p_user, 'overage', 9, 'overage:' || v_acct.period_key, NULL,
                    jsonb_build_object('period_start', v_acct.period_start, 'period_end', v_acct.period_end, 'unit_cents', v_acct.overage_unit_cents))
            ON CONFLICT ON CONSTRAINT credit_buckets_source_key DO UPDATE SET metadata = credit_buckets.metadata
            RETURNING id INTO v_bucket;
            INSERT INTO credit_entries (user_id, bucket_id, kind, amount, idempotency_key, metadata, effective_at)
            VALUES (p_user, v_bucket, 'overage', v_over, p_key || '#overage',
                    jsonb_build_object('period', v_acct.period_key, 'unit_cents', v_acct.overage_unit_cents), p_now);
            UPDATE credit_buckets SET remaining = remaining + v_over WHERE id = v_bucket;
            UPDATE credit_accounts x SET period_overage = x.period_overage + v_over WHERE x.user_id = p_user;
            v_balance := v_balance + v_over;
        END IF;
        UPDATE credit_accounts x SET balance = v_balance - p_cost, updated_at = p_now,
               period_spent = x.period_spent + CASE WHEN p_kind = 'spend' AND x.period_end > p_now AND x.period_start <= p_now THEN p_cost ELSE 0 END
         WHERE x.user_id = p_user RETURNING x.* INTO v_acct;
        v_balance := v_acct.balance;
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
            IF v_over > 0 OR v_adv > 0 THEN
                -- Advance and overage checked for a prior spend under the account lock, so this is a bug.
                RAISE EXCEPTION 'credit_spend: key % committed during an overage spend', p_key;
            END IF;
            -- A retry: this key already committed (earlier, or while we waited for the account
            -- lock). Undo our debit and answer with the first result.
            UPDATE credit_accounts x SET balance = x.balance + p_cost,
                   period_spent = x.period_spent - CASE WHEN p_kind = 'spend' AND x.period_end > p_now AND x.period_start <= p_now THEN p_cost ELSE 0 END
             WHERE x.user_id = p_user;
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

    -- Alerts this spend crossed (rare: only then does the spend write anything more).
    IF p_kind = 'spend' AND v_acct.period_key IS NOT NULL AND v_acct.period_end > p_now AND v_acct.period_start <= p_now THEN
        v_counted := v_acct.period_spent - p_cost;
        -- Only a spend that crossed a line writes (and notifies): checked here first.
        IF v_acct.period_allotment > 0 AND EXISTS (
               SELECT 1 FROM unnest(ARRAY[80, 100, 150]) t
                WHERE v_counted * 100 < t * v_acct.period_allotment AND v_acct.period_spent * 100 >= t * v_acct.period_allotment) THEN
            INSERT INTO usage_alerts (user_id, period_key, alert, fired_at, entry_key, balance, period_spent, allotment)
            SELECT p_user, v_acct.period_key, 'percent_' || t, p_now, p_key, v_balance, v_acct.period_spent, v_acct.period_allotment
              FROM unnest(ARRAY[80, 100, 150]) t
             WHERE v_counted * 100 < t * v_acct.period_allotment AND v_acct.period_spent * 100 >= t * v_acct.period_allotment
            ON CONFLICT DO NOTHING;
        END IF;
        IF v_over > 0 AND v_acct.period_overage = v_over THEN
            INSERT INTO usage_alerts (user_id, period_key, alert, fired_at, entry_key, balance, period_spent, allotment)
            VALUES (p_user, v_acct.period_key, 'overage', p_now, p_key, v_balance, v_acct.period_spent, v_acct.period_allotment)
            ON CONFLICT DO NOTHING;
        END IF;
    END IF;
    IF p_kind = 'spend' AND v_acct.alert_below IS NOT NULL AND v_balance < v_acct.alert_below AND v_before >= v_acct.alert_below THEN
        INSERT INTO usage_alerts (user_id, period_key, alert, fired_at, entry_key, balance, period_spent, allotment)
        VALUES (p_user, coalesce(v_acct.period_key, 'none'), 'below:' || v_acct.alert_below, p_now, p_key, v_balance, v_acct.period_spent, v_acct.period_allotment)
        ON CONFLICT DO NOTHING;
    END IF;
    status := 'spent'; spent := p_cost; balance := v_balance;
END $$;

-- The ledger's checks, with the two about advances.
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
    SELECT a.user_id, format('period %s counts %s overage but its overage entries sum to %s', a.period_key, a.period_overage, coalesce(o.total, 0))
      FROM credit_accounts a
      LEFT JOIN (SELECT cb.user_id, cb.source_key, sum(ce.amount) AS total FROM credit_buckets cb
                   JOIN credit_entries ce ON ce.bucket_id = cb.id AND ce.kind = 'overage'
                  WHERE cb.kind = 'overage' GROUP BY cb.user_id, cb.source_key) o
        ON o.user_id = a.user_id AND o.source_key = 'overage:' || a.period_key
     WHERE (p_user IS NULL OR a.user_id = p_user) AND a.period_key IS NOT NULL AND a.period_overage <> coalesce(o.total, 0)
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
