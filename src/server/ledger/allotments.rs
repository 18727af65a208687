//! Subscription allotments: a period's credits as they accrue, a mid-period upgrade's extra,
//! and their end.

use super::*;

/// The level a period's allotment was granted at (higher after an upgrade), if it was.
pub async fn period_level(
    pool: &PgPool,
    user_id: Uuid,
    subscription_id: &str,
    period_start: DateTime<Utc>,
) -> Result<Option<i64>, sqlx::Error> {
    Ok(sqlx::query_scalar(
        "SELECT (metadata->>'level')::bigint FROM credit_buckets WHERE user_id = $1 AND source_key = $2",
    )
    .bind(user_id)
    .bind(allotment_source(subscription_id, period_start))
    .fetch_optional(pool)
    .await?
    .flatten())
}

/// Identifies one subscription period's allotment bucket.
pub fn allotment_source(subscription_id: &str, period_start: DateTime<Utc>) -> String {
    format!("allotment:{subscription_id}:{}", period_start.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// One billing period of one subscription: what an allotment is granted for.
#[derive(Debug, Clone, Copy)]
pub struct Period<'a> {
    pub user_id: Uuid,
    pub subscription_id: &'a str,
    /// The plan's slug, kept on the bucket for the history.
    pub plan: &'a str,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// A mid-period upgrade: the new plan's allotment for a whole period, accruing as `policy`
/// says over days that begin at `day_boundary`.
#[derive(Debug, Clone, Copy)]
pub struct Upgrade {
    pub new_allotment: i64,
    pub policy: crate::domain::credits::AllotmentPolicy,
    pub day_boundary: chrono::FixedOffset,
}

/// Starts a subscription period's allotment: `schedule` (see `domain::credits`) says when its
/// credits become spendable; they expire at the period's end, except up to `rollover_cap`
/// unspent credits, which carry over for one more period. Once per (subscription, period
/// start), however often a renewal is signalled.
pub async fn start_allotment(
    conn: &mut PgConnection,
    period: &Period<'_>,
    schedule: Vec<Accrual>,
    rollover_cap: i64,
    now: DateTime<Utc>,
) -> Result<GrantOutcome, sqlx::Error> {
    let Period { user_id, subscription_id, plan, start: period_start, end: period_end } = *period;
    let total: i64 = schedule.iter().map(|a| a.amount).sum();
    let source = allotment_source(subscription_id, period_start);
    if total <= 0 {
        return Ok(GrantOutcome { applied: false, balance: current_balance(conn, user_id).await? });
    }
    grant(
        conn,
        &Grant {
            user_id,
            bucket: BucketKind::Allotment,
            entry_kind: "allotment",
            source_key: source.clone(),
            amount: total,
            expires_at: Some(period_end),
            key: source,
            // `level`: the largest monthly allotment this period has been granted at (see
            // `upgrade_allotment`).
            metadata: json!({
                "subscription_id": subscription_id,
                "plan": plan,
                "period_end": period_end,
                "level": total,
                "rollover_cap": rollover_cap.max(0),
                "period_seconds": (period_end - period_start).num_seconds(),
            }),
            schedule: Some(schedule),
        },
        now,
    )
    .await
}

/// A mid-period upgrade to a plan with `upgrade.new_allotment` credits a period: grants
/// `domain::credits::upgrade_extra` more, spread like the allotment over the rest of the
/// period, into the period's bucket, and raises the period's level. Idempotent per (period,
/// new level); a downgrade or a return to a level already granted adds nothing. Returns the
/// extra credits granted by this call.
pub async fn upgrade_allotment(
    conn: &mut PgConnection,
    period: &Period<'_>,
    upgrade: Upgrade,
    now: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    let Period { user_id, subscription_id, plan: new_plan, start: period_start, end: period_end } = *period;
    let Upgrade { new_allotment, policy, day_boundary } = upgrade;
    let source = allotment_source(subscription_id, period_start);
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    // Lock order: the account row, then the bucket (as in the SQL functions).
    sqlx::query("SELECT 1 FROM credit_accounts WHERE user_id = $1 FOR NO KEY UPDATE")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    let level: Option<i64> = sqlx::query_scalar("SELECT (metadata->>'level')::bigint FROM credit_buckets WHERE user_id = $1 AND source_key = $2 FOR NO KEY UPDATE")
        .bind(user_id)
        .bind(&source)
        .fetch_optional(&mut *tx)
        .await?
        .flatten();
    let Some(level) = level else {
        tx.commit().await?;
        return Ok(0);
    };
    let extra = crate::domain::credits::upgrade_extra(level, new_allotment, period_start, period_end, now);
    if extra > 0 {
        let schedule = crate::domain::credits::allotment_schedule(policy, extra, now, period_end, day_boundary);
        let outcome = grant(
            &mut tx,
            &Grant {
                user_id,
                bucket: BucketKind::Allotment,
                entry_kind: "allotment",
                source_key: source.clone(),
                amount: extra,
                expires_at: Some(period_end),
                key: format!("upgrade:{source}:{new_allotment}"),
                metadata: json!({ "subscription_id": subscription_id, "plan": new_plan, "upgrade_from_level": level }),
                schedule: Some(schedule),
            },
            now,
        )
        .await?;
        if !outcome.applied {
            tx.commit().await?;
            return Ok(0);
        }
        sqlx::query("UPDATE credit_buckets SET metadata = metadata || jsonb_build_object('level', $3::bigint, 'plan', $4::text) WHERE user_id = $1 AND source_key = $2")
            .bind(user_id)
            .bind(&source)
            .bind(new_allotment)
            .bind(new_plan)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(extra)
}

/// Ends a period's allotment at `at` (a revoked subscription): unspent credits expire and the
/// remaining days never accrue. Purchased and free credits are untouched.
pub async fn end_allotment(
    conn: &mut PgConnection,
    user_id: Uuid,
    subscription_id: &str,
    period_start: DateTime<Utc>,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT credit_end_bucket($1, $2, $3, $4)")
        .bind(user_id)
        .bind(allotment_source(subscription_id, period_start))
        .bind(at)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// A new period began at `period_start`: the subscription's allotments of earlier periods end
/// then, even if their period was meant to last longer (a renewal that came early, a billing
/// cycle reset). Nothing happens to periods that already ended by then.
pub async fn end_earlier_allotments(
    conn: &mut PgConnection,
    user_id: Uuid,
    subscription_id: &str,
    period_start: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    // Source keys are `allotment:<subscription>:<period start, RFC 3339 seconds, UTC>`, so
    // for one subscription an earlier period sorts before a later one.
    let earlier: Vec<String> = sqlx::query_scalar(
        "SELECT source_key FROM credit_buckets
          WHERE user_id = $1 AND kind = 'allotment' AND source_key LIKE $2 AND source_key < $3
            AND (expires_at IS NULL OR expires_at > $4)",
    )
    .bind(user_id)
    .bind(format!("allotment:{subscription_id}:%"))
    .bind(allotment_source(subscription_id, period_start))
    .bind(period_start)
    .fetch_all(&mut *conn)
    .await?;
    for key in earlier {
        sqlx::query("SELECT credit_end_bucket($1, $2, $3, $4)")
            .bind(user_id)
            .bind(&key)
            .bind(period_start)
            .bind(now)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
