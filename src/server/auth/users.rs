//! Creating accounts and checking credentials.
//!
//! What is bounded, before any work: emails of at most 254 and passwords of at most 1,024
//! bytes (422 otherwise, nothing hashed); sign-ups per client address per hour
//! (`SIGNUP_MAX_PER_HOUR`); sign-in attempts per email and per address (`rate_limit`, counted
//! atomically); and password hashes running at once (`password::Passwords`).

use super::Accounts;
use crate::domain::email::{check_credential_bounds, check_new_password, Email};
use crate::server::auth::rate_limit;
use crate::server::auth::Error;
use crate::server::throttle::{self, Throttle};
use chrono::Utc;
use uuid::Uuid;

/// Name of the unique index on `lower(email)` (migrations/…_accounts.sql).
const EMAIL_UNIQUE: &str = "users_email_lower_key";

fn bounds(email: &str, password: &str) -> Result<(), Error> {
    check_credential_bounds(email, password).map_err(|(field, m)| Error::invalid(field, m))
}

/// Validates and creates an account, and mails it a verification link (its free credits come
/// once the address is confirmed). Field errors name the field; a taken address is a
/// `Taken`; too many sign-ups from one address are `RateLimited`.
pub async fn sign_up(a: Accounts<'_>, email: &str, password_raw: &str, client_ip: Option<&str>) -> Result<Uuid, Error> {
    bounds(email, password_raw)?;
    let email = Email::parse(email).map_err(|e| Error::invalid("email", e.to_string()))?;
    check_new_password(password_raw).map_err(|m| Error::invalid("password", m))?;
    if let Some(ip) = client_ip {
        let t = Throttle { scope: "signup", limit: a.config.signup_max_per_hour, window_secs: 3600 };
        if let Err(secs) = throttle::hit(a.pool, t, ip, Utc::now()).await? {
            tracing::warn!(retry_after_secs = secs, "sign-up throttled for a client address");
            return Err(Error::RateLimited(secs));
        }
    }
    let hash = a.passwords.hash(password_raw.to_string()).await?;
    let mut tx = a.pool.begin().await?;
    let inserted =
        sqlx::query_scalar::<_, Uuid>("INSERT INTO users (email, password_hash) VALUES ($1, $2) RETURNING id")
            .bind(email.as_str())
            .bind(hash)
            .fetch_one(&mut *tx)
            .await;
    match inserted {
        Ok(id) => {
            // The free credits come with the confirmed address (`recovery::verify_email`).
            crate::server::auth::recovery::queue_verification(&mut tx, a, id, email.as_str()).await?;
            tx.commit().await?;
            a.mailer.wake();
            tracing::info!(user_id = %id, "account created");
            Ok(id)
        }
        Err(sqlx::Error::Database(e)) if e.constraint() == Some(EMAIL_UNIQUE) => Err(Error::Taken),
        Err(e) => Err(Error::Db(e)),
    }
}

/// Checks credentials under the rate limit. Unknown email and wrong password give the same
/// error and take the same time.
pub async fn sign_in(
    a: Accounts<'_>,
    email_raw: &str,
    password_raw: &str,
    client_ip: Option<&str>,
) -> Result<Uuid, Error> {
    bounds(email_raw, password_raw)?;
    let normalized = email_raw.trim().to_lowercase();
    if normalized.is_empty() {
        return Err(Error::invalid("email", "Enter your email address."));
    }
    if password_raw.is_empty() {
        return Err(Error::invalid("password", "Enter your password."));
    }
    let attempt =
        match rate_limit::begin(a.pool, &normalized, client_ip, a.config.login_max_failures, Utc::now()).await? {
            Ok(attempt) => attempt,
            Err(secs) => {
                tracing::warn!(retry_after_secs = secs, "sign-in rate limited");
                return Err(Error::RateLimited(secs));
            }
        };
    let row: Option<(Uuid, String)> =
        sqlx::query_as("SELECT id, password_hash FROM users WHERE lower(email) = $1 AND deleted_at IS NULL")
            .bind(&normalized)
            .fetch_optional(a.pool)
            .await?;
    let (id, stored) = match row {
        Some((id, h)) => (Some(id), Some(h)),
        None => (None, None),
    };
    match a.passwords.verify(password_raw.to_string(), stored).await {
        Ok(true) => {
            rate_limit::succeeded(a.pool, &normalized, attempt).await?;
            id.ok_or_else(|| Error::Hashing("a password verified for no account".into()))
        }
        Ok(false) => Err(Error::InvalidCredentials),
        Err(e) => {
            rate_limit::abandoned(a.pool, attempt).await?;
            Err(e.into())
        }
    }
}
