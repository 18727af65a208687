-- Overage (opt-in, per plan and per user) and usage alerts, decided inside the spend.
--
-- What changed in credit_spend (same signature, replaced below):
-- - Each account carries its current billing period (credit_start_period sets it from the
--   subscription): the period's allotment, the credits spent in it and the overage in it,
--   counted by the spend's own UPDATE of the account row (no extra statement on the hot path).
-- - A spend the balance cannot cover may go into overage when the period's plan has a metered
--   price (Polar bills it at the cycle end) and the user opted in: the shortfall is first
--   granted into the period's `overage` bucket as an `overage` entry (keyed `<key>#overage`, a
--   shape no caller can choose), then spent like any credit. So the balance never goes below
--   zero, the ledger still sums, and the overage is its own entry kind. A spend that would take
--   the period's overage past the cap (the plan's, or the user's lower one) is refused as
--   `over_cap`, nothing spent.
-- - Crossing 80 %, 100 % or 150 % of the period's allotment, the start of overage, and the
--   balance falling under the user's threshold record one usage_alerts row, keyed by (user,
--   period, alert): the account row lock orders concurrent spends, and the key makes it once.
--   The mail worker turns new alerts into mail (src/server/usage/alerts.rs).
-- - Overage entries go to the usage outbox as `credits.overage` events (Polar's metered price
--   counts them); spends stay `credits.spent`.
--
-- Lock order is unchanged: the account row, then its entry key; the overage bucket is written
-- under the account lock like every bucket. `overage:` joins the key prefixes the ledger
-- reserves (credit_check_key).

-- `overage:` keys the ledger's own overage buckets: no caller may use it.
CREATE OR REPLACE FUNCTION credit_check_key(p_key text, p_spend boolean) RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_key IS NULL OR length(p_key) = 0 OR length(p_key) > 300 THEN
        RAISE EXCEPTION 'ledger key must be 1 to 300 characters' USING ERRCODE = '22023';
    END IF;
    IF strpos(p_key, '#') > 0 OR p_key ~ '^(accrual|expiry|rollover|overage):' THEN
        RAISE EXCEPTION 'ledger key % has a shape the ledger reserves for its own entries', p_key USING ERRCODE = '22023';
    END IF;
    IF p_spend AND p_key ~ '^(free|order|refund|allotment|upgrade):' THEN
        RAISE EXCEPTION 'ledger key % is in a grant''s namespace and cannot key a spend', p_key USING ERRCODE = '22023';
    END IF;
END $$;

ALTER TABLE credit_buckets DROP CONSTRAINT credit_buckets_kind_check;
ALTER TABLE credit_buckets ADD CONSTRAINT credit_buckets_kind_check
    CHECK (kind IN ('free', 'allotment', 'purchase', 'adjustment', 'overage'));
ALTER TABLE credit_entries DROP CONSTRAINT credit_entries_kind_check;
ALTER TABLE credit_entries ADD CONSTRAINT credit_entries_kind_check
    CHECK (kind IN ('free_grant', 'allotment', 'daily_accrual', 'purchase', 'spend',
                    'refund_clawback', 'adjustment', 'expiry', 'overage'));

-- The current billing period of the account (none until a subscription starts one). Not
-- indexed: the spend's UPDATE of this row stays a HOT update.
ALTER TABLE credit_accounts
    ADD COLUMN period_key        text,
    ADD COLUMN period_start      timestamptz,
    ADD COLUMN period_end        timestamptz,
    ADD COLUMN period_allotment  bigint NOT NULL DEFAULT 0,
    ADD COLUMN period_spent      bigint NOT NULL DEFAULT 0,
    ADD COLUMN period_overage    bigint NOT NULL DEFAULT 0,
    -- The period's metered price (whole cents per credit) and its cap; NULL: no overage. Kept
    -- for the whole period (what has been run up is billed under it)...
    ADD COLUMN overage_unit_cents bigint CHECK (overage_unit_cents > 0),
    ADD COLUMN overage_cap_cents  bigint CHECK (overage_cap_cents >= 0),
    -- ...while new overage is taken only while the subscription is active and set to renew.
    ADD COLUMN overage_open       boolean NOT NULL DEFAULT false,
    -- The user's settings the spend needs (copied from usage_settings when saved).
    ADD COLUMN overage_allowed    boolean NOT NULL DEFAULT false,
    ADD COLUMN user_cap_cents     bigint CHECK (user_cap_cents >= 0),
    ADD COLUMN alert_below        bigint CHECK (alert_below > 0);

