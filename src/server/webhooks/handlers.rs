//! What each Polar event does. Every handler is idempotent by business key (the ledger's keys:
//! `order:<id>`, `refund:<id>:<claimed>`), so a redelivered or replayed event changes nothing
//! twice. Event types without a handler are stored and skipped.
//!
//! Merchant metadata (`credits`, `monthly_credits`) is data someone typed into a dashboard:
//! values outside 1 ..= [`MAX_METADATA_CREDITS`] (and yearly totals that would overflow) are
//! refused with a logged, parked event, never a panic or a wrap.

use crate::domain::credits::{allotment_schedule, AllotmentPolicy};
use crate::domain::plans::PlanId;
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
    /// The customer is not a Tally user.
    #[error("the customer is not a Tally user")]
    NotOurs,
}

pub async fn handle(
    conn: &mut PgConnection,
    config: &Config,
    event_type: &str,
    payload: &Value,
    now: DateTime<Utc>,
) -> Result<Outcome, HandlerError> {
    match dispatch(conn, config, event_type, payload, now).await {
        Err(HandlerError::NotOurs) => Ok(Outcome::Skipped),
        other => other,
    }
}

async fn dispatch(
    conn: &mut PgConnection,
    config: &Config,
    event_type: &str,
    payload: &Value,
    now: DateTime<Utc>,
) -> Result<Outcome, HandlerError> {
    let data = &payload["data"];
    // Debug builds only (compiled out of release): an event type that makes the handler panic,
    // so a test can prove that a panicking handler is retried and parked, not stuck.
    #[cfg(debug_assertions)]
    if event_type == "tally.test.panic" {
        panic!("test failpoint: a handler panicked");
    }
    if event_type.starts_with("order.") {
        // Whose order this is, so its id can be checked before Polar is asked (invoices).
        if let (Some(order_id), Some(user)) = (data["id"].as_str(), user_of_customer(conn, &data["customer"]).await?) {
            crate::server::billing::remember_order(conn, user, order_id).await?;
        }
    }
    match event_type {
        "order.paid" => order_paid(conn, config, data, now).await,
        "order.refunded" => order_refunded(conn, config, data, now).await,
        "subscription.created"
        | "subscription.active"
        | "subscription.updated"
        | "subscription.cycled"
        | "subscription.canceled"
        | "subscription.uncanceled"
        | "subscription.revoked"
        | "subscription.past_due" => subscription_changed(conn, config, data, now).await,
        "customer.state_changed" | "customer.updated" => customer_changed(conn, data).await,
        "customer.deleted" => customer_deleted(conn, data).await,
        _ => Ok(Outcome::Skipped),
    }
}

/// The user (by Polar's `external_id`) an event is about: `data` itself for `customer.*`
/// events, `data.customer` for orders and subscriptions. Not checked against the database.
pub fn event_user(event_type: &str, payload: &Value) -> Option<Uuid> {
    let data = &payload["data"];
    let customer = if event_type.starts_with("customer.") { data } else { &data["customer"] };
    // Checkouts name the customer by `external_customer_id` (they may have no customer yet).
    [&customer["external_id"], &data["external_customer_id"], &data["customer_external_id"]]
        .into_iter()
        .find_map(|v| v.as_str().and_then(|x| Uuid::parse_str(x).ok()))
}

/// The Tally user a customer payload (`data` is the customer) belongs to, if any.
async fn user_of_customer(conn: &mut PgConnection, customer: &Value) -> Result<Option<Uuid>, HandlerError> {
    let Some(id) = customer["external_id"].as_str().and_then(|x| Uuid::parse_str(x).ok()) else { return Ok(None) };
    Ok(sqlx::query_scalar("SELECT id FROM users WHERE id = $1 AND deleted_at IS NULL")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?)
}

/// The customer's state changed at Polar: the cached Customer State is stale; the next read
/// fetches it (re-reading instead of trusting this payload's place in the delivery order).
async fn customer_changed(conn: &mut PgConnection, data: &Value) -> Result<Outcome, HandlerError> {
    let Some(user) = user_of_customer(conn, data).await? else { return Ok(Outcome::Skipped) };
    crate::server::billing::invalidate_state(conn, user).await?;
    Ok(Outcome::Done)
}

