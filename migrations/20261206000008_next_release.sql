-- The next release a page announces is one that still releases something.
--
-- credit_balance_at (20261206000005) reported the earliest pending day as the next release,
-- even when that day had been advanced whole to a spend (overage on): the billing page said
-- "Next credits arrive Dec 7" for a day that will release nothing. Same function, with the
-- next release taken only among days that still hold credits.

CREATE OR REPLACE FUNCTION credit_balance_at(p_user uuid, p_now timestamptz,
                                  OUT total bigint, OUT allotment bigint, OUT purchased bigint, OUT free bigint,
                                  OUT adjustment bigint, OUT pending bigint, OUT next_at timestamptz)
LANGUAGE sql STABLE AS $$
    WITH b AS (
        SELECT cb.id, cb.kind, cb.source_key, cb.expires_at, cb.metadata,
               cb.remaining + coalesce((SELECT sum(a.amount - a.advanced) FROM credit_accruals a
                                         WHERE a.bucket_id = cb.id AND a.applied_at IS NULL AND a.due_at <= p_now
                                           AND (cb.expires_at IS NULL OR a.due_at < cb.expires_at)), 0) AS held
          FROM credit_buckets cb
         WHERE cb.user_id = p_user
    ), after AS (
        -- What each bucket holds once due releases and expiries are applied.
        SELECT b.kind, CASE WHEN b.expires_at IS NOT NULL AND b.expires_at <= p_now THEN 0 ELSE b.held END AS held
          FROM b
        UNION ALL
        -- The rollover an expiring allotment would carry, while that rollover is itself current.
        SELECT 'allotment', least(b.held, coalesce((b.metadata ->> 'rollover_cap')::bigint, 0))
          FROM b
         WHERE b.kind = 'allotment' AND b.expires_at IS NOT NULL AND b.expires_at <= p_now AND b.held > 0
           AND b.expires_at + make_interval(secs => coalesce((b.metadata ->> 'period_seconds')::double precision, 2592000)) > p_now
           AND NOT EXISTS (SELECT 1 FROM credit_buckets r WHERE r.user_id = p_user AND r.source_key = 'rollover:' || b.source_key)
    ), pend AS (
        SELECT sum(a.amount - a.advanced)::bigint AS pending, min(a.due_at) FILTER (WHERE a.advanced < a.amount) AS next_at
          FROM credit_accruals a JOIN credit_buckets cb ON cb.id = a.bucket_id
         WHERE a.user_id = p_user AND a.applied_at IS NULL AND a.due_at > p_now
           AND (cb.expires_at IS NULL OR a.due_at < cb.expires_at)
    )
    SELECT coalesce(sum(held), 0)::bigint,
           coalesce(sum(held) FILTER (WHERE kind = 'allotment'), 0)::bigint,
           coalesce(sum(held) FILTER (WHERE kind = 'purchase'), 0)::bigint,
           coalesce(sum(held) FILTER (WHERE kind = 'free'), 0)::bigint,
           coalesce(sum(held) FILTER (WHERE kind NOT IN ('allotment', 'purchase', 'free')), 0)::bigint,
           (SELECT coalesce(pending, 0) FROM pend),
           (SELECT next_at FROM pend)
      FROM after
$$;
