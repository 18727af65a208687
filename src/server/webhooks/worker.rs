//! Processes the webhook inbox. Safe with any number of app instances and workers: events are
//! claimed in batches with `FOR UPDATE SKIP LOCKED` (plain PostgreSQL; a job crate would add a
//! second queue table and its own runtime for what one indexed query does). Each event's
//! effects and its done-mark commit together, so a crash (even `kill -9`) mid-batch leaves its
//! events pending with no effect, and they are simply processed again.

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

/// The claim: up to `$2` events due at `$1`, oldest first, that no other worker holds.
/// `webhook_events_claim_idx` (received_at of pending rows) serves its order: a claim reads
/// the first due rows of the index, however long the backlog.
pub const CLAIM_SQL: &str = "SELECT webhook_id, event_type, payload, attempts, user_id FROM webhook_events
      WHERE status = 'pending' AND next_attempt_at <= $1
      ORDER BY received_at LIMIT $2 FOR UPDATE SKIP LOCKED";

/// Claims and processes one due event; `Ok(false)` when none is due.
pub async fn process_one(pool: &PgPool, config: &Config, now: DateTime<Utc>) -> Result<bool, sqlx::Error> {
    Ok(process_batch(pool, config, None, now, 1).await? > 0)
}

/// Claims up to `max` due events, oldest first, and processes them in one transaction; returns
/// how many it claimed (0: none was due). Each event's effects are all-or-nothing in a
/// savepoint of their own: a failing event rolls back alone and is recorded for a retry, and
/// never undoes another's. The done-marks of the events handled go in one statement, then
/// the whole batch commits; a crash before that (even `kill -9`) leaves every event of the
/// batch pending with no effect. Once committed, the Redis entries of the customers concerned
/// are dropped (when `REDIS_URL` is set).
///
/// Events are handled in the order received, once the batch holds a lock on each of its
/// customers, taken in one order by every worker: two workers whose batches share customers
/// wait for each other instead of deadlocking.
pub async fn process_batch(
    pool: &PgPool,
    config: &Config,
    redis: Option<&RedisCache>,
    now: DateTime<Utc>,
    max: i64,
) -> Result<usize, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let due: Vec<DueEvent> = sqlx::query_as(CLAIM_SQL).bind(now).bind(max).fetch_all(&mut *tx).await?;
    if due.is_empty() {
        return Ok(0);
    }
    // Before any handler runs, the batch's customers themselves (transaction-scoped advisory
    // locks), in one statement, in the order of their keys: whatever rows the handlers then
    // touch, and in whatever order, two workers whose batches share customers meet at these
    // locks first, taken in the same order by both, so one waits instead of deadlocking.
    // (PostgreSQL evaluates a volatile function of the select list after the ORDER BY.)
    let users: Vec<uuid::Uuid> = due.iter().filter_map(|e| e.user_id).collect();
    if !users.is_empty() {
        sqlx::query(
            "SELECT pg_advisory_xact_lock(k) FROM (
                 SELECT DISTINCT hashtextextended('tally.webhook.customer:' || u::text, 0) AS k FROM unnest($1::uuid[]) u
             ) keys ORDER BY k",
        )
        .bind(&users)
        .execute(&mut *tx)
        .await?;
    }
    let mut handled: Vec<(String, &'static str)> = Vec::with_capacity(due.len());
    let mut customers = Vec::new();
    for DueEvent { webhook_id, event_type, payload, attempts, .. } in &due {
        let payload = payload.clone().unwrap_or(Value::Null);
        let mut sp = tx.begin().await?;
        match handle_caught(sp.acquire().await?, config, event_type, &payload, now).await {
            Ok(outcome) => {
                sp.commit().await?;
                let status = if outcome == Outcome::Done { "done" } else { "skipped" };
                tracing::info!(%webhook_id, %event_type, status, "webhook processed");
                handled.push((webhook_id.clone(), status));
                customers.extend(handlers::event_user(event_type, &payload));
            }
            Err(e) => {
                sp.rollback().await?;
                record_failure(&mut tx, webhook_id, event_type, attempts + 1, &e.to_string(), now).await?;
            }
        }
    }
    if !handled.is_empty() {
        let (ids, statuses): (Vec<String>, Vec<&str>) = handled.into_iter().unzip();
        // An event about a deleted account keeps no personal data once handled. processed_at
        // is taken now, as the batch is about to commit (what "applied" means to a reader).
        sqlx::query(
            "UPDATE webhook_events w SET status = d.status, attempts = w.attempts + 1, processed_at = clock_timestamp(), last_error = NULL,
                    payload = CASE WHEN EXISTS (SELECT 1 FROM users u WHERE u.id = w.user_id AND u.deleted_at IS NOT NULL) THEN NULL ELSE w.payload END
               FROM unnest($1::text[], $2::text[]) AS d(id, status)
              WHERE w.webhook_id = d.id",
        )
        .bind(&ids)
        .bind(&statuses)
        .execute(&mut *tx)
        .await?;
    }
    failpoint_before_commit(&due[0].webhook_id).await;
    tx.commit().await?;
    if let Some(r) = redis {
        for user in customers {
            r.forget(user).await;
        }
    }
    Ok(due.len())
}

/// Runs the event's handler. A handler that panics on some payload is an error like any
/// other: retried, then parked. Otherwise the event would roll back unrecorded and be claimed
/// first again, for ever, holding up every event behind it.
async fn handle_caught(
    conn: &mut sqlx::PgConnection,
    config: &Config,
    event_type: &str,
    payload: &Value,
    now: DateTime<Utc>,
) -> Result<Outcome, handlers::HandlerError> {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(handlers::handle(conn, config, event_type, payload, now)).catch_unwind().await {
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
}

/// Records a failed attempt: due again after [`backoff`], or parked as `failed` after
/// [`MAX_ATTEMPTS`].
async fn record_failure(
    tx: &mut sqlx::PgConnection,
    webhook_id: &str,
    event_type: &str,
    attempts: i32,
    error: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let parked = attempts >= MAX_ATTEMPTS;
    sqlx::query(
        "UPDATE webhook_events SET attempts = $2, last_error = $3, status = $4, next_attempt_at = $5, last_failed_at = $6
          WHERE webhook_id = $1",
    )
        .bind(webhook_id)
        .bind(attempts)
        .bind(error)
        .bind(if parked { "failed" } else { "pending" })
        .bind(now + backoff(attempts))
        .bind(now)
        .execute(&mut *tx)
        .await?;
    if parked {
        tracing::error!(%webhook_id, %event_type, attempts, %error, "webhook parked as failed");
    } else {
        tracing::warn!(%webhook_id, %event_type, attempts, %error, "webhook handler failed; will retry");
    }
    Ok(())
}

/// A due event, as the worker claims it.
#[derive(sqlx::FromRow)]
struct DueEvent {
    webhook_id: String,
    event_type: String,
    payload: Option<Value>,
    attempts: i32,
    /// The Tally user it names, when the receiver could tell.
    user_id: Option<uuid::Uuid>,
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

/// Runs forever: drains due events in batches of `config.webhook_batch`, then waits for a
/// new delivery or a second. An instance runs `config.webhook_workers` of these.
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
            match process_batch(&pool, &config, redis.as_ref(), Utc::now(), config.webhook_batch).await {
                Ok(0) => break,
                // Alive while it drains a backlog, not only between backlogs.
                Ok(_) => heartbeat.beat(),
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
