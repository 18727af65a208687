//! The account's billing period: what it allots, what has been spent in it and how much of
//! that was overage (`migrations/…_overage_and_alerts.sql`). The spend counts itself into the
//! period in its own UPDATE of the account row, and decides overage and alerts there, under
//! the account lock.

use crate::domain::usage::OverageTerms;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// Identifies one billing period of a subscription: `period:<subscription id>:<start, RFC 3339
/// to the microsecond>` (finer than the allotment's key, so two periods never share counters,
/// however close their starts).
pub fn key(subscription_id: &str, start: DateTime<Utc>) -> String {
    format!("period:{subscription_id}:{}", start.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

/// One billing period as a subscription states it.
#[derive(Debug, Clone, Copy)]
pub struct PeriodStart<'a> {
    /// The period's [`key`].
    pub key: &'a str,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub allotment: i64,
    /// The plan's metered price, if it has one.
    pub overage: Option<OverageTerms>,
    /// Whether new overage may be taken now (the subscription is active and set to renew).
    pub open: bool,
    /// Tally's cap for a metered price without one (`OVERAGE_DEFAULT_CAP_CENTS`): overage is
    /// never unbounded. Ignored when the price has a cap.
    pub default_cap_cents: i64,
}

/// Starts (or re-states) the account's current period. Earlier periods than the stored one
/// are ignored; the same period keeps its counters and takes the larger allotment (an
/// upgrade) and the latest price and openness.
pub async fn start(conn: &mut PgConnection, user_id: Uuid, p: &PeriodStart<'_>) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT credit_start_period($1, $2, $3, $4, $5, $6, $7, $8, $9)")
        .bind(user_id)
        .bind(p.key)
        .bind(p.start)
        .bind(p.end)
        .bind(p.allotment)
        .bind(p.overage.map(|o| o.unit_cents))
        .bind(p.overage.and_then(|o| o.cap_cents))
        .bind(p.open && p.overage.is_some())
        .bind(p.default_cap_cents.max(0))
        .execute(conn)
        .await?;
    Ok(())
}

/// Ends the period `key` at `at` (the subscription ended): later spends count into no period
/// and take no overage.
pub async fn end(conn: &mut PgConnection, user_id: Uuid, key: &str, at: DateTime<Utc>) -> Result<(), sqlx::Error> {
    // The account row first (the lock order of every writer of it), then the period's row if
    // the account has moved on to another subscription's period.
    sqlx::query("UPDATE credit_accounts SET period_end = least(period_end, $3) WHERE user_id = $1 AND period_key = $2")
        .bind(user_id)
        .bind(key)
        .bind(at)
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE credit_periods SET period_end = least(period_end, $3) WHERE user_id = $1 AND period_key = $2")
        .bind(user_id)
        .bind(key)
        .bind(at)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Overage of a period still running, which Polar bills at that period's end.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Unbilled {
    pub key: String,
    pub end: DateTime<Utc>,
    pub overage: i64,
    pub unit_cents: Option<i64>,
    pub cap_cents: Option<i64>,
}

impl Unbilled {
    pub fn charge_cents(&self) -> i64 {
        self.unit_cents
            .map_or(0, |unit_cents| OverageTerms { unit_cents, cap_cents: self.cap_cents }.charge_cents(self.overage))
    }
}

/// Every period of the account still running at `now` with overage in it: the current one,
/// and one the account moved on from when another subscription started a period.
pub async fn unbilled(
    db: impl sqlx::PgExecutor<'_>,
    user_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Vec<Unbilled>, sqlx::Error> {
    sqlx::query_as(
        "SELECT period_key AS key, period_end AS \"end\", period_overage AS overage, overage_unit_cents AS unit_cents,
                overage_cap_cents AS cap_cents
           FROM credit_accounts WHERE user_id = $1 AND period_key IS NOT NULL AND period_end > $2 AND period_overage > 0
         UNION ALL
         SELECT period_key, period_end, overage, unit_cents, cap_cents
           FROM credit_periods WHERE user_id = $1 AND period_end > $2 AND overage > 0
          ORDER BY 2",
    )
    .bind(user_id)
    .bind(now)
    .fetch_all(db)
    .await
}

/// The current period as the billing page shows it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PeriodUsage {
    pub key: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub allotment: i64,
    pub spent: i64,
    pub overage: i64,
    pub unit_cents: Option<i64>,
    pub plan_cap_cents: Option<i64>,
    /// Whether new overage may be taken now (the subscription is active and renews).
    pub overage_open: bool,
    pub overage_allowed: bool,
    pub user_cap_cents: Option<i64>,
    /// Tally's default cap, in force when neither the plan's price nor the user sets one.
    pub default_cap_cents: Option<i64>,
}

impl PeriodUsage {
    /// The plan's metered price, if it has one.
    pub fn terms(&self) -> Option<OverageTerms> {
        self.unit_cents.map(|unit_cents| OverageTerms { unit_cents, cap_cents: self.plan_cap_cents })
    }

    /// What the overage so far will cost at the cycle end (Polar bills it then).
    pub fn projected_charge_cents(&self) -> i64 {
        self.terms().map_or(0, |t| t.charge_cents(self.overage))
    }

    /// The most one period's overage may cost, as the spend enforces it: the lower of the
    /// plan's and the user's caps, else Tally's default (whole credits' worth), and whether it
    /// is the default. `None` without a metered price.
    pub fn cap_in_force(&self) -> Option<(i64, bool)> {
        let t = self.terms()?;
        match t.max_units(self.user_cap_cents) {
            Some(units) => Some((units * t.unit_cents, false)),
            None => Some((self.default_cap_cents.unwrap_or(0) / t.unit_cents * t.unit_cents, true)),
        }
    }
}

/// Where the period's allotment stands: what its daily releases schedule in all, what has
/// been released on its day, what was advanced (released early to a spend, with overage on)
/// and what is still to be released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, sqlx::FromRow)]
pub struct AllotmentProgress {
    pub scheduled: i64,
    pub released: i64,
    pub advanced: i64,
    pub pending: i64,
}

/// The allotment's progress as of `$4` over the period `[$2, $3)` of user `$1`: one query text
/// for [`allotment_progress`] and the lateral join of [`latest_with_progress_sql`].
const PROGRESS_SQL: &str = "SELECT coalesce(sum(a.amount), 0)::bigint AS scheduled,
        coalesce(sum(a.amount - a.advanced) FILTER (WHERE a.applied_at IS NOT NULL OR a.due_at <= $4), 0)::bigint AS released,
        coalesce(sum(a.advanced), 0)::bigint AS advanced,
        coalesce(sum(a.amount - a.advanced) FILTER (WHERE a.applied_at IS NULL AND a.due_at > $4), 0)::bigint AS pending
   FROM credit_buckets b JOIN credit_accruals a ON a.bucket_id = b.id
  WHERE b.user_id = $1 AND b.kind = 'allotment' AND a.due_at >= $2 AND a.due_at < $3
    AND (b.expires_at IS NULL OR a.due_at < b.expires_at)";

/// The account's latest period and its allotment's progress, in one read.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PeriodRead {
    #[sqlx(flatten)]
    pub period: PeriodUsage,
    #[sqlx(flatten)]
    pub progress: AllotmentProgress,
}

