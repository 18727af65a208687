//! The inbox as people see it: one customer's events, and parked events put back in the queue
//! (by `tally webhooks retry` and by an operator in the console).

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

/// A stored event as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredEvent {
    pub webhook_id: String,
    pub event_type: String,
    /// `pending`, `done`, `skipped` or `failed` (parked).
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub received_at: DateTime<Utc>,
    /// Whether it can be processed again (a parked body that was not JSON cannot).
    pub has_payload: bool,
}

/// The newest `limit` events about `user`, newest first.
pub async fn of_customer<'e>(db: impl PgExecutor<'e>, user: Uuid, limit: i64) -> Result<Vec<StoredEvent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT webhook_id, event_type, status, attempts, last_error, received_at, payload IS NOT NULL AS has_payload
           FROM webhook_events WHERE user_id = $1 ORDER BY received_at DESC, webhook_id LIMIT $2",
    )
    .bind(user)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Which parked events to put back in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue<'a> {
    /// Every parked event that has a payload.
    All,
    /// One, by its `webhook-id`.
    One(&'a str),
    /// One, by its `webhook-id`, only if it is about `user`.
    OneOf(Uuid, &'a str),
}

/// Puts parked (`failed`) events with a payload back in the queue, due now, attempts reset.
/// Processing is idempotent per event, so an event applied before it was parked changes
/// nothing more. Returns how many were re-queued.
pub async fn requeue_parked<'e>(db: impl PgExecutor<'e>, which: Requeue<'_>) -> Result<u64, sqlx::Error> {
    let (all, id, user) = match which {
        Requeue::All => (true, None, None),
        Requeue::One(id) => (false, Some(id), None),
        Requeue::OneOf(user, id) => (false, Some(id), Some(user)),
    };
    let done = sqlx::query(
        "UPDATE webhook_events SET status = 'pending', attempts = 0, next_attempt_at = now()
          WHERE status = 'failed' AND payload IS NOT NULL
            AND ($1 OR webhook_id = $2) AND ($3::uuid IS NULL OR user_id = $3)",
    )
    .bind(all)
    .bind(id)
    .bind(user)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
