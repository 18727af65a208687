//! Taking credits back: a pack's refunds, and an administrator's adjustments.

use super::*;

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
