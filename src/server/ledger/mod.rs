//! The credit ledger's operations. Each takes a `&mut PgConnection`, so a caller can compose
//! it with its own writes in one transaction (a webhook handler marks its event done and grants
//! credits atomically). The rules themselves live in SQL functions
//! (`migrations/…_credit_ledger.sql`) so that every operation is one round trip while the
//! account row is locked: that is what makes spends both safe and fast.
//!
//! Idempotency keys, by operation:
//! - free grant: `free:<user id>`
//! - credit pack: `order:<polar order id>`; its refunds: `refund:<polar order id>:<credits
//!   claimed back in all>` (one entry each time the claimed total grows, see [`refund_pack`])
//! - allotment: `allotment:<subscription id>:<period start, RFC 3339>`
//! - upgrade extra: `upgrade:<subscription id>:<period start>:<new level>`
//! - spend: the caller's key; the overage it takes, `<key>#overage` (see [`period`])
//! - adjustment: the caller's key (the CLI makes one)

pub mod history;
pub mod period;

use crate::domain::credits::Accrual;
pub use crate::domain::credits::Balance;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// What a spend did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpendOutcome {
    /// Spent `spent`; `balance` is what is left.
    Spent { spent: i64, balance: i64 },
    /// This key was already spent; nothing was spent again. The first call's result.
    Duplicate { spent: i64, balance: i64 },
    /// Not enough credits; nothing was spent. `available` is the spendable balance.
    Insufficient { available: i64 },
    /// The shortfall would take the period's overage past its cap (the plan's, or the user's
    /// lower one); nothing was spent.
    OverCap { available: i64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantOutcome {
    /// False when the key had already been applied (nothing changed).
    pub applied: bool,
    pub balance: i64,
}

/// Which bucket a grant lands in (and so its burn order and expiry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketKind {
    Free,
    Allotment,
    Purchase,
    Adjustment,
}

impl BucketKind {
    fn as_str(self) -> &'static str {
        match self {
            BucketKind::Free => "free",
            BucketKind::Allotment => "allotment",
            BucketKind::Purchase => "purchase",
            BucketKind::Adjustment => "adjustment",
        }
    }
}

/// A grant of credits.
#[derive(Debug, Clone)]
pub struct Grant {
    pub user_id: Uuid,
    pub bucket: BucketKind,
    /// Entry kind: `free_grant`, `allotment`, `purchase` or `adjustment`.
    pub entry_kind: &'static str,
    pub source_key: String,
    pub amount: i64,
    pub expires_at: Option<DateTime<Utc>>,
    pub key: String,
    pub metadata: Value,
    /// When set, the credits become spendable on these dates instead of at once.
    pub schedule: Option<Vec<Accrual>>,
}

pub async fn grant(conn: &mut PgConnection, g: &Grant, now: DateTime<Utc>) -> Result<GrantOutcome, sqlx::Error> {
    let (due, amounts): (Option<Vec<DateTime<Utc>>>, Option<Vec<i64>>) = match &g.schedule {
        Some(s) => (Some(s.iter().map(|a| a.due_at).collect()), Some(s.iter().map(|a| a.amount).collect())),
        None => (None, None),
    };
    let (applied, balance): (bool, i64) =
        sqlx::query_as("SELECT applied, balance FROM credit_grant($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)")
            .bind(g.user_id)
            .bind(g.bucket.as_str())
            .bind(g.entry_kind)
            .bind(&g.source_key)
            .bind(g.amount)
            .bind(g.expires_at)
            .bind(&g.key)
            .bind(&g.metadata)
            .bind(now)
            .bind(due)
            .bind(amounts)
            .fetch_one(conn)
            .await?;
    Ok(GrantOutcome { applied, balance })
}

