//! Sign-in rate limiting, kept in PostgreSQL so every app instance sees the same counts.
//! Within a 15-minute window an email may fail `max` times and a client address `4 × max`
//! times (many people can share one address); past that, sign-in answers "too many attempts"
//! without checking the password.

use chrono::{DateTime, Duration, Utc};
use sqlx::PgPool;

pub const WINDOW_MINUTES: i64 = 15;

/// Seconds until another attempt is allowed, or `None` when one is allowed now.
pub async fn retry_after(pool: &PgPool, email: &str, ip: Option<&str>, max: i64, now: DateTime<Utc>) -> Result<Option<u64>, sqlx::Error> {
    let mut blocked_until = blocked_until(pool, "email_normalized", email, max, now).await?;
    if let Some(ip) = ip {
        blocked_until = blocked_until.max(self::blocked_until(pool, "client_ip", ip, max * 4, now).await?);
    }
    Ok(blocked_until.map(|t| (t - now).num_seconds().max(1) as u64))
}

/// When the window opened by the oldest of the last `max` failures for `column = value` closes,
/// if there were `max` failures within the window.
async fn blocked_until(pool: &PgPool, column: &'static str, value: &str, max: i64, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let since = now - Duration::minutes(WINDOW_MINUTES);
    // `column` is one of two constants, never input.
    let sql = format!(
        "SELECT count(*), min(failed_at) FROM (SELECT failed_at FROM login_failures
           WHERE {column} = $1 AND failed_at > $2 ORDER BY failed_at DESC LIMIT $3) recent"
    );
    let (count, oldest): (i64, Option<DateTime<Utc>>) = sqlx::query_as(&sql).bind(value).bind(since).bind(max).fetch_one(pool).await?;
    Ok(if count >= max { oldest.map(|t| t + Duration::minutes(WINDOW_MINUTES)) } else { None })
}

pub async fn record_failure(pool: &PgPool, email: &str, ip: Option<&str>, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO login_failures (email_normalized, client_ip, failed_at) VALUES ($1, $2, $3)")
        .bind(email)
        .bind(ip)
        .bind(now)
        .execute(pool)
        .await?;
    Ok(())
}

/// A successful sign-in clears that email's failures (not the address's).
pub async fn clear_for_email(pool: &PgPool, email: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM login_failures WHERE email_normalized = $1").bind(email).execute(pool).await?;
    Ok(())
}
