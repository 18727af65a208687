-- The credit ledger. Credits are integers. Entries are append-only: a correction is a new entry.
--
-- credit_accounts.balance and credit_buckets.remaining are projections of credit_entries and
-- must always equal their sums (checked by credit_ledger_problems(), run after every test).
-- Every entry has an idempotency key under a UNIQUE constraint (credit_entries_key), and
-- every grant or clawback also a row in credit_operations under its business key, so a
-- retried webhook or request cannot take effect twice.
--
-- Lock order: grants and clawbacks take their operation key, then the account row, then
-- buckets in id order; spends take the account row, then their entry key. No cycle is
-- possible, so no deadlocks. One order means no deadlocks. Rows are locked FOR NO KEY UPDATE:
-- inserting an entry or operation takes a KEY SHARE lock on the account row through its
-- foreign key, and FOR UPDATE would conflict with that and deadlock concurrent spends.

CREATE TABLE credit_accounts (
    user_id       uuid PRIMARY KEY REFERENCES users (id),
    balance       bigint NOT NULL DEFAULT 0 CHECK (balance >= 0),
    -- Earliest moment a scheduled accrual falls due or a bucket expires; spends run the
    -- maintenance step only once now >= next_event_at, so the hot path stays one UPDATE.
    next_event_at timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 80);  -- room on each page for HOT updates: a spend rewrites this row

-- A source of credits with its own expiry and burn priority: the free grant, one period's
-- allotment, one purchased pack, an adjustment.
CREATE TABLE credit_buckets (
    id          bigserial PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES credit_accounts (user_id),
    kind        text NOT NULL CHECK (kind IN ('free', 'allotment', 'purchase', 'adjustment')),
    -- Burn order: lower first. Allotment 0 (expires soonest), purchase 1, adjustment 2, free 3.
    burn_rank   smallint NOT NULL,
    source_key  text NOT NULL,
    expires_at  timestamptz,
    remaining   bigint NOT NULL DEFAULT 0 CHECK (remaining >= 0),
    metadata    jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT credit_buckets_source_key UNIQUE (user_id, source_key)
) WITH (fillfactor = 80);
-- Not partial on `remaining > 0`: an index that mentions `remaining` would make every spend's
-- bucket update a non-HOT update that rewrites all of the table's indexes.
CREATE INDEX credit_buckets_burn_idx ON credit_buckets (user_id, burn_rank, expires_at, id);

