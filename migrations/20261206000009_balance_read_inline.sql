-- The balance read, in a form the planner inlines.
--
-- credit_balance_at (20261206000008) returns one record through OUT parameters. PostgreSQL
-- inlines only set-returning SQL functions into the query that calls them; any other SQL
-- function runs through the SQL-function executor, which parses and plans its body on every
-- call. Under load on /billing that was about a third of PostgreSQL's CPU (perf: fmgr_sql,
-- raw_parser, the planner beneath ExecMakeTableFunctionResult). credit_balance_read is the
-- same read (one row, same columns, same rules) declared RETURNS TABLE: the caller's prepared
-- statement plans it once with the rest of the query.
--
-- A changed signature is a new function: the callers moved to this one, and
-- credit_balance_at stays until no released binary calls it (then a later migration drops it).

CREATE FUNCTION credit_balance_read(p_user uuid, p_now timestamptz)
RETURNS TABLE (total bigint, allotment bigint, purchased bigint, free bigint,
               adjustment bigint, pending bigint, next_at timestamptz)
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
