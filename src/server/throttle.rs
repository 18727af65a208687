//! Fixed-window throttles kept in PostgreSQL, shared by every instance: at most `limit` hits
//! per `(scope, subject)` per window. One upsert per hit, atomic, so concurrent hits cannot
//! all slip under the limit. Used for sign-ups per client address, password-reset and
//! verification mails, and the server functions that call Polar (per user).
//!
//! Old windows are pruned by the janitor (`server::janitor`).

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// What is throttled, and how much.
#[derive(Debug, Clone, Copy)]
pub struct Throttle {
    pub scope: &'static str,
    pub limit: u32,
    pub window_secs: i64,
}

/// Counts a hit on `subject`; `Err(seconds)` until the window ends when over the limit.
pub async fn hit(
    pool: &PgPool,
    t: Throttle,
    subject: &str,
    now: DateTime<Utc>,
) -> Result<Result<(), u64>, sqlx::Error> {
    let window = t.window_secs.max(1);
    let start = now.timestamp().div_euclid(window) * window;
    let count: i32 = sqlx::query_scalar(
        "INSERT INTO rate_counters (scope, subject, window_start, count) VALUES ($1, $2, to_timestamp($3), 1)
         ON CONFLICT (scope, subject, window_start) DO UPDATE SET count = rate_counters.count + 1 RETURNING count",
    )
    .bind(t.scope)
    .bind(subject)
    .bind(start as f64)
    .fetch_one(pool)
    .await?;
    if count as i64 > t.limit as i64 {
        return Ok(Err((start + window - now.timestamp()).max(1) as u64));
    }
    Ok(Ok(()))
}

/// The hits counted on `subject` in the window holding `now` and in the one before it (hits
/// past the limit included: each was refused).
pub async fn counts(pool: &PgPool, t: Throttle, subject: &str, now: DateTime<Utc>) -> Result<(i64, i64), sqlx::Error> {
    let window = t.window_secs.max(1);
    let start = now.timestamp().div_euclid(window) * window;
    let rows: Vec<(f64, i32)> = sqlx::query_as(
        "SELECT extract(epoch FROM window_start)::float8, count FROM rate_counters
          WHERE scope = $1 AND subject = $2 AND window_start IN (to_timestamp($3), to_timestamp($4))",
    )
    .bind(t.scope)
    .bind(subject)
    .bind(start as f64)
    .bind((start - window) as f64)
    .fetch_all(pool)
    .await?;
    let of = |s: i64| rows.iter().find(|(at, _)| *at as i64 == s).map_or(0, |(_, n)| *n as i64);
    Ok((of(start), of(start - window)))
}