/// The customer was deleted at Polar: detach it (a later purchase creates a new one).
async fn customer_deleted(conn: &mut PgConnection, data: &Value) -> Result<Outcome, HandlerError> {
    let Some(user) = user_of_customer(conn, data).await? else { return Ok(Outcome::Skipped) };
    sqlx::query("UPDATE polar_customers SET status = 'deleted', polar_customer_id = NULL, state = NULL, state_fetched_at = NULL, state_stale = false, updated_at = now() WHERE user_id = $1 AND polar_customer_id = $2")
        .bind(user)
        .bind(data["id"].as_str().unwrap_or_default())
        .execute(&mut *conn)
        .await?;
    Ok(Outcome::Done)
}

/// The Tally user an order or subscription belongs to (`customer.external_id` is the user
/// id). `NotOurs` when the customer is not a Tally user (the organization may sell other
/// things, or the account was deleted): such events are acknowledged and skipped.
async fn customer_user(conn: &mut PgConnection, data: &Value) -> Result<Uuid, HandlerError> {
    user_of_customer(conn, &data["customer"]).await?.ok_or(HandlerError::NotOurs)
}

/// The largest credit amount a product's metadata may name (a billion credits).
pub const MAX_METADATA_CREDITS: i64 = 1_000_000_000;

/// A whole number from Polar metadata, which allows numbers and strings alike.
fn metadata_int(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// A credit amount from metadata: `Ok(None)` when absent, an error when present but out of
/// range (logged by the worker, and the event parked for a person to fix the product).
fn metadata_credits(v: &Value, what: &str) -> Result<Option<i64>, HandlerError> {
    if v.is_null() {
        return Ok(None);
    }
    match metadata_int(v) {
        Some(n) if (1..=MAX_METADATA_CREDITS).contains(&n) => Ok(Some(n)),
        _ => Err(HandlerError::Invalid(format!(
            "product metadata `{what}` is {v}, not a whole number from 1 to {MAX_METADATA_CREDITS}"
        ))),
    }
}

/// Credits a one-time product grants: `metadata.credits` on the product (number or numeric
/// string), else the configured pack products.
pub fn pack_credits(config: &Config, data: &Value) -> Result<Option<i64>, HandlerError> {
    let from_meta = metadata_credits(&data["product"]["metadata"]["credits"], "credits")?;
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
    Ok(from_meta.or(from_config))
}

async fn order_paid(
    conn: &mut PgConnection,
    config: &Config,
    data: &Value,
    now: DateTime<Utc>,
) -> Result<Outcome, HandlerError> {
    // Subscription orders (start, renewal, upgrade) are handled through subscription events.
    if data["billing_reason"].as_str() != Some("purchase") {
        return Ok(Outcome::Skipped);
    }
    let Some(credits) = pack_credits(config, data)? else { return Ok(Outcome::Skipped) };
    let order_id = data["id"].as_str().ok_or_else(|| HandlerError::Invalid("order has no id".into()))?;
    let user = customer_user(conn, data).await?;
    let product_id = data["product_id"].as_str().unwrap_or_default();
    if ledger::grant_pack(conn, user, order_id, credits, product_id, now).await?.applied {
        // Delivered out of order: a refund came first.
        ledger::settle_pack_refund(conn, user, order_id, now).await?;
    }
    Ok(Outcome::Done)
}

/// What an order says about its refunds: the net refunded so far (Polar's `refunded_amount` is
/// net of tax, like `net_amount`; the tax refunded is `refunded_tax_amount`), the net amount,
/// and whether it is fully refunded.
pub fn refund_of(data: &Value) -> Result<(i64, i64, bool), HandlerError> {
    let int = |k: &str| data[k].as_i64();
    let refunded = int("refunded_amount")
        .filter(|n| *n >= 0)
        .ok_or_else(|| HandlerError::Invalid("order has no refunded_amount".into()))?;
    // `net_amount` is there since the 2026-04 API; before tax, after discounts.
    let net = int("net_amount")
        .or_else(|| int("total_amount")?.checked_sub(int("tax_amount").unwrap_or(0)))
        .filter(|n| *n >= 0)
        .ok_or_else(|| HandlerError::Invalid("order has no net_amount".into()))?;
    let fully = data["status"].as_str() == Some("refunded") || (refunded >= net && refunded > 0);
    Ok((refunded, net, fully))
}

async fn order_refunded(
    conn: &mut PgConnection,
    config: &Config,
    data: &Value,
    now: DateTime<Utc>,
) -> Result<Outcome, HandlerError> {
    if data["billing_reason"].as_str() != Some("purchase") || pack_credits(config, data)?.is_none() {
        return Ok(Outcome::Skipped);
    }
    let (refunded, net, fully) = refund_of(data)?;
    if refunded == 0 && !fully {
        return Ok(Outcome::Skipped);
    }
    let order_id = data["id"].as_str().ok_or_else(|| HandlerError::Invalid("order has no id".into()))?;
    let user = customer_user(conn, data).await?;
    // A full refund takes back what is unspent of the pack; a partial one its share, rounded
    // down (the customer keeps the fraction).
    ledger::refund_pack(conn, user, order_id, refunded, net, fully, now).await?;
    Ok(Outcome::Done)
}

/// The plan a subscription's product stands for, and the allotment of one billing period:
/// the configured product ids first, else the product's metadata (`plan`, `monthly_credits`).
/// A yearly product's period carries twelve months of credits (accruing daily all the same).
pub fn plan_of(config: &Config, data: &Value) -> Option<(PlanId, i64)> {
    match period_allotment(config, data) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "ignoring a product's credit metadata");
            None
        }
    }
}