/// The account's latest period, running or not (a period that ended early, by a revocation,
/// keeps what was used in it, overage included, for the billing page to show), with
/// [`allotment_progress`] of that period at `$2`, for a statement that reads more of account
/// `$1` alongside (`usage::panel`): the select list of [`PeriodRead`]'s columns (all NULL
/// when the account has no period) and the joins that follow a `FROM (SELECT $1::uuid AS
/// user_id) me`.
pub(crate) fn latest_with_progress_sql() -> (String, String) {
    let progress = PROGRESS_SQL
        .replace("$1", "c.user_id")
        .replace("$2", "c.period_start")
        .replace("$3", "c.period_end")
        .replace("$4", "$2");
    (
        format!("{PERIOD_COLUMNS}, p.scheduled, p.released, p.advanced, p.pending"),
        format!(
            "LEFT JOIN credit_accounts c ON c.user_id = me.user_id AND c.period_key IS NOT NULL
             LEFT JOIN LATERAL ({progress}) p ON c.user_id IS NOT NULL"
        ),
    )
}

/// The allotment of the period `[start, end)` at `now` (its allotment buckets' scheduled days).
pub async fn allotment_progress(
    db: impl sqlx::PgExecutor<'_>,
    user_id: Uuid,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<AllotmentProgress, sqlx::Error> {
    sqlx::query_as(PROGRESS_SQL).bind(user_id).bind(start).bind(end).bind(now).fetch_one(db).await
}

/// The columns of [`PeriodUsage`], from `credit_accounts c`.
const PERIOD_COLUMNS: &str = "c.period_key AS key, c.period_start AS start, c.period_end AS \"end\",
    c.period_allotment AS allotment, c.period_spent AS spent, c.period_overage AS overage,
    c.overage_unit_cents AS unit_cents, c.overage_cap_cents AS plan_cap_cents, c.overage_open, c.overage_allowed,
    c.user_cap_cents, c.overage_default_cap_cents AS default_cap_cents";

/// The account's current period, if one is running at `now`.
pub async fn current(
    db: impl sqlx::PgExecutor<'_>,
    user_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<PeriodUsage>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {PERIOD_COLUMNS} FROM credit_accounts c
          WHERE c.user_id = $1 AND c.period_key IS NOT NULL AND c.period_start <= $2 AND c.period_end > $2"
    ))
    .bind(user_id)
    .bind(now)
    .fetch_optional(db)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_starting_in_the_same_second_have_their_own_keys() {
        let t = DateTime::from_timestamp(1_764_000_000, 0).unwrap();
        let later = t + chrono::Duration::milliseconds(250);
        assert_ne!(key("sub", t), key("sub", later));
        assert_eq!(key("sub", t), "period:sub:2025-11-24T16:00:00.000000Z");
    }
}
