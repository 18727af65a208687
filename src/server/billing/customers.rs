//! The user's Polar customer: one per user, `external_id` = the user's id. Created (or linked,
//! if Polar has it already) in the background after sign-up and retried with backoff while
//! Polar is down, so sign-up never waits for Polar; `polar_customers.status` says where each
//! stands (`pending`, `linked`, `failed` with `last_error`, `deleted`).

use super::Billing;
use super::{Error, Result};
use crate::server::polar::{PolarClient, PolarError};
use sqlx::PgPool;
use uuid::Uuid;

/// Records that `user` needs a Polar customer; the background task creates or links it.
pub async fn customer_pending(pool: &PgPool, user: Uuid) -> Result<()> {
    sqlx::query("INSERT INTO polar_customers (user_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(user)
        .execute(pool)
        .await?;
    Ok(())
}

/// Creates or links the user's Polar customer. Idempotent: an existing customer is linked; a
/// creation race resolves to the one that won.
pub async fn ensure_customer(billing: &Billing, client: &PolarClient, user: Uuid) -> Result<String> {
    let email: String =
        sqlx::query_scalar("SELECT email FROM users WHERE id = $1").bind(user).fetch_one(&billing.pool).await?;
    let external = user.to_string();
    let result = match client.get_customer(&external).await {
        Ok(c) => Ok(c),
        Err(PolarError::NotFound { .. }) => match client.create_customer(&email, &external, None).await {
            Err(PolarError::Invalid { ref issues, .. }) if issues.iter().any(|i| i.field() == Some("external_id")) => {
                client.get_customer(&external).await
            }
            other => other,
        },
        Err(e) => Err(e),
    };
    match result {
        Ok(c) => {
            sqlx::query(
                "INSERT INTO polar_customers (user_id, polar_customer_id, status, attempts, last_error, updated_at) VALUES ($1, $2, 'linked', 0, NULL, now())
                 ON CONFLICT (user_id) DO UPDATE SET polar_customer_id = $2, status = 'linked', last_error = NULL, updated_at = now()",
            )
            .bind(user)
            .bind(&c.id)
            .execute(&billing.pool)
            .await?;
            Ok(c.id)
        }
        Err(e) => {
            // Outages are retried with backoff; a refusal (e.g. the email belongs to another
            // customer) waits for a person: it is kept visible on the row.
            let (status, delay) = if e.is_unavailable() { ("pending", 30) } else { ("failed", 3600) };
            sqlx::query(
                "INSERT INTO polar_customers (user_id, status, attempts, last_error, next_attempt_at) VALUES ($1, $2, 1, $3, now() + make_interval(secs => $4))
                 ON CONFLICT (user_id) DO UPDATE SET status = $2, attempts = polar_customers.attempts + 1, last_error = $3,
                     next_attempt_at = now() + make_interval(secs => $4 * least(power(2, polar_customers.attempts), 64)), updated_at = now()",
            )
            .bind(user)
            .bind(status)
            .bind(e.to_string())
            .bind(delay as f64)
            .execute(&billing.pool)
            .await?;
            Err(Error::from(e))
        }
    }
}

/// Background: creates or links pending Polar customers (sign-ups while Polar was down).
pub async fn sync_pending_customers(billing: Billing) {
    // Spawned only when Polar is configured; its own client and breaker (background work).
    let Ok(client) = super::polar_background(&billing) else { return };
    loop {
        let due: Vec<Uuid> = sqlx::query_scalar(
            "SELECT user_id FROM polar_customers WHERE status = 'pending' AND next_attempt_at <= now() ORDER BY next_attempt_at LIMIT 20",
        )
        .fetch_all(&billing.pool)
        .await
        .unwrap_or_default();
        for user in due {
            if let Err(e) = ensure_customer(&billing, client, user).await {
                tracing::info!(%user, error = %e, "Polar customer not linked yet");
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    }
}
