//! Creating accounts and checking credentials.

use crate::domain::email::{check_new_password, Email};
use crate::error::AppError;
use crate::server::auth::{password, rate_limit};
use chrono::Utc;
use sqlx::PgPool;
use uuid::Uuid;

/// Name of the unique index on `lower(email)` (migrations/…_accounts.sql).
const EMAIL_UNIQUE: &str = "users_email_lower_key";

/// Validates and creates an account with its one-time free credits, in one transaction. Field
/// errors name the field; a taken address is a `Conflict` on `email`.
pub async fn sign_up(pool: &PgPool, email: &str, password_raw: &str, free_credits: i64) -> Result<Uuid, AppError> {
    let email = Email::parse(email).map_err(|e| AppError::validation("email", e.to_string()))?;
    check_new_password(password_raw).map_err(|m| AppError::validation("password", m))?;
    let hash = password::hash(password_raw.to_string()).await.map_err(AppError::internal)?;
    let mut tx = pool.begin().await.map_err(AppError::internal)?;
    let inserted = sqlx::query_scalar::<_, Uuid>("INSERT INTO users (email, password_hash) VALUES ($1, $2) RETURNING id")
        .bind(email.as_str())
        .bind(hash)
        .fetch_one(&mut *tx)
        .await;
    match inserted {
        Ok(id) => {
            crate::server::ledger::grant_free(&mut tx, id, free_credits, Utc::now()).await.map_err(AppError::internal)?;
            tx.commit().await.map_err(AppError::internal)?;
            tracing::info!(user_id = %id, "account created");
            Ok(id)
        }
        Err(sqlx::Error::Database(e)) if e.constraint() == Some(EMAIL_UNIQUE) => Err(AppError::Conflict {
            field: Some("email".into()),
            message: "An account with this email already exists. Sign in instead.".into(),
        }),
        Err(e) => Err(AppError::internal(e)),
    }
}

/// Checks credentials under the rate limit. Unknown email and wrong password give the same
/// error and take the same time.
pub async fn sign_in(pool: &PgPool, email_raw: &str, password_raw: &str, client_ip: Option<&str>, max_failures: i64) -> Result<Uuid, AppError> {
    let normalized = email_raw.trim().to_lowercase();
    if normalized.is_empty() {
        return Err(AppError::validation("email", "Enter your email address."));
    }
    if password_raw.is_empty() {
        return Err(AppError::validation("password", "Enter your password."));
    }
    let now = Utc::now();
    if let Some(secs) = rate_limit::retry_after(pool, &normalized, client_ip, max_failures, now).await.map_err(AppError::internal)? {
        tracing::warn!(retry_after_secs = secs, "sign-in rate limited");
        return Err(AppError::RateLimited { retry_after_secs: secs });
    }
    let row: Option<(Uuid, String)> = sqlx::query_as("SELECT id, password_hash FROM users WHERE lower(email) = $1")
        .bind(&normalized)
        .fetch_optional(pool)
        .await
        .map_err(AppError::internal)?;
    let (id, stored) = match row {
        Some((id, h)) => (Some(id), Some(h)),
        None => (None, None),
    };
    if password::verify(password_raw.to_string(), stored).await {
        rate_limit::clear_for_email(pool, &normalized).await.map_err(AppError::internal)?;
        Ok(id.expect("verified implies the account exists"))
    } else {
        rate_limit::record_failure(pool, &normalized, client_ip, now).await.map_err(AppError::internal)?;
        Err(AppError::InvalidCredentials)
    }
}
