//! The scheduled reconcile. Subscriptions change at Polar and Tally hears of it by webhook;
//! when a webhook never arrives (the endpoint down for longer than Polar retries, about an
//! hour), a revocation would leave overage open and a renewal would leave a paying customer
//! with last period's credits. So every instance runs this loop, and whichever holds the
//! `reconcile` lease (a row in `job_leases`, renewed while it works, taken over once expired)
//! re-reads accounts from Polar through [`super::reconcile`], the same code as
//! `tally polar reconcile`:
//!
//! - which: accounts with a live subscription (active, trialing, past due) that neither a
//!   webhook nor a re-read has touched for `RECONCILE_EVERY_SECS` (default 600), those whose
//!   period has ended or whose overage is open first, then the longest waiting; so a lost
//!   revocation or renewal is applied within that and one pass (at the default pace, for up to
//!   ~100 accounts with live subscriptions; raise the pace for more);
//! - how fast: at most `RECONCILE_ACCOUNTS_PER_MINUTE` accounts a minute (default 10, about 30
//!   Polar requests: within the share of the quota page traffic leaves to background work),
//!   through the background client and its own breaker.

use super::Billing;
use super::{reconcile, subscriptions::LIVE_STATUSES};
use chrono::{DateTime, Duration, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// The lease's name in `job_leases`.
pub const LEASE: &str = "reconcile";

/// Takes (or renews) the lease `name` for `holder` until `now + ttl`, unless another holder's
/// lease is still running. Whether `holder` holds it now.
pub async fn take_lease(
    pool: &PgPool,
    name: &str,
    holder: &str,
    ttl: Duration,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let held: Option<String> = sqlx::query_scalar(
        "INSERT INTO job_leases (name, holder, expires_at) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
          WHERE job_leases.expires_at <= $4 OR job_leases.holder = EXCLUDED.holder
         RETURNING holder",
    )
    .bind(name)
    .bind(holder)
    .bind(now + ttl)
    .bind(now)
    .fetch_optional(pool)
    .await?;
    Ok(held.is_some())
}

/// Up to `limit` accounts due a re-read at `now`: a live subscription, neither re-read nor
/// changed by a webhook for `every`; ended periods and open overage first, then the longest
/// waiting.
pub async fn due_accounts(
    pool: &PgPool,
    now: DateTime<Utc>,
    every: Duration,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT s.user_id
           FROM subscriptions s
           JOIN users u ON u.id = s.user_id AND u.deleted_at IS NULL
           LEFT JOIN polar_customers pc ON pc.user_id = s.user_id
           LEFT JOIN credit_accounts a ON a.user_id = s.user_id
          WHERE s.status = ANY($1)
          GROUP BY s.user_id
         HAVING max(greatest(pc.reconciled_at, s.updated_at)) <= $2 - $3
          ORDER BY bool_or(s.current_period_end <= $2 OR coalesce(a.overage_open, false)) DESC,
                   max(greatest(pc.reconciled_at, s.updated_at)), s.user_id
          LIMIT $4",
    )
    .bind(&LIVE_STATUSES[..])
    .bind(now)
    .bind(every)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Records that `user` was re-read at `now` (whatever the outcome: a failure is retried after
/// `every`, not in a tight loop).
async fn mark(pool: &PgPool, user: Uuid, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO polar_customers (user_id, reconciled_at) VALUES ($1, $2)
         ON CONFLICT (user_id) DO UPDATE SET reconciled_at = EXCLUDED.reconciled_at",
    )
    .bind(user)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

/// One pass, if this instance holds the lease: how many accounts it re-read.
/// A pass runs every `tick` and takes its share of the minute's accounts.
pub async fn pass(
    billing: &Billing,
    holder: &str,
    tick: std::time::Duration,
    now: DateTime<Utc>,
) -> Result<usize, sqlx::Error> {
    let every = Duration::seconds(billing.config.reconcile_every_secs as i64);
    let per_minute = i64::from(billing.config.reconcile_accounts_per_minute);
    if per_minute == 0 {
        return Ok(0);
    }
    let per_pass = ((per_minute * tick.as_millis() as i64 + 59_999) / 60_000).max(1);
    let ttl = Duration::milliseconds(tick.as_millis() as i64 * 3).max(Duration::seconds(5));
    if !take_lease(&billing.pool, LEASE, holder, ttl, now).await? {
        return Ok(0);
    }
    let due = due_accounts(&billing.pool, now, every, per_pass).await?;
    for user in &due {
        mark(&billing.pool, *user, now).await?;
        match reconcile(billing, *user).await {
            Ok(plan) => tracing::debug!(%user, %plan, "scheduled reconcile"),
            Err(e) => tracing::warn!(%user, error = %e, "scheduled reconcile failed; retried on a later pass"),
        }
    }
    Ok(due.len())
}

/// How often a pass runs.
pub const TICK: std::time::Duration = std::time::Duration::from_secs(6);

/// Runs passes forever (every instance; the lease lets one work at a time).
pub async fn run(billing: Billing, heartbeat: crate::server::supervisor::Heartbeat) {
    let holder = format!("{}-{}", std::process::id(), crate::server::util::random_token(8));
    loop {
        heartbeat.beat();
        let tick = tick(&billing);
        if let Err(e) = pass(&billing, &holder, tick, Utc::now()).await {
            tracing::error!(error = %e, "scheduled reconcile: database error");
        }
        tokio::time::sleep(tick).await;
    }
}

/// The pause between passes: [`TICK`], or less when accounts are due more often (tests).
fn tick(billing: &Billing) -> std::time::Duration {
    TICK.min(std::time::Duration::from_secs(billing.config.reconcile_every_secs.max(1)))
}