/// The one-time free credits of a new account. Never expires; burned last.
pub async fn grant_free(
    conn: &mut PgConnection,
    user_id: Uuid,
    amount: i64,
    now: DateTime<Utc>,
) -> Result<GrantOutcome, sqlx::Error> {
    if amount <= 0 {
        sqlx::query("INSERT INTO credit_accounts (user_id) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(user_id)
            .execute(&mut *conn)
            .await?;
        return Ok(GrantOutcome { applied: false, balance: current_balance(conn, user_id).await? });
    }
    grant(
        conn,
        &Grant {
            user_id,
            bucket: BucketKind::Free,
            entry_kind: "free_grant",
            source_key: "free".into(),
            amount,
            expires_at: None,
            key: format!("free:{user_id}"),
            metadata: json!({ "reason": "sign-up" }),
            schedule: None,
        },
        now,
    )
    .await
}

/// The stored balance (0 for a user with no credit account yet). No maintenance step.
async fn current_balance(conn: &mut PgConnection, user_id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT coalesce((SELECT balance FROM credit_accounts WHERE user_id = $1), 0)")
        .bind(user_id)
        .fetch_one(conn)
        .await
}

/// A purchased credit pack: granted once per order, never expires, survives plan changes.
pub async fn grant_pack(
    conn: &mut PgConnection,
    user_id: Uuid,
    order_id: &str,
    credits: i64,
    product_id: &str,
    now: DateTime<Utc>,
) -> Result<GrantOutcome, sqlx::Error> {
    grant(
        conn,
        &Grant {
            user_id,
            bucket: BucketKind::Purchase,
            entry_kind: "purchase",
            source_key: format!("order:{order_id}"),
            amount: credits,
            expires_at: None,
            key: format!("order:{order_id}"),
            metadata: json!({ "order_id": order_id, "product_id": product_id }),
            schedule: None,
        },
        now,
    )
    .await
}

/// Identifies the bucket of the pack bought with `order_id`.
pub fn pack_source(order_id: &str) -> String {
    format!("order:{order_id}")
}

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

/// Spends `cost` credits: all or nothing, never below zero, idempotent on `key`.
pub async fn spend(
    conn: &mut PgConnection,
    user_id: Uuid,
    cost: i64,
    key: &str,
    metadata: &Value,
    now: DateTime<Utc>,
) -> Result<SpendOutcome, sqlx::Error> {
    debit(conn, user_id, cost, key, metadata, now, "spend").await
}

async fn debit(
    conn: &mut PgConnection,
    user_id: Uuid,
    cost: i64,
    key: &str,
    metadata: &Value,
    now: DateTime<Utc>,
    kind: &str,
) -> Result<SpendOutcome, sqlx::Error> {
    let (status, spent, balance): (String, Option<i64>, Option<i64>) =
        sqlx::query_as("SELECT status, spent, balance FROM credit_spend($1, $2, $3, $4, $5, $6)")
            .bind(user_id)
            .bind(cost)
            .bind(key)
            .bind(metadata)
            .bind(now)
            .bind(kind)
            .fetch_one(conn)
            .await?;
    let (spent, balance) = (spent.unwrap_or(0), balance.unwrap_or(0));
    Ok(match status.as_str() {
        "spent" => SpendOutcome::Spent { spent, balance },
        "duplicate" => SpendOutcome::Duplicate { spent, balance },
        "over_cap" => SpendOutcome::OverCap { available: balance },
        _ => SpendOutcome::Insufficient { available: balance },
    })
}

/// What a refund of a pack took back now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RefundOutcome {
    pub clawed_back: i64,
    /// Credits the refund entitled to that were already spent, so could not be taken back.
    pub shortfall: i64,
}

/// A refund of the pack bought with `order_id`, as Polar reports it: `refunded_net` of the
/// order's `net_amount` (both before tax), cumulative. Takes back the pack's share of what the
/// refunds came to (credits × refunded ÷ net, rounded down; all of them when `fully`), less
/// what earlier refunds of the order took; what was already spent is the shortfall. Repeated,
/// reordered or early deliveries claim each credit once (`migrations/…_pack_refunds.sql`).
pub async fn refund_pack(
    conn: &mut PgConnection,
    user_id: Uuid,
    order_id: &str,
    refunded_net: i64,
    net_amount: i64,
    fully: bool,
    now: DateTime<Utc>,
) -> Result<RefundOutcome, sqlx::Error> {
    let (clawed_back, shortfall): (Option<i64>, Option<i64>) =
        sqlx::query_as("SELECT clawed_back, shortfall FROM credit_refund_pack($1, $2, $3, $4, $5, $6)")
            .bind(user_id)
            .bind(order_id)
            .bind(refunded_net)
            .bind(net_amount)
            .bind(fully)
            .bind(now)
            .fetch_one(conn)
            .await?;
    Ok(RefundOutcome { clawed_back: clawed_back.unwrap_or(0), shortfall: shortfall.unwrap_or(0) })
}

