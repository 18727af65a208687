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

mod allotments;
pub mod batch;
mod corrections;
pub mod history;
pub mod period;

use crate::domain::credits::Accrual;
pub use crate::domain::credits::Balance;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

pub use allotments::*;
pub use corrections::*;

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
