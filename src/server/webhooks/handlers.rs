//! What each Polar event does: a short dispatcher from the typed event to
//! [`billing::sync`](crate::server::billing::sync), where every effect lives and is
//! idempotent by business key. Events about customers who are not Tally users, and types
//! Tally does not act on, are skipped.

use crate::server::billing::sync::{self, Applied};
use crate::server::config::Config;
use crate::server::webhooks::events::{CustomerEvent, OrderEvent, WebhookEvent};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;

pub use sync::Applied as Outcome;

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The event cannot be applied as it is (retried, then parked for a person).
    #[error("{0}")]
    Invalid(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

impl From<sync::Error> for HandlerError {
    fn from(e: sync::Error) -> Self {
        match e {
            sync::Error::Invalid(m) => HandlerError::Invalid(m),
            sync::Error::Db(e) => HandlerError::Db(e),
        }
    }
}

/// Applies one stored event (`payload` is the whole delivery: `{"type", "data", …}`).
pub async fn handle(
    conn: &mut PgConnection,
    config: &Config,
    event_type: &str,
    payload: &Value,
    now: DateTime<Utc>,
) -> Result<Outcome, HandlerError> {
    // Debug builds only (compiled out of release): an event type that makes the handler panic,
    // so a test can prove that a panicking handler is retried and parked, not stuck.
    #[cfg(debug_assertions)]
    if event_type == "tally.test.panic" {
        panic!("test failpoint: a handler panicked");
    }
    Ok(match WebhookEvent::parse(event_type, payload).map_err(HandlerError::Invalid)? {
        WebhookEvent::Order { event, order } => {
            sync::order_seen(conn, &order).await?;
            match event {
                OrderEvent::Paid => sync::order_paid(conn, config, &order, now).await?,
                OrderEvent::Refunded => sync::order_refunded(conn, config, &order, now).await?,
                OrderEvent::Other => Applied::Skipped,
            }
        }
        WebhookEvent::Subscription(sub) => sync::subscription(conn, config, &sub, now).await?,
        WebhookEvent::Customer { event: CustomerEvent::Changed, customer } => {
            sync::customer_changed(conn, &customer).await?
        }
        WebhookEvent::Customer { event: CustomerEvent::Deleted, customer } => {
            sync::customer_deleted(conn, &customer).await?
        }
        WebhookEvent::Unknown { .. } => Applied::Skipped,
    })
}

/// The Tally user an event names (see [`WebhookEvent::user_hint`]).
pub fn event_user(event_type: &str, payload: &Value) -> Option<uuid::Uuid> {
    WebhookEvent::user_hint(event_type, payload)
}
