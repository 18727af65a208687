//! Sign-in rate limiting, kept in PostgreSQL so every app instance sees the same counts.
//! Within a 15-minute window an email may fail `max` times and a client address `4 × max`
//! times (many people can share one address); past that, sign-in answers "too many attempts"
//! without checking the password. A password reset link always gets a locked-out owner in.
//!
//! Attempts are counted atomically: [`begin`] checks the counts and records the attempt (as a
//! failure, until it succeeds) under per-email and per-address advisory locks, so a burst of
//! concurrent guesses cannot all pass the check before any is counted: at most `max` are
//! ever checked. Locks are taken email first, then address, so two attempts never wait on
//! each other in a cycle.

use chrono::{DateTime, Duration, Utc};
use sqlx::PgPool;

pub const WINDOW_MINUTES: i64 = 15;

/// A reserved attempt: counted as a failure unless [`succeeded`] clears it.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    id: i64,
}

/// Reserves an attempt for `email` from `ip`, or `Err(seconds)` until one is allowed.
pub async fn begin(
    pool: &PgPool,
    email: &str,
    ip: Option<&str>,
    max: i64,
    now: DateTime<Utc>,
) -> Result<Result<Attempt, u64>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('tally.login.email:' || $1, 0))")
        .bind(email)
        .execute(&mut *tx)
        .await?;
    if let Some(ip) = ip {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('tally.login.ip:' || $1, 0))")
            .bind(ip)
            .execute(&mut *tx)
            .await?;
    }
    let mut until = blocked_until(&mut tx, "email_normalized", email, max, now).await?;
    if let Some(ip) = ip {
        until = until.max(blocked_until(&mut tx, "client_ip", ip, max * 4, now).await?);
    }
    if let Some(t) = until {
        tx.commit().await?;
        return Ok(Err((t - now).num_seconds().max(1) as u64));
    }
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO login_failures (email_normalized, client_ip, failed_at) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(email)
    .bind(ip)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Ok(Attempt { id }))
}

/// When the window opened by the oldest of the last `max` failures for `column = value` closes,
/// if there were `max` failures within the window.
async fn blocked_until(
    conn: &mut sqlx::PgConnection,
    column: &'static str,
    value: &str,
    max: i64,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let since = now - Duration::minutes(WINDOW_MINUTES);
    // `column` is one of two constants, never input.
    let sql = format!(
        "SELECT count(*), min(failed_at) FROM (SELECT failed_at FROM login_failures
           WHERE {column} = $1 AND failed_at > $2 ORDER BY failed_at DESC LIMIT $3) recent"
    );
    let (count, oldest): (i64, Option<DateTime<Utc>>) =
        sqlx::query_as(&sql).bind(value).bind(since).bind(max).fetch_one(conn).await?;
    Ok(if count >= max { oldest.map(|t| t + Duration::minutes(WINDOW_MINUTES)) } else { None })
}

/// The attempt succeeded: it and the email's earlier failures are cleared (not the address's).
pub async fn succeeded(pool: &PgPool, email: &str, _attempt: Attempt) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM login_failures WHERE email_normalized = $1").bind(email).execute(pool).await?;
    Ok(())
}

/// The attempt could not be decided (the server was too busy to check the password): it does
/// not count against anyone.
pub async fn abandoned(pool: &PgPool, attempt: Attempt) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM login_failures WHERE id = $1").bind(attempt.id).execute(pool).await?;
    Ok(())
}

/// A password was reset by its owner: the email's failures are forgiven.
pub async fn clear_for_email(pool: &PgPool, email: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM login_failures WHERE email_normalized = $1").bind(email).execute(pool).await?;
    Ok(())
}
