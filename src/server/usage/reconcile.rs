//! Drift between the ledger and Polar's meters (`tally polar reconcile`): for each meter
//! Tally feeds, the credits the ledger recorded, what Polar's customer meter counted, and the
//! events still on their way (pending in the outbox). `drift = ledger − polar − in flight`:
//! zero when every event arrived once; positive when Polar missed some (parked events count
//! here: Polar refused them), negative when it counted something twice or from elsewhere. Polar recomputes meters behind ingestion (15 s
//! to hours), so a fresh drift may be lag: run it again before acting.

use super::{EVENT_NAME, OVERAGE_EVENT_NAME};
use crate::server::polar::{client::PolarClient, PolarError};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// One meter's comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub event: &'static str,
    pub ledger: i64,
    pub polar: i64,
    /// Pending in the outbox: on their way.
    pub in_flight: i64,
    /// Parked as refused by Polar: never counted there unless an operator acts (part of the
    /// unexplained drift).
    pub parked: i64,
}

impl Drift {
    pub fn unexplained(&self) -> i64 {
        self.ledger - self.polar - self.in_flight
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Polar(#[from] PolarError),
}

/// Measures `user`'s drift on both meters and records it for `/metrics`.
pub async fn measure(pool: &PgPool, polar: &PolarClient, user: Uuid, now: DateTime<Utc>) -> Result<Vec<Drift>, Error> {
    // Polar first, then the ledger: a spend in between shows as in flight, not as drift.
    let meters = polar.list_customer_meters(&user.to_string()).await?;
    let mut out = vec![];
    for (event, kind) in [(EVENT_NAME, "spend"), (OVERAGE_EVENT_NAME, "overage")] {
        let polar_units: f64 = meters.iter().filter(|m| m.counts_event(event)).map(|m| m.consumed_units).sum();
        let (ledger, in_flight, parked): (i64, i64, i64) = sqlx::query_as(
            // Spends from their daily rollup (a row a day, kept exact with every spend and
            // checked by `credit_ledger_problems`): summing a million spend entries took as long
            // as the page that asked.
            "SELECT CASE WHEN $2 = 'spend' THEN (SELECT coalesce(sum(spent), 0) FROM credit_usage_days WHERE user_id = $1)
                         ELSE (SELECT coalesce(sum(abs(amount)), 0) FROM credit_entries WHERE user_id = $1 AND kind = $2)
                    END::bigint,
                    (SELECT coalesce(sum(units), 0)::bigint FROM usage_outbox WHERE user_id = $1 AND event = $3 AND status = 'pending'),
                    (SELECT coalesce(sum(units), 0)::bigint FROM usage_outbox WHERE user_id = $1 AND event = $3 AND status = 'failed')",
        )
        .bind(user)
        .bind(kind)
        .bind(event)
        .fetch_one(pool)
        .await?;
        let d = Drift { event, ledger, polar: polar_units.round() as i64, in_flight, parked };
        sqlx::query(
            "INSERT INTO usage_drift (user_id, event, ledger, polar, in_flight, measured_at) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (user_id, event) DO UPDATE SET ledger = EXCLUDED.ledger, polar = EXCLUDED.polar,
                 in_flight = EXCLUDED.in_flight, measured_at = EXCLUDED.measured_at",
        )
        .bind(user)
        .bind(event)
        .bind(d.ledger)
        .bind(d.polar)
        .bind(d.in_flight)
        .bind(now)
        .execute(pool)
        .await?;
        out.push(d);
    }
    Ok(out)
}

/// The sum of |unexplained drift| the last reconcile found, in credits, and how many
/// accounts had any (for `/metrics`).
pub async fn last_drift(pool: &PgPool) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT coalesce(sum(abs(ledger - polar - in_flight)), 0)::bigint,
                count(DISTINCT user_id) FILTER (WHERE ledger - polar - in_flight <> 0)
           FROM usage_drift",
    )
    .fetch_one(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_counts_what_is_neither_at_polar_nor_on_its_way() {
        let d = Drift { event: EVENT_NAME, ledger: 100, polar: 90, in_flight: 10, parked: 0 };
        assert_eq!(d.unexplained(), 0);
        let d = Drift { event: EVENT_NAME, ledger: 100, polar: 110, in_flight: 0, parked: 0 };
        assert_eq!(d.unexplained(), -10);
        let d = Drift { event: EVENT_NAME, ledger: 100, polar: 95, in_flight: 0, parked: 5 };
        assert_eq!(d.unexplained(), 5, "a parked event is money Polar will not bill");
    }
}
