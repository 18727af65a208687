-- Refunds of credit packs, full and partial, in any order relative to the payment.
--
-- Polar's `order.refunded` carries the order's cumulative `refunded_amount`, which is net of
-- tax like `net_amount` (the tax refunded travels apart, in `refunded_tax_amount`). A pack's
-- clawback target is its credits × refunded ÷ net, rounded down (so a partial refund never
-- takes a credit more than its share), and all of them once the order is fully refunded.
-- `order_refunds` keeps the largest refund seen per order and how many credits have been
-- claimed back so far; settling takes the difference from the pack's bucket (what was already
-- spent is recorded as the shortfall). Deliveries repeated, reordered, or before the payment's
-- own event: the target only grows, so each credit is claimed once.
--
-- Lock order as everywhere: the account row, then the refund row, then the bucket.

CREATE TABLE order_refunds (
    order_id        text PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES users (id),
    refunded_net    bigint NOT NULL CHECK (refunded_net >= 0),
    net_amount      bigint NOT NULL CHECK (net_amount >= 0),
    fully_refunded  boolean NOT NULL DEFAULT false,
    claimed_credits bigint NOT NULL DEFAULT 0 CHECK (claimed_credits >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Claims back what the refunds of p_order entitle to, from its pack's bucket. Idempotent.
-- Returns what it took now and what it could not take (already spent).
CREATE FUNCTION credit_settle_pack_refund(p_user uuid, p_order text, p_now timestamptz,
                                          OUT clawed_back bigint, OUT shortfall bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_refund order_refunds%ROWTYPE;
    v_bucket bigint;
    v_remaining bigint;
    v_granted bigint;
    v_target bigint;
    v_delta bigint;
BEGIN
    clawed_back := 0;
    shortfall := 0;
    INSERT INTO credit_accounts (user_id) VALUES (p_user) ON CONFLICT DO NOTHING;
    PERFORM 1 FROM credit_accounts a WHERE a.user_id = p_user FOR NO KEY UPDATE;
    SELECT * INTO v_refund FROM order_refunds r WHERE r.order_id = p_order AND r.user_id = p_user FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT b.id, b.remaining INTO v_bucket, v_remaining FROM credit_buckets b
     WHERE b.user_id = p_user AND b.source_key = 'order:' || p_order FOR NO KEY UPDATE;
    IF v_bucket IS NULL THEN
        RETURN;  -- the payment's event has not arrived yet; its grant settles then
    END IF;
    SELECT coalesce(sum(e.amount), 0) INTO v_granted FROM credit_entries e
     WHERE e.bucket_id = v_bucket AND e.kind = 'purchase' AND e.amount > 0;
    v_target := CASE
        WHEN v_refund.fully_refunded OR v_refund.refunded_net >= v_refund.net_amount THEN v_granted
        ELSE floor(v_granted::numeric * v_refund.refunded_net / v_refund.net_amount)::bigint
    END;
    v_target := least(greatest(v_target, 0), v_granted);
    v_delta := v_target - v_refund.claimed_credits;
    IF v_delta <= 0 THEN
        RETURN;
    END IF;
    clawed_back := least(v_delta, v_remaining);
    shortfall := v_delta - clawed_back;
    IF clawed_back > 0 THEN
        INSERT INTO credit_entries (user_id, bucket_id, kind, amount, idempotency_key, metadata, effective_at)
        VALUES (p_user, v_bucket, 'refund_clawback', -clawed_back, format('refund:%s:%s', p_order, v_target),
                jsonb_build_object('order_id', p_order, 'refunded_net', v_refund.refunded_net, 'net_amount', v_refund.net_amount,
                                   'claimed_total', v_target, 'shortfall', shortfall),
                p_now);
        UPDATE credit_buckets SET remaining = remaining - clawed_back WHERE id = v_bucket;
        UPDATE credit_accounts a SET balance = a.balance - clawed_back, updated_at = p_now WHERE a.user_id = p_user;
    END IF;
    UPDATE order_refunds SET claimed_credits = v_target, updated_at = p_now WHERE order_id = p_order;
    UPDATE credit_accounts a SET next_event_at = credit_next_event(p_user) WHERE a.user_id = p_user;
END $$;

-- Records a refund of p_order as Polar reported it (cumulative, net of tax), keeping the
-- largest seen, then settles it.
CREATE FUNCTION credit_refund_pack(p_user uuid, p_order text, p_refunded_net bigint, p_net_amount bigint, p_fully boolean,
                                   p_now timestamptz, OUT clawed_back bigint, OUT shortfall bigint)
LANGUAGE plpgsql AS $$
BEGIN
    IF p_refunded_net < 0 OR p_net_amount < 0 THEN
        RAISE EXCEPTION 'credit_refund_pack: amounts must not be negative' USING ERRCODE = '22023';
    END IF;
    INSERT INTO credit_accounts (user_id) VALUES (p_user) ON CONFLICT DO NOTHING;
    PERFORM 1 FROM credit_accounts a WHERE a.user_id = p_user FOR NO KEY UPDATE;
    INSERT INTO order_refunds (order_id, user_id, refunded_net, net_amount, fully_refunded, updated_at)
    VALUES (p_order, p_user, p_refunded_net, p_net_amount, p_fully, p_now)
    ON CONFLICT (order_id) DO UPDATE
       SET refunded_net = greatest(order_refunds.refunded_net, EXCLUDED.refunded_net),
           net_amount = greatest(order_refunds.net_amount, EXCLUDED.net_amount),
           fully_refunded = order_refunds.fully_refunded OR EXCLUDED.fully_refunded,
           updated_at = EXCLUDED.updated_at
     WHERE order_refunds.user_id = EXCLUDED.user_id;
    SELECT s.clawed_back, s.shortfall INTO clawed_back, shortfall FROM credit_settle_pack_refund(p_user, p_order, p_now) s;
END $$;
