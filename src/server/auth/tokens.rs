//! Single-use, expiring account tokens (email verification, password reset). The link
//! carries 256 random bits; only their SHA-256 is stored, so the table alone opens nothing.
//! [`consume`] marks a token used in the same statement that finds it, so two clicks (or two
//! instances) can never both use one.

use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    VerifyEmail,
    ResetPassword,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::VerifyEmail => "verify_email",
            Purpose::ResetPassword => "reset_password",
        }
    }

    /// How long a link works.
    pub fn lifetime(self) -> Duration {
        match self {
            Purpose::VerifyEmail => Duration::hours(24),
            Purpose::ResetPassword => Duration::hours(1),
        }
    }
}

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Issues a token for `user` and `email`; returns the token for the link.
pub async fn issue(
    conn: &mut PgConnection,
    user: Uuid,
    purpose: Purpose,
    email: &str,
    now: DateTime<Utc>,
) -> Result<String, sqlx::Error> {
    let token = crate::server::util::random_token(32);
    sqlx::query("INSERT INTO account_tokens (token_hash, user_id, purpose, email, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(hash(&token))
        .bind(user)
        .bind(purpose.as_str())
        .bind(email)
        .bind(now)
        .bind(now + purpose.lifetime())
        .execute(conn)
        .await?;
    Ok(token)
}

/// Uses a token: `(user, email it was sent to)` if it exists for `purpose`, is unused and has
/// not expired; it can never be used again.
pub async fn consume(
    conn: &mut PgConnection,
    token: &str,
    purpose: Purpose,
    now: DateTime<Utc>,
) -> Result<Option<(Uuid, String)>, sqlx::Error> {
    if token.is_empty() || token.len() > 128 {
        return Ok(None);
    }
    sqlx::query_as("UPDATE account_tokens SET used_at = $3 WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3 RETURNING user_id, email")
        .bind(hash(token))
        .bind(purpose.as_str())
        .bind(now)
        .fetch_optional(conn)
        .await
}

/// Whether a token is still usable (a page shows its form only then); nothing is changed.
pub async fn is_usable(
    conn: &mut PgConnection,
    token: &str,
    purpose: Purpose,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    if token.is_empty() || token.len() > 128 {
        return Ok(false);
    }
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM account_tokens WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3)")
        .bind(hash(token))
        .bind(purpose.as_str())
        .bind(now)
        .fetch_one(conn)
        .await
}

/// Retires every other unused token of the user for `purpose` (after a reset, older links die).
pub async fn retire_all(
    conn: &mut PgConnection,
    user: Uuid,
    purpose: Purpose,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE account_tokens SET used_at = $3 WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL")
        .bind(user)
        .bind(purpose.as_str())
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}