-- What each user chose (settings/billing). The spend reads the copies on credit_accounts.
CREATE TABLE usage_settings (
    user_id          uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    overage_allowed  boolean NOT NULL DEFAULT false,
    -- The most overage the user lets one period cost, in cents; NULL: the plan's cap.
    spend_cap_cents  bigint CHECK (spend_cap_cents >= 0),
    -- Alert when the balance falls under this many credits; NULL: never.
    alert_below      bigint CHECK (alert_below > 0),
    -- Which alerts the user gets (each also shows on the billing page).
    alert_percent    boolean NOT NULL DEFAULT true,
    alert_overage    boolean NOT NULL DEFAULT true,
    alert_email      boolean NOT NULL DEFAULT true,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- One row per alert that fired: at most one per (user, period, alert).
CREATE TABLE usage_alerts (
    user_id     uuid NOT NULL,
    period_key  text NOT NULL,
    -- 'percent_80', 'percent_100', 'percent_150', 'overage', 'below:<n>'
    alert       text NOT NULL,
    fired_at    timestamptz NOT NULL,
    -- The spend that crossed it, and what it left.
    entry_key   text NOT NULL,
    balance     bigint NOT NULL,
    period_spent bigint NOT NULL,
    allotment   bigint NOT NULL,
    -- Set once the mail worker has dealt with it (mailed, or not wanted).
    handled_at  timestamptz,
    dismissed_at timestamptz,
    PRIMARY KEY (user_id, period_key, alert)
);
CREATE INDEX usage_alerts_unhandled ON usage_alerts (fired_at) WHERE handled_at IS NULL;

-- The outbox learns which event a row is.
ALTER TABLE usage_outbox ADD COLUMN event text NOT NULL DEFAULT 'credits.spent';

CREATE OR REPLACE FUNCTION usage_outbox_from_spend() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO usage_outbox (user_id, external_id, units, occurred_at, event)
    VALUES (NEW.user_id, NEW.idempotency_key, abs(NEW.amount), NEW.effective_at,
            CASE NEW.kind WHEN 'overage' THEN 'credits.overage' ELSE 'credits.spent' END);
    RETURN NULL;
END $$;
DROP TRIGGER credit_entries_usage_outbox ON credit_entries;
CREATE TRIGGER credit_entries_usage_outbox AFTER INSERT ON credit_entries
    FOR EACH ROW WHEN (NEW.kind IN ('spend', 'overage')) EXECUTE FUNCTION usage_outbox_from_spend();

-- Starts (or re-states) the account's billing period. A period that starts earlier than the
-- current one is ignored (a late event); the same period keeps its counters and takes the
-- larger allotment (an upgrade); a new one starts them at zero.
CREATE FUNCTION credit_start_period(p_user uuid, p_key text, p_start timestamptz, p_end timestamptz,
                                    p_allotment bigint, p_unit_cents bigint, p_cap_cents bigint, p_open boolean)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO credit_accounts (user_id) VALUES (p_user) ON CONFLICT DO NOTHING;
    UPDATE credit_accounts a
       SET period_allotment = CASE WHEN a.period_key = p_key THEN greatest(a.period_allotment, p_allotment) ELSE p_allotment END,
           period_spent = CASE WHEN a.period_key = p_key THEN a.period_spent ELSE 0 END,
           period_overage = CASE WHEN a.period_key = p_key THEN a.period_overage ELSE 0 END,
           period_key = p_key, period_start = p_start, period_end = p_end,
           overage_unit_cents = p_unit_cents, overage_cap_cents = p_cap_cents, overage_open = p_open
     WHERE a.user_id = p_user AND (a.period_start IS NULL OR a.period_start <= p_start);
END $$;

-- Saves a user's usage settings and copies what the spend reads onto the account.
CREATE FUNCTION usage_save_settings(p_user uuid, p_overage boolean, p_cap bigint, p_below bigint,
                                    p_percent boolean, p_overage_alert boolean, p_email boolean)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    -- The account row first, as every writer of it (a spend, a deletion) takes it first.
    INSERT INTO credit_accounts (user_id) VALUES (p_user) ON CONFLICT DO NOTHING;
    PERFORM 1 FROM credit_accounts WHERE user_id = p_user FOR NO KEY UPDATE;
    INSERT INTO usage_settings (user_id, overage_allowed, spend_cap_cents, alert_below, alert_percent, alert_overage, alert_email, updated_at)
    VALUES (p_user, p_overage, p_cap, p_below, p_percent, p_overage_alert, p_email, now())
    ON CONFLICT (user_id) DO UPDATE SET overage_allowed = EXCLUDED.overage_allowed, spend_cap_cents = EXCLUDED.spend_cap_cents,
        alert_below = EXCLUDED.alert_below, alert_percent = EXCLUDED.alert_percent, alert_overage = EXCLUDED.alert_overage,
        alert_email = EXCLUDED.alert_email, updated_at = EXCLUDED.updated_at;
    UPDATE credit_accounts SET overage_allowed = p_overage, user_cap_cents = p_cap, alert_below = p_below WHERE user_id = p_user;
END $$;

-- The most overage credits the account may still take this period; NULL when its period has no
-- metered price, is not open to overage, or the user did not opt in (so a spend past the
-- balance is `insufficient`, not `over_cap`).
--
-- Overage closes 10 minutes before the period ends: Polar bills an event in the period it
-- *receives* it, so the last overage must reach Polar (the shipper sends within seconds)
-- before the cycle-end order, or it would be billed a period late, under the next period's
-- cap, or never if the subscription ends.
CREATE FUNCTION credit_overage_room(a credit_accounts, p_now timestamptz) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN NOT a.overage_allowed OR NOT a.overage_open OR a.overage_unit_cents IS NULL OR a.period_end IS NULL
          OR a.period_end - interval '10 minutes' <= p_now OR a.period_start > p_now THEN NULL
        -- least() ignores NULLs: the lower of the plan's and the user's caps; neither: no cap.
        ELSE greatest(0, coalesce(least(a.overage_cap_cents, a.user_cap_cents) / a.overage_unit_cents,
                                  9007199254740991) - a.period_overage)
    END
$$;

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
            IF p_kind <> 'spend' OR credit_overage_room(v_acct, p_now) IS NULL THEN
                status := 'insufficient'::text; spent := 0::bigint; balance := v_balance;
                RETURN;
            END IF;
            -- Overage. The same key may have committed while this call waited for the lock.
            SELECT p.spent, p.balance INTO spent, balance FROM credit_prior_spend(p_user, p_key) p;
            IF spent IS NOT NULL THEN
                status := 'duplicate';
                RETURN;
            END IF;
            v_over := p_cost - v_balance;
            IF v_over > credit_overage_room(v_acct, p_now) THEN
                status := 'over_cap'::text; spent := 0::bigint; balance := v_balance;
                RETURN;
            END IF;
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
            IF v_over > 0 THEN
                -- Overage checked for a prior spend under the account lock, so this is a bug.
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

-- The ledger's checks learn one more: a period's overage counter equals its overage entries.
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
$$;

-- The alert worker (src/server/usage/alerts.rs) listens: an alert is mailed within a second.
-- A statement trigger, delivered at commit; it runs only when a spend crossed a line.
CREATE FUNCTION usage_alerts_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tally_usage_alerts', '');
    RETURN NULL;
END $$;
CREATE TRIGGER usage_alerts_notify AFTER INSERT ON usage_alerts
    FOR EACH STATEMENT EXECUTE FUNCTION usage_alerts_notify();

-- What the last `tally polar reconcile` measured: per user and meter, the ledger's credits,
-- Polar's, and the events still on their way. /metrics reports the unexplained drift.
CREATE TABLE usage_drift (
    user_id     uuid NOT NULL,
    event       text NOT NULL,
    ledger      bigint NOT NULL,
    polar       bigint NOT NULL,
    in_flight   bigint NOT NULL,
    measured_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, event)
);
