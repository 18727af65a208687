//! How Polar's deliveries are going: the current run of refused deliveries, kept in one row
//! shared by every instance (`webhook_delivery_streak`), and counted in memory too for when the
//! database itself is what refuses them. Polar disables the endpoint after
//! [`POLAR_DISABLES_AFTER`] failures in a row (POLAR.md); from [`AT_RISK_AFTER`] the health
//! page and /metrics warn.
//!
//! A refusal is any delivery the receiver does not acknowledge. Forged requests are refused
//! too, so a flood of them reads as a run; the last error tells the two apart (a rotated
//! secret says "no matching signature" on every delivery, an outage "could not store").

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::sync::atomic::{AtomicI64, Ordering};

/// Consecutive failed deliveries after which Polar disables the endpoint.
pub const POLAR_DISABLES_AFTER: i64 = 10;
/// Consecutive refusals from which an operator is warned.
pub const AT_RISK_AFTER: i64 = 5;

/// Refusals this instance counted in a row (the database may have been unable to count them):
/// `AppState::webhook_refusals`.
pub type Local = AtomicI64;

/// The current run of refused deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Streak {
    pub refused: i64,
    pub first_refused_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_accepted_at: Option<DateTime<Utc>>,
}

impl Streak {
    /// Whether Polar may soon disable (or has disabled) the endpoint.
    pub fn at_risk(&self) -> bool {
        self.refused >= AT_RISK_AFTER
    }
}

/// Counts a refused delivery in this instance's memory (at once, whatever the database does).
pub fn count_locally(local: &Local) {
    local.fetch_add(1, Ordering::Relaxed);
}

/// Records a refused delivery and why in the shared row (after [`count_locally`]).
pub async fn refused(pool: &PgPool, error: &str) {
    let done = sqlx::query(
        "UPDATE webhook_delivery_streak
            SET refused = refused + 1, first_refused_at = CASE WHEN refused = 0 THEN now() ELSE first_refused_at END,
                last_refused_at = now(), last_error = left($1, 300)",
    )
    .bind(error)
    .execute(pool)
    .await;
    if let Err(e) = done {
        tracing::warn!(error = %e, "could not record a refused webhook delivery");
    }
}

/// The statement that stores an accepted delivery begins with this: it ends the shared run of
/// refusals in the same round trip (a data-modifying `WITH`; it writes nothing while there is no
/// run, the common case). A statement, not a call of its own: every accepted delivery paid one
/// more round trip for it before.
macro_rules! end_run_with {
    ($statement:literal) => {
        concat!(
            "WITH end_run AS (UPDATE webhook_delivery_streak SET refused = 0, first_refused_at = NULL, last_accepted_at = now() WHERE refused > 0) ",
            $statement
        )
    };
}
pub(crate) use end_run_with;

/// An accepted delivery, on this instance (the shared run ends in the statement that stored it:
/// [`end_run_with`]).
pub fn accepted_locally(local: &Local) {
    local.store(0, Ordering::Relaxed);
}

/// The current run: the shared count, or this instance's when it saw more (it counts
/// refusals the database could not record).
pub async fn streak(pool: &PgPool, local: &Local) -> Result<Streak, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        refused: i32,
        first_refused_at: Option<DateTime<Utc>>,
        last_error: Option<String>,
        last_accepted_at: Option<DateTime<Utc>>,
    }
    let Row { refused, first_refused_at, last_error, last_accepted_at } =
        sqlx::query_as("SELECT refused, first_refused_at, last_error, last_accepted_at FROM webhook_delivery_streak")
            .fetch_one(pool)
            .await?;
    Ok(Streak {
        refused: i64::from(refused).max(local.load(Ordering::Relaxed)),
        first_refused_at,
        last_error,
        last_accepted_at,
    })
}

/// This instance's count alone (for /metrics when the database is unreachable).
pub fn local_count(local: &Local) -> i64 {
    local.load(Ordering::Relaxed)
}
