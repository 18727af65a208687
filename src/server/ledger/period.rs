//! The account's billing period: what it allots, what has been spent in it and how much of
//! that was overage (`migrations/…_overage_and_alerts.sql`). The spend counts itself into the
//! period in its own UPDATE of the account row, and decides overage and alerts there, under
//! the account lock.

use crate::domain::usage::OverageTerms;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
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
}

/// Starts (or re-states) the account's current period. Earlier periods than the stored one
/// are ignored; the same period keeps its counters and takes the larger allotment (an
/// upgrade) and the latest price and openness.
pub async fn start(conn: &mut PgConnection, user_id: Uuid, p: &PeriodStart<'_>) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT credit_start_period($1, $2, $3, $4, $5, $6, $7, $8)")
        .bind(user_id)
        .bind(p.key)
        .bind(p.start)
        .bind(p.end)
        .bind(p.allotment)
        .bind(p.overage.map(|o| o.unit_cents))
        .bind(p.overage.and_then(|o| o.cap_cents))
        .bind(p.open && p.overage.is_some())
        .execute(conn)
        .await?;
    Ok(())
}

/// Ends the period `key` at `at` (the subscription ended): later spends count into no period
/// and take no overage.
pub async fn end(conn: &mut PgConnection, user_id: Uuid, key: &str, at: DateTime<Utc>) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE credit_accounts SET period_end = least(period_end, $3) WHERE user_id = $1 AND period_key = $2")
        .bind(user_id)
        .bind(key)
        .bind(at)
        .execute(conn)
        .await?;
    Ok(())
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
}

/// The account's current period, if one is running at `now`.
pub async fn current(pool: &PgPool, user_id: Uuid, now: DateTime<Utc>) -> Result<Option<PeriodUsage>, sqlx::Error> {
    sqlx::query_as(
        "SELECT period_key AS key, period_start AS start, period_end AS \"end\", period_allotment AS allotment,
                period_spent AS spent, period_overage AS overage, overage_unit_cents AS unit_cents,
                overage_cap_cents AS plan_cap_cents, overage_open, overage_allowed, user_cap_cents
           FROM credit_accounts
          WHERE user_id = $1 AND period_key IS NOT NULL AND period_start <= $2 AND period_end > $2",
    )
    .bind(user_id)
    .bind(now)
    .fetch_optional(pool)
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
