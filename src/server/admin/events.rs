//! An operator puts a customer's parked webhook event or usage event back in its queue, with a
//! reason: the re-queue and its audit row (the event's state before and after) in one
//! transaction, a repeated form applied once.

use super::{checked, record, ActionError, Operator};
use crate::server::usage::shipper::{self, Retry};
use crate::server::webhooks::inbox::{self, Requeue};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// What a retry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeued {
    /// Back in the queue, due now.
    Now,
    /// Not parked any more (retried already, by this form or another way): nothing changed.
    Already,
}

/// Puts `customer`'s parked webhook event `webhook_id` back in the queue as `op`.
pub async fn retry_webhook(
    pool: &PgPool,
    op: &Operator,
    customer: Uuid,
    webhook_id: &str,
    reason: &str,
    form_key: &str,
) -> Result<Requeued, ActionError> {
    let reason = checked(reason, form_key)?;
    let mut tx = pool.begin().await?;
    let before: Option<(String, String, i32, Option<String>, bool)> = sqlx::query_as(
        "SELECT event_type, status, attempts, last_error, payload IS NOT NULL FROM webhook_events
          WHERE webhook_id = $1 AND user_id = $2 FOR UPDATE",
    )
    .bind(webhook_id)
    .bind(customer)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((event_type, status, attempts, last_error, has_payload)) = before else {
        return Err(ActionError::NoCustomer);
    };
    if status != "failed" || !has_payload {
        return Ok(Requeued::Already);
    }
    inbox::requeue_parked(&mut *tx, Requeue::OneOf(customer, webhook_id)).await?;
    let recorded = record(
        &mut tx,
        op,
        "retry_webhook",
        customer,
        reason,
        json!({ "webhook": webhook_id, "type": event_type, "status": status, "attempts": attempts, "error": last_error }),
        json!({ "webhook": webhook_id, "status": "pending" }),
        &format!("operator:{form_key}:retry-webhook:{webhook_id}"),
    )
    .await?;
    if !recorded {
        tx.rollback().await?;
        return Ok(Requeued::Already);
    }
    tx.commit().await?;
    tracing::info!(operator = %op.id, %customer, webhook = %webhook_id, "operator re-queued a parked webhook event");
    Ok(Requeued::Now)
}

/// Puts `customer`'s parked usage event (outbox `id`) back in the queue as `op`.
pub async fn retry_usage_event(
    pool: &PgPool,
    op: &Operator,
    customer: Uuid,
    id: i64,
    reason: &str,
    form_key: &str,
) -> Result<Requeued, ActionError> {
    let reason = checked(reason, form_key)?;
    let mut tx = pool.begin().await?;
    let before: Option<(String, String, i32, Option<String>)> = sqlx::query_as(
        "SELECT external_id, status, attempts, last_error FROM usage_outbox WHERE id = $1 AND user_id = $2 FOR UPDATE",
    )
    .bind(id)
    .bind(customer)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((external_id, status, attempts, last_error)) = before else {
        return Err(ActionError::NoCustomer);
    };
    if status != "failed" {
        return Ok(Requeued::Already);
    }
    shipper::retry_parked(&mut *tx, &Retry::OneOf(customer, id)).await?;
    let recorded = record(
        &mut tx,
        op,
        "retry_usage_event",
        customer,
        reason,
        json!({ "usage_event": external_id, "status": status, "attempts": attempts, "error": last_error }),
        json!({ "usage_event": external_id, "status": "pending" }),
        &format!("operator:{form_key}:retry-usage:{id}"),
    )
    .await?;
    if !recorded {
        tx.rollback().await?;
        return Ok(Requeued::Already);
    }
    tx.commit().await?;
    tracing::info!(operator = %op.id, %customer, usage_event = id, "operator re-queued a parked usage event");
    Ok(Requeued::Now)
}
