//! API keys: `tly_` + 256 random bits, shown once; the database keeps only SHA-256(key).

use crate::server::util::random_token;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

pub const PREFIX: &str = "tly_";

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApiKeyRow {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

fn hash(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// Creates a key and returns (its id, the plaintext key), or `None` when the user already has
/// `max_live` live keys. The plaintext exists only here. The user's row is locked so two
/// concurrent requests cannot both take the last place.
pub async fn create(
    pool: &PgPool,
    user_id: Uuid,
    name: &str,
    max_live: i64,
) -> Result<Option<(Uuid, String)>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE").bind(user_id).execute(&mut *tx).await?;
    if count_live(&mut tx, user_id).await? >= max_live {
        return Ok(None);
    }
    let key = format!("{PREFIX}{}", random_token(32));
    let prefix: String = key.chars().take(PREFIX.len() + 6).collect();
    let id = sqlx::query_scalar(
        "INSERT INTO api_keys (user_id, name, prefix, key_hash) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(user_id)
    .bind(name)
    .bind(prefix)
    .bind(hash(&key))
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some((id, key)))
}

/// How many live (not revoked) keys the user has.
async fn count_live(conn: &mut sqlx::PgConnection, user_id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL")
        .bind(user_id)
        .fetch_one(conn)
        .await
}

/// A user's keys that are not revoked, newest first.
pub async fn list(pool: &PgPool, user_id: Uuid) -> Result<Vec<ApiKeyRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, name, prefix, created_at, last_used_at FROM api_keys
          WHERE user_id = $1 AND revoked_at IS NULL ORDER BY created_at DESC",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await
}

/// Revokes one of the user's own keys. Returns false when there is no such live key.
pub async fn revoke(pool: &PgPool, user_id: Uuid, key_id: Uuid) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL")
            .bind(key_id)
            .bind(user_id)
            .execute(pool)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// The (key id, user id) a presented key belongs to, if it is live.
///
/// This runs on every metered call, so it only reads: `last_used_at` is refreshed at most
/// once a minute, and concurrent calls with one key never queue on its row.
pub async fn authenticate(pool: &PgPool, key: &str) -> Result<Option<(Uuid, Uuid)>, sqlx::Error> {
    if !key.starts_with(PREFIX) || key.len() > 128 {
        return Ok(None);
    }
    let row: Option<(Uuid, Uuid, bool)> = sqlx::query_as(
        "SELECT id, user_id, last_used_at IS NULL OR last_used_at < now() - interval '1 minute'
           FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
    )
    .bind(hash(key))
    .fetch_optional(pool)
    .await?;
    let Some((id, user_id, stale)) = row else { return Ok(None) };
    if stale {
        sqlx::query("UPDATE api_keys SET last_used_at = now() WHERE id = $1").bind(id).execute(pool).await?;
    }
    Ok(Some((id, user_id)))
}