-- One row per grant or clawback. The key is the business one (order id for a pack,
-- subscription id + period start for an allotment). `result` is what the first call answered,
-- returned again to retries. (A spend's key lives on its first entry instead: one insert
-- fewer on the hot path.)
CREATE TABLE credit_operations (
    id              bigserial PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES credit_accounts (user_id),
    kind            text NOT NULL,
    idempotency_key text NOT NULL CONSTRAINT credit_operations_key UNIQUE,
    result          jsonb,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE credit_entries (
    id              bigserial PRIMARY KEY,
    -- The grant or clawback this entry belongs to (NULL for spends, accruals and expiries,
    -- whose own key is their identity). No foreign keys to accounts or operations on this,
    -- the hottest table: the bucket's key already ties the entry to its account, and every
    -- writer is one of the functions below.
    operation_id    bigint,
    user_id         uuid NOT NULL,
    bucket_id       bigint NOT NULL REFERENCES credit_buckets (id),
    kind            text NOT NULL CHECK (kind IN ('free_grant', 'allotment', 'daily_accrual', 'purchase', 'spend',
                                                  'refund_clawback', 'adjustment', 'expiry')),
    amount          bigint NOT NULL CHECK (amount <> 0),
    idempotency_key text NOT NULL CONSTRAINT credit_entries_key UNIQUE,
    metadata        jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    effective_at    timestamptz NOT NULL
);
CREATE INDEX credit_entries_user_idx ON credit_entries (user_id, effective_at DESC, id DESC);

-- Append-only: entries are never changed or removed.
CREATE FUNCTION credit_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'credit_entries is append-only (% refused)', TG_OP;
END $$;
CREATE TRIGGER credit_entries_no_update BEFORE UPDATE OR DELETE ON credit_entries
    FOR EACH STATEMENT EXECUTE FUNCTION credit_entries_append_only();

-- Credits that become spendable later: the days of an allotment that accrues daily.
CREATE TABLE credit_accruals (
    bucket_id  bigint NOT NULL REFERENCES credit_buckets (id),
    seq        integer NOT NULL,
    user_id    uuid NOT NULL REFERENCES credit_accounts (user_id),
    due_at     timestamptz NOT NULL,
    amount     bigint NOT NULL CHECK (amount > 0),
    -- 'daily_accrual' for a day of a daily-accruing allotment, 'allotment' for all at once.
    entry_kind text NOT NULL DEFAULT 'daily_accrual',
    applied_at timestamptz,
    PRIMARY KEY (bucket_id, seq)
);
CREATE INDEX credit_accruals_pending_idx ON credit_accruals (user_id, due_at) WHERE applied_at IS NULL;

-- Every way the projections can disagree with the entries; empty means the ledger adds up.
-- p_user NULL checks every account.
CREATE FUNCTION credit_ledger_problems(p_user uuid DEFAULT NULL)
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
$$;

-- Recomputes an account's next_event_at from its pending accruals and expiring buckets.
CREATE FUNCTION credit_next_event(p_user uuid) RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT least(
        (SELECT min(due_at) FROM credit_accruals WHERE user_id = p_user AND applied_at IS NULL),
        (SELECT min(expires_at) FROM credit_buckets WHERE user_id = p_user AND remaining > 0 AND expires_at IS NOT NULL))
$$;

-- Applies what is due at p_now: accruals first (so a day's credits count), then expiries.
-- The caller holds the account row lock.
CREATE FUNCTION credit_maintain_locked(p_user uuid, p_now timestamptz) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    r record;
    v_delta bigint := 0;
    v_carry bigint;
    v_new_bucket bigint;
BEGIN
    FOR r IN
        SELECT a.bucket_id, a.seq, a.amount, a.due_at, a.entry_kind, b.expires_at
          FROM credit_accruals a JOIN credit_buckets b ON b.id = a.bucket_id
         WHERE a.user_id = p_user AND a.applied_at IS NULL AND a.due_at <= p_now
         ORDER BY a.bucket_id, a.seq
    LOOP
        UPDATE credit_accruals SET applied_at = p_now WHERE bucket_id = r.bucket_id AND seq = r.seq;
        -- A day that falls due after its bucket expired adds nothing (the period is over).
        CONTINUE WHEN r.expires_at IS NOT NULL AND r.expires_at <= r.due_at;
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
        -- A plan with a rollover cap carries up to that many unspent allotment credits into a
        -- bucket that lasts one more period (and does not roll over again).
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

-- Public entry point for the maintenance step (used by reads and the sweeper).
CREATE FUNCTION credit_maintain(p_user uuid, p_now timestamptz) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_next timestamptz;
BEGIN
    SELECT next_event_at INTO v_next FROM credit_accounts WHERE user_id = p_user FOR NO KEY UPDATE;
    IF v_next IS NULL OR v_next > p_now THEN
        RETURN 0;
    END IF;
    RETURN credit_maintain_locked(p_user, p_now);
END $$;

-- Grants p_amount credits into the bucket (p_user, p_source_key), creating it if needed.
-- Idempotent on p_key: a repeated call changes nothing and returns applied = false.
-- With p_schedule_due/p_schedule_amount, the credits become spendable on those dates instead
-- of now (a daily-accruing allotment); p_amount must then equal the schedule's sum.
CREATE FUNCTION credit_grant(
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

-- The answer a committed spend gave, for a retry with its key; refuses another account's key.
CREATE FUNCTION credit_prior_spend(p_user uuid, p_key text, OUT spent bigint, OUT balance bigint)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_user uuid;
    v_meta jsonb;
BEGIN
    SELECT e.user_id, e.metadata INTO v_user, v_meta FROM credit_entries e WHERE e.idempotency_key = p_key;
    IF FOUND AND v_user <> p_user THEN
        RAISE EXCEPTION 'credit_spend: key % belongs to another account', p_key;
    END IF;
    spent := (v_meta ->> 'spent')::bigint;
    balance := (v_meta ->> 'balance_after')::bigint;
END $$;

-- Spends p_cost credits atomically: all or nothing, never below zero, burning the credits
-- that expire soonest first. Idempotent on p_key: a retry returns the first result and spends
-- nothing. An insufficient balance records nothing, so the caller may retry after a top-up.
-- status: 'spent' | 'duplicate' | 'insufficient'.
--
-- This is the hot path, so it is shaped like the cheapest correct thing PostgreSQL can do: one
-- conditional UPDATE of the account row (which takes the row lock and checks the balance at
-- once) and one INSERT of the entry, whose unique key makes the spend idempotent. The first
-- entry of a spend carries the caller's key itself (a spend touching several buckets adds
-- `key#2`, `key#3`…) and records the spend's result for retries.
CREATE FUNCTION credit_spend(p_user uuid, p_cost bigint, p_key text, p_metadata jsonb, p_now timestamptz,
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

-- Takes back what is still unspent of the bucket (p_user, p_source_key), for a refunded pack.
-- Never goes below zero: what was already spent is recorded as the shortfall. Idempotent on p_key.
CREATE FUNCTION credit_clawback(p_user uuid, p_source_key text, p_key text, p_metadata jsonb, p_now timestamptz)
RETURNS TABLE (applied boolean, clawed_back bigint, shortfall bigint, balance bigint) LANGUAGE plpgsql AS $$
DECLARE
    v_op bigint;
    v_bucket bigint;
    v_remaining bigint;
    v_granted bigint;
    v_balance bigint;
    v_prev jsonb;
BEGIN
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

-- Ends a bucket at p_at (a revoked subscription's allotment): what is unspent then expires, and
-- days scheduled from p_at on never accrue. Idempotent: the earliest end wins.
CREATE FUNCTION credit_end_bucket(p_user uuid, p_source_key text, p_at timestamptz, p_now timestamptz)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_bucket bigint;
BEGIN
    PERFORM 1 FROM credit_accounts a WHERE a.user_id = p_user FOR NO KEY UPDATE;
    UPDATE credit_buckets SET expires_at = least(coalesce(expires_at, p_at), p_at)
     WHERE user_id = p_user AND source_key = p_source_key RETURNING id INTO v_bucket;
    IF v_bucket IS NULL THEN
        RETURN 0;
    END IF;
    UPDATE credit_accruals SET applied_at = p_now
     WHERE bucket_id = v_bucket AND applied_at IS NULL AND due_at >= p_at;
    UPDATE credit_accounts SET next_event_at = credit_next_event(p_user) WHERE user_id = p_user;
    IF p_at <= p_now THEN
        RETURN credit_maintain_locked(p_user, p_now);
    END IF;
    RETURN 0;
END $$;