/// [`plan_of`], with an error for metadata out of range instead of ignoring the plan.
pub fn period_allotment(config: &Config, data: &Value) -> Result<Option<(PlanId, i64)>, HandlerError> {
    let product_id = data["product_id"].as_str().or_else(|| data["product"]["id"].as_str());
    let products = &config.polar.products;
    let is = |configured: &Option<String>| product_id.is_some() && configured.as_deref() == product_id;
    let meta = &data["product"]["metadata"];
    let plan = if is(&products.pro) || is(&products.pro_yearly) {
        PlanId::Pro
    } else if is(&products.business) || is(&products.business_yearly) {
        PlanId::Business
    } else {
        match meta["plan"].as_str().and_then(|s| s.parse::<PlanId>().ok()) {
            Some(p) => p,
            None => return Ok(None),
        }
    };
    let monthly = metadata_credits(&meta["monthly_credits"], "monthly_credits")?.unwrap_or(match plan {
        PlanId::Pro => 5000,
        PlanId::Business => 15000,
        _ => 0,
    });
    let period = if billed_yearly(config, data) {
        monthly.checked_mul(12).filter(|n| *n <= MAX_METADATA_CREDITS).ok_or_else(|| {
            HandlerError::Invalid(format!(
                "product metadata `monthly_credits` {monthly} × 12 is more than {MAX_METADATA_CREDITS}"
            ))
        })?
    } else {
        monthly
    };
    Ok(Some((plan, period)))
}

/// Whether a subscription (or product) as Polar sends it is billed yearly: a configured
/// yearly product, or `recurring_interval` `year`.
pub fn billed_yearly(config: &Config, data: &Value) -> bool {
    let products = &config.polar.products;
    let product_id = data["product_id"].as_str().or_else(|| data["product"]["id"].as_str());
    let is = |configured: &Option<String>| product_id.is_some() && configured.as_deref() == product_id;
    is(&products.pro_yearly)
        || is(&products.business_yearly)
        || data["recurring_interval"] == "year"
        || data["product"]["recurring_interval"] == "year"
}

fn time(data: &Value, key: &str) -> Option<DateTime<Utc>> {
    data[key].as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|t| t.with_timezone(&Utc))
}