/// A pack was just granted: applies refunds of its order recorded before (the refund's event
/// arrived before the payment's). Call it in the grant's transaction, after the grant: the
/// grant holds the account lock a concurrent refund also takes, so one of the two always sees
/// the other.
pub async fn settle_pack_refund(
    conn: &mut PgConnection,
    user_id: Uuid,
    order_id: &str,
    now: DateTime<Utc>,
) -> Result<RefundOutcome, sqlx::Error> {
    let (clawed_back, shortfall): (Option<i64>, Option<i64>) =
        sqlx::query_as("SELECT clawed_back, shortfall FROM credit_settle_pack_refund($1, $2, $3)")
            .bind(user_id)
            .bind(order_id)
            .bind(now)
            .fetch_one(conn)
            .await?;
    Ok(RefundOutcome { clawed_back: clawed_back.unwrap_or(0), shortfall: shortfall.unwrap_or(0) })
}

#[derive(Debug, thiserror::Error)]
pub enum AdjustError {
    #[error("an adjustment needs a reason")]
    NoReason,
    #[error("an adjustment of 0 credits changes nothing")]
    Zero,
    #[error("an adjustment of {0} credits is out of range")]
    OutOfRange(i64),
    #[error("cannot remove {requested} credits: only {available} are available")]
    Insufficient { requested: i64, available: i64 },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// An administrator's correction, with a required reason. Positive adds a non-expiring
/// adjustment bucket; negative removes credits in burn order and never goes below zero.
pub async fn adjust(
    conn: &mut PgConnection,
    user_id: Uuid,
    delta: i64,
    reason: &str,
    key: &str,
    now: DateTime<Utc>,
) -> Result<i64, AdjustError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(AdjustError::NoReason);
    }
    let metadata = json!({ "reason": reason });
    match delta.signum() {
        0 => Err(AdjustError::Zero),
        1 => Ok(grant(
            conn,
            &Grant {
                user_id,
                bucket: BucketKind::Adjustment,
                entry_kind: "adjustment",
                source_key: key.to_string(),
                amount: delta,
                expires_at: None,
                key: key.to_string(),
                metadata,
                schedule: None,
            },
            now,
        )
        .await?
        .balance),
        _ => match debit(
            conn,
            user_id,
            delta.checked_neg().ok_or(AdjustError::OutOfRange(delta))?,
            key,
            &metadata,
            now,
            "adjustment",
        )
        .await?
        {
            SpendOutcome::Spent { balance, .. } | SpendOutcome::Duplicate { balance, .. } => Ok(balance),
            SpendOutcome::Insufficient { available } | SpendOutcome::OverCap { available } => {
                Err(AdjustError::Insufficient { requested: -delta, available })
            }
        },
    }
}

/// A user's credits right now, by source. Applies due accruals and expiries first, so what it
/// reports is what a spend would see.
pub async fn balance(db: impl sqlx::PgExecutor<'_>, user_id: Uuid, now: DateTime<Utc>) -> Result<Balance, sqlx::Error> {
    // One statement, no lock, no write (`credit_balance_read`): what `credit_maintain` would
    // leave, so a page view never waits for the account's spends, nor they for it.
    type Row = (i64, i64, i64, i64, i64, i64, Option<DateTime<Utc>>);
    let (total, allotment, purchased, free, adjustment, pending, next): Row = sqlx::query_as(
        "SELECT total, allotment, purchased, free, adjustment, pending, next_at FROM credit_balance_read($1, $2)",
    )
    .bind(user_id)
    .bind(now)
    .fetch_one(db)
    .await?;
    Ok(Balance { total, allotment, purchased, free, adjustment, pending_allotment: pending, next_accrual_at: next })
}

/// Applies due releases and expiries to up to `limit` accounts whose next one fell due by
/// `now` (the janitor: accounts that do not spend still get their entries written); how many.
pub async fn maintain_due(pool: &PgPool, now: DateTime<Utc>, limit: i64) -> Result<usize, sqlx::Error> {
    let due: Vec<Uuid> = sqlx::query_scalar(
        "SELECT user_id FROM credit_accounts WHERE next_event_at <= $1 ORDER BY next_event_at LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    for user in &due {
        sqlx::query("SELECT credit_maintain($1, $2)").bind(user).bind(now).execute(pool).await?;
    }
    Ok(due.len())
}

/// Every disagreement between projections and entries (`None`: all users). Empty = consistent.
pub async fn problems(pool: &PgPool, user_id: Option<Uuid>) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
    sqlx::query_as("SELECT user_id, problem FROM credit_ledger_problems($1)").bind(user_id).fetch_all(pool).await
}
