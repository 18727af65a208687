//! Processes the webhook inbox. Safe with any number of app instances: each event is claimed
//! with `FOR UPDATE SKIP LOCKED` (plain PostgreSQL; a job crate would add a second queue
//! table and its own runtime for what one indexed query does). The handler's effects and the
//! event's done-mark commit in one transaction, so a crash (even `kill -9`) mid-event leaves
//! the event pending with no effect, and it is simply processed again.

use crate::server::config::Config;
use crate::server::state_cache::RedisCache;
use crate::server::webhooks::handlers::{self, Outcome};
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use sqlx::{Acquire, PgPool};
use std::sync::Arc;
use tokio::sync::Notify;

/// Attempts before an event is parked as `failed`.
pub const MAX_ATTEMPTS: i32 = 8;

/// Delay before attempt `attempts + 1`: 2, 4, 8 … seconds, at most an hour.
pub fn backoff(attempts: i32) -> Duration {
    Duration::seconds(2i64.saturating_pow(attempts.clamp(1, 30) as u32).min(3600))
}

/// Claims and processes one due event; `Ok(false)` when none is due.
pub async fn process_one(pool: &PgPool, config: &Config, now: DateTime<Utc>) -> Result<bool, sqlx::Error> {
    process_one_with(pool, config, None, now).await
}

/// [`process_one`], then, once the event's effects have committed, drops the Redis entry of
/// the customer it concerned (when `REDIS_URL` is set).
pub async fn process_one_with(
    pool: &PgPool,
    config: &Config,
    redis: Option<&RedisCache>,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let row: Option<DueEvent> = sqlx::query_as(
        "SELECT webhook_id, event_type, payload, attempts FROM webhook_events
          WHERE status = 'pending' AND next_attempt_at <= $1
          ORDER BY received_at LIMIT 1 FOR UPDATE SKIP LOCKED",
    )
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(DueEvent { webhook_id, event_type, payload, attempts }) = row else {
        return Ok(false);
    };
    let payload = payload.unwrap_or(Value::Null);
    // The handler runs in a savepoint: its effects commit with the done-mark, or roll back
    // alone while the attempt is still recorded.
    let mut sp = tx.begin().await?;
    // A handler that panics on some payload is an error like any other: retried, then parked.
    // Otherwise the event would roll back unrecorded and be picked first again, for ever,
    // holding up every event behind it.
    let result = {
        use futures::FutureExt;
        match std::panic::AssertUnwindSafe(handlers::handle(sp.acquire().await?, config, &event_type, &payload, now))
            .catch_unwind()
            .await
        {
            Ok(r) => r,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(handlers::HandlerError::Invalid(format!("the handler panicked: {what}")))
            }
        }
    };
    match result {
        Ok(outcome) => {
            sp.commit().await?;
            let status = if outcome == Outcome::Done { "done" } else { "skipped" };
            // An event about a deleted account keeps no personal data once handled.
            sqlx::query(
                "UPDATE webhook_events SET status = $2, attempts = attempts + 1, processed_at = $3, last_error = NULL,
                        payload = CASE WHEN EXISTS (SELECT 1 FROM users u WHERE u.id = webhook_events.user_id AND u.deleted_at IS NOT NULL) THEN NULL ELSE payload END
                  WHERE webhook_id = $1",
            )
                .bind(&webhook_id)
                .bind(status)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tracing::info!(%webhook_id, %event_type, status, "webhook processed");
        }
        Err(e) => {
            sp.rollback().await?;
            let attempts = attempts + 1;
            let parked = attempts >= MAX_ATTEMPTS;
            sqlx::query("UPDATE webhook_events SET attempts = $2, last_error = $3, status = $4, next_attempt_at = $5 WHERE webhook_id = $1")
                .bind(&webhook_id)
                .bind(attempts)
                .bind(e.to_string())
                .bind(if parked { "failed" } else { "pending" })
                .bind(now + backoff(attempts))
                .execute(&mut *tx)
                .await?;
            if parked {
                tracing::error!(%webhook_id, %event_type, attempts, error = %e, "webhook parked as failed");
            } else {
                tracing::warn!(%webhook_id, %event_type, attempts, error = %e, "webhook handler failed; will retry");
            }
        }
    }
    failpoint_before_commit(&webhook_id).await;
    tx.commit().await?;
    if let (Some(r), Some(user)) = (redis, handlers::event_user(&event_type, &payload)) {
        r.forget(user).await;
    }
    Ok(true)
}

/// The oldest event that is due, as the worker claims it.
#[derive(sqlx::FromRow)]
struct DueEvent {
    webhook_id: String,
    event_type: String,
    payload: Option<Value>,
    attempts: i32,
}

/// Test builds only: with `TALLY_TEST_FAILPOINT=worker-before-commit`, the worker stops for
/// good after an event's effects and its done-mark are written but before they commit, so a
/// test can `kill -9` the process at exactly that point (`tests/webhooks.rs`). Compiled out of
/// release builds.
#[cfg(debug_assertions)]
async fn failpoint_before_commit(webhook_id: &str) {
    if std::env::var("TALLY_TEST_FAILPOINT").as_deref() == Ok("worker-before-commit") {
        eprintln!("failpoint worker-before-commit reached for {webhook_id}");
        std::future::pending::<()>().await;
    }
}

#[cfg(not(debug_assertions))]
async fn failpoint_before_commit(_: &str) {}

/// Runs forever: drains due events, then waits for a new delivery or a second.
pub async fn run(
    pool: PgPool,
    config: Arc<Config>,
    wakeup: Arc<Notify>,
    redis: Option<RedisCache>,
    heartbeat: crate::server::supervisor::Heartbeat,
) {
    loop {
        heartbeat.beat();
        loop {
            match process_one_with(&pool, &config, redis.as_ref(), Utc::now()).await {
                Ok(true) => {
                    // Alive while it drains a backlog, not only between backlogs.
                    heartbeat.beat();
                    continue;
                }
                Ok(false) => break,
                Err(e) => {
                    tracing::error!(error = %e, "webhook worker: database error");
                    break;
                }
            }
        }
        tokio::select! {
            _ = wakeup.notified() => {}
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        assert_eq!(backoff(1), Duration::seconds(2));
        assert_eq!(backoff(2), Duration::seconds(4));
        assert_eq!(backoff(7), Duration::seconds(128));
        assert_eq!(backoff(20), Duration::seconds(3600));
    }
}
