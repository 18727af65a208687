//! Sign-in rate limiting, kept in PostgreSQL so every app instance sees the same counts.
//! Within a 15-minute window an email may fail `max` times and a client address `4 × max`
//! times (many people can share one address); past that, sign-in answers "too many attempts"
//! without checking the password.

use chrono::{DateTime, Duration, Utc};
use sqlx::PgPool;

pub const WINDOW_MINUTES: i64 = 15;

/// Seconds until another attempt is allowed, or `None` when one is allowed now.
pub async fn retry_after(pool: &PgPool, email: &str, ip: Option<&str>, max: i64, now: DateTime<Utc>) -> Result<Option<u64>, sqlx::Error> {
    let since = now - Duration::minutes(WINDOW_MINUTES);
    let (email_count, email_oldest): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
        "SELECT count(*), min(failed_at) FROM (SELECT failed_at FROM login_failures
           WHERE email_normalized = $1 AND failed_at > $2 ORDER BY failed_at DESC LIMIT $3) recent",
    )
    .bind(email)
    .bind(since)
    .bind(max)
    .fetch_one(pool)
    .await?;
    let mut blocked_until: Option<DateTime<Utc>> = None;
    if email_count >= max {
        blocked_until = email_oldest.map(|t| t + Duration::minutes(WINDOW_MINUTES));
    }
    if let Some(ip) = ip {
        let ip_max = max * 4;
        let (ip_count, ip_oldest): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
            "SELECT count(*), min(failed_at) FROM (SELECT failed_at FROM login_failures
               WHERE client_ip = $1 AND failed_at > $2 ORDER BY failed_at DESC LIMIT $3) recent",
        )
        .bind(ip)
        .bind(since)
        .bind(ip_max)
        .fetch_one(pool)
        .await?;
        if ip_count >= ip_max {
            let until = ip_oldest.map(|t| t + Duration::minutes(WINDOW_MINUTES));
            blocked_until = blocked_until.max(until);
        }
    }
    Ok(blocked_until.map(|t| (t - now).num_seconds().max(1) as u64))
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