/// Every `subscription.*` event carries the whole subscription, so one handler applies them
/// all: newest state wins (by `modified_at`), then the credit effects of that state, each
/// idempotent by its ledger key.
async fn subscription_changed(
    conn: &mut PgConnection,
    config: &Config,
    data: &Value,
    now: DateTime<Utc>,
) -> Result<Outcome, HandlerError> {
    let id = data["id"].as_str().ok_or_else(|| HandlerError::Invalid("subscription has no id".into()))?;
    let status = data["status"].as_str().ok_or_else(|| HandlerError::Invalid("subscription has no status".into()))?;
    let period_start = time(data, "current_period_start")
        .ok_or_else(|| HandlerError::Invalid("subscription has no current_period_start".into()))?;
    let period_end = time(data, "current_period_end")
        .ok_or_else(|| HandlerError::Invalid("subscription has no current_period_end".into()))?;
    let modified = time(data, "modified_at").or_else(|| time(data, "created_at")).unwrap_or(now);
    let user = customer_user(conn, data).await?;
    let plan = period_allotment(config, data)?;

    // Out-of-order delivery: an event older than what we applied is ignored. The upsert itself
    // decides (its WHERE is evaluated on the row once any concurrent writer of it has
    // committed), so an older state racing the first one ever stored (two instances, or the
    // worker against a refresh) cannot overwrite it.
    let stored = sqlx::query(
        "INSERT INTO subscriptions (id, user_id, product_id, plan, status, current_period_start, current_period_end,
                                    cancel_at_period_end, canceled_at, ended_at, polar_modified_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (id) DO UPDATE SET product_id = EXCLUDED.product_id, plan = EXCLUDED.plan, status = EXCLUDED.status,
             current_period_start = EXCLUDED.current_period_start, current_period_end = EXCLUDED.current_period_end,
             cancel_at_period_end = EXCLUDED.cancel_at_period_end, canceled_at = EXCLUDED.canceled_at,
             ended_at = EXCLUDED.ended_at, polar_modified_at = EXCLUDED.polar_modified_at, updated_at = EXCLUDED.updated_at
         WHERE subscriptions.polar_modified_at <= EXCLUDED.polar_modified_at",
    )
    .bind(id)
    .bind(user)
    .bind(data["product_id"].as_str().unwrap_or_default())
    .bind(plan.map(|(p, _)| p.slug()))
    .bind(status)
    .bind(period_start)
    .bind(period_end)
    .bind(data["cancel_at_period_end"].as_bool().unwrap_or(false))
    .bind(time(data, "canceled_at"))
    .bind(time(data, "ended_at"))
    .bind(modified)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    if stored.rows_affected() == 0 {
        return Ok(Outcome::Skipped);
    }

    crate::server::billing::invalidate_state(conn, user).await?;
    // Whatever the status, the current period began at `period_start`: earlier periods'
    // allotments end then (they may not have been ended yet if their own events came late).
    ledger::end_earlier_allotments(conn, user, id, period_start, now).await?;
    let Some((plan, allotment)) = plan else { return Ok(Outcome::Done) };
    match status {
        // Access now: this period's allotment (once), and any upgrade within it.
        "active" | "trialing" | "past_due" => {
            let schedule = allotment_schedule(
                AllotmentPolicy::DailyAccrual,
                allotment,
                period_start,
                period_end,
                config.credit_day_offset,
            );
            ledger::start_allotment(conn, user, id, plan.slug(), period_start, period_end, schedule, 0, now).await?;
            // The upgrade is worth the rest of the period from when it happened (the event's
            // `modified_at`), not from when this delivery arrived.
            let changed_at = modified.min(now);
            ledger::upgrade_allotment(
                conn,
                user,
                id,
                plan.slug(),
                allotment,
                period_start,
                period_end,
                AllotmentPolicy::DailyAccrual,
                config.credit_day_offset,
                changed_at,
            )
            .await?;
        }
        // Access over (revoked, or canceled and ended, or never paid): the allotment ends now.
        "canceled" | "unpaid" | "incomplete_expired" => {
            let at = time(data, "ended_at").unwrap_or(now).min(period_end);
            ledger::end_allotment(conn, user, id, period_start, at, now).await?;
        }
        _ => {}
    }
    Ok(Outcome::Done)
}
