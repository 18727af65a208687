//! What each Polar event does. Every handler is idempotent by business key (the ledger's keys:
//! `order:<id>`, `refund:<id>`), so a redelivered or replayed event changes nothing twice.
//! Event types without a handler are stored and skipped.

use crate::server::config::Config;
use crate::server::ledger;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Skipped,
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("{0}")]
    Invalid(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

pub async fn handle(conn: &mut PgConnection, config: &Config, event_type: &str, payload: &Value, now: DateTime<Utc>) -> Result<Outcome, HandlerError> {
    let data = &payload["data"];
    match event_type {
        "order.paid" => order_paid(conn, config, data, now).await,
        "order.refunded" => order_refunded(conn, config, data, now).await,
        _ => Ok(Outcome::Skipped),
    }
}

/// The Tally user an order belongs to (`customer.external_id` is the user id).
async fn order_user(conn: &mut PgConnection, data: &Value) -> Result<Uuid, HandlerError> {
    let external = data["customer"]["external_id"]
        .as_str()
        .ok_or_else(|| HandlerError::Invalid("order has no customer.external_id".into()))?;
    let id = Uuid::parse_str(external).map_err(|_| HandlerError::Invalid(format!("customer.external_id `{external}` is not a Tally user id")))?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)").bind(id).fetch_one(&mut *conn).await?;
    if !exists {
        return Err(HandlerError::Invalid(format!("no user {id} for this order")));
    }
    Ok(id)
}

/// Credits a one-time product grants: `metadata.credits` on the product (number or numeric
/// string), else the configured pack products.
pub fn pack_credits(config: &Config, data: &Value) -> Option<i64> {
    let meta = &data["product"]["metadata"]["credits"];
    let from_meta = meta.as_i64().or_else(|| meta.as_str().and_then(|s| s.trim().parse().ok()));
    let product_id = data["product_id"].as_str().or_else(|| data["product"]["id"].as_str());
    let from_config = product_id.and_then(|p| {
        let products = &config.polar.products;
        if products.pack_50.as_deref() == Some(p) {
            Some(50)
        } else if products.pack_100.as_deref() == Some(p) {
            Some(100)
        } else {
            None
        }
    });
    from_meta.or(from_config).filter(|c| *c > 0)
}

async fn order_paid(conn: &mut PgConnection, config: &Config, data: &Value, now: DateTime<Utc>) -> Result<Outcome, HandlerError> {
    // Subscription orders (start, renewal, upgrade) are handled through subscription events.
    if data["billing_reason"].as_str() != Some("purchase") {
        return Ok(Outcome::Skipped);
    }
    let Some(credits) = pack_credits(config, data) else { return Ok(Outcome::Skipped) };
    let order_id = data["id"].as_str().ok_or_else(|| HandlerError::Invalid("order has no id".into()))?;
    let user = order_user(conn, data).await?;
    let product_id = data["product_id"].as_str().unwrap_or_default();
    ledger::grant_pack(conn, user, order_id, credits, product_id, now).await?;
    Ok(Outcome::Done)
}

async fn order_refunded(conn: &mut PgConnection, config: &Config, data: &Value, now: DateTime<Utc>) -> Result<Outcome, HandlerError> {
    if data["billing_reason"].as_str() != Some("purchase") || pack_credits(config, data).is_none() {
        return Ok(Outcome::Skipped);
    }
    // Only a full refund takes the pack back; a partial refund is a goodwill gesture on the
    // price and leaves the credits.
    let total = data["total_amount"].as_i64().unwrap_or(0);
    let refunded = data["refunded_amount"].as_i64().unwrap_or(0);
    if refunded < total || total == 0 {
        return Ok(Outcome::Skipped);
    }
    let order_id = data["id"].as_str().ok_or_else(|| HandlerError::Invalid("order has no id".into()))?;
    let user = order_user(conn, data).await?;
    ledger::clawback_pack(conn, user, order_id, now).await?;
    Ok(Outcome::Done)
}
