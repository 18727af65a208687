//! The one place Polar's objects are applied locally: a subscription's state and its credit
//! allotments, a pack's order and its refunds, a customer's changes. The webhook worker calls
//! these for each event ([`crate::server::webhooks::handlers`]), the subscription operations
//! after a change they made ([`super::subscriptions`]) and reconciliation
//! ([`super::lifecycle::reconcile`]) with what Polar answers now: the same code whichever way
//! the object arrives, and never a fabricated webhook.
//!
//! Every operation takes a connection (so the caller chooses the transaction: the worker
//! commits the effects with the event's done-mark) and a `now`, and is idempotent by the
//! ledger's business keys:
//! - a pack: `order:<order id>`; its refunds: `refund:<order id>:<credits claimed in all>`;
//! - a period's allotment: `allotment:<subscription id>:<period start>`; an upgrade within it:
//!   `upgrade:allotment:<subscription id>:<period start>:<new level>`.
//!
//! So a redelivered, replayed or reordered object changes nothing twice. A subscription's
//! stored state is replaced only by a state at least as new (`polar_modified_at`), decided by
//! the upsert itself, so an older state racing the first one stored cannot overwrite it.
//!
//! Merchant metadata (`credits`, `monthly_credits`) is data someone typed into a dashboard:
//! values outside 1 ..= [`MAX_METADATA_CREDITS`] (and yearly totals past it) are refused
//! with an error, never a panic or a wrap.

use crate::domain::credits::{allotment_schedule, AllotmentPolicy};
use crate::domain::plans::{Interval, Item, PlanId, PlanTerms};
use crate::server::config::Config;
use crate::server::ledger;
use crate::server::polar::models::{
    Customer, Order, OrderBillingReason, OrderStatus, ProductRef, Subscription, SubscriptionStatus,
};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

/// The largest credit amount a product's metadata may name (a billion credits).
pub const MAX_METADATA_CREDITS: i64 = 1_000_000_000;

/// What applying an object did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Its effects are recorded.
    Done,
    /// Nothing to do: not a Tally user's, not something Tally sells, or older than what is
    /// stored.
    Skipped,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object cannot be applied as it is (missing or out-of-range data); retrying the same
    /// object will not help, so the worker parks it for a person after its attempts.
    #[error("{0}")]
    Invalid(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The Tally user with this external id, if it is one (a live account). The row stays share-
/// locked until the caller commits, so an account deletion either waits for these effects
/// (and then ends what they applied) or comes first (and they are skipped).
pub async fn user_of_external(conn: &mut PgConnection, external_id: Option<&str>) -> Result<Option<Uuid>> {
    let Some(id) = external_id.and_then(|x| Uuid::parse_str(x).ok()) else { return Ok(None) };
    Ok(sqlx::query_scalar("SELECT id FROM users WHERE id = $1 AND deleted_at IS NULL FOR SHARE")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?)
}

/// A whole number from Polar metadata, which allows numbers and strings alike.
fn metadata_int(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// A credit amount from metadata: `Ok(None)` when absent, an error when present but out of
/// range.
fn metadata_credits(v: Option<&Value>, what: &str) -> Result<Option<i64>> {
    let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(None) };
    match metadata_int(v) {
        Some(n) if (1..=MAX_METADATA_CREDITS).contains(&n) => Ok(Some(n)),
        _ => Err(Error::Invalid(format!(
            "product metadata `{what}` is {v}, not a whole number from 1 to {MAX_METADATA_CREDITS}"
        ))),
    }
}

/// What a product is: the catalogue's item, or (for products not configured here) what its
/// metadata says (`plan`, and `recurring_interval` or the subscription's interval).
fn plan_and_interval(
    config: &Config,
    product_id: Option<&str>,
    product: Option<&ProductRef>,
    interval: Option<&str>,
) -> Option<(PlanId, Interval)> {
    if let Some(Item::Plan { plan, interval }) = product_id.and_then(|p| config.polar.catalog.item(p)) {
        return Some((plan, interval));
    }
    let plan = product?.metadata.get("plan")?.as_str()?.parse::<PlanId>().ok()?;
    let yearly = interval == Some("year") || product.and_then(|p| p.recurring_interval.as_deref()) == Some("year");
    Some((plan, if yearly { Interval::Year } else { Interval::Month }))
}

/// Whether a subscription is billed yearly (a configured yearly product, or a yearly interval).
pub fn billed_yearly(config: &Config, sub: &Subscription) -> bool {
    if let Some(Item::Plan { interval, .. }) = sub.product_ref_id().and_then(|p| config.polar.catalog.item(p)) {
        return interval == Interval::Year;
    }
    sub.recurring_interval.as_deref() == Some("year")
        || sub.product.as_ref().and_then(|p| p.recurring_interval.as_deref()) == Some("year")
}

/// The plan a product stands for and the allotment of one billing period: the monthly credits
/// from the product's metadata (`monthly_credits`) or the plan's terms, twelve times that for a
/// yearly product (accruing daily all the same).
pub fn period_allotment(
    config: &Config,
    product_id: Option<&str>,
    product: Option<&ProductRef>,
    interval: Option<&str>,
) -> Result<Option<(PlanId, i64)>> {
    let Some((plan, interval)) = plan_and_interval(config, product_id, product, interval) else { return Ok(None) };
    let monthly = match metadata_credits(product.and_then(|p| p.metadata.get("monthly_credits")), "monthly_credits")? {
        Some(n) => n,
        None => PlanTerms::of(plan).map(|t| t.monthly_credits).unwrap_or(0),
    };
    let period = match interval {
        Interval::Year => monthly.checked_mul(12).filter(|n| *n <= MAX_METADATA_CREDITS).ok_or_else(|| {
            Error::Invalid(format!(
                "product metadata `monthly_credits` {monthly} × 12 is more than {MAX_METADATA_CREDITS}"
            ))
        })?,
        Interval::Month => monthly,
    };
    Ok(Some((plan, period)))
}

/// [`period_allotment`] of a subscription.
pub fn subscription_allotment(config: &Config, sub: &Subscription) -> Result<Option<(PlanId, i64)>> {
    period_allotment(config, sub.product_ref_id(), sub.product.as_ref(), sub.recurring_interval.as_deref())
}

/// The plan of a product id, ignoring its metadata's credit amounts (for what a page shows).
pub fn plan_of_product(config: &Config, product_id: &str) -> Option<PlanId> {
    plan_and_interval(config, Some(product_id), None, None).map(|(p, _)| p)
}

/// Credits a one-time product grants: `metadata.credits` on the product, else the
/// catalogue's pack.
pub fn pack_credits(config: &Config, order: &Order) -> Result<Option<i64>> {
    let from_meta = metadata_credits(order.product.as_ref().and_then(|p| p.metadata.get("credits")), "credits")?;
    let from_catalog = order.product_ref_id().and_then(|p| match config.polar.catalog.item(p) {
        Some(Item::Pack { credits }) => Some(credits),
        _ => None,
    });
    Ok(from_meta.or(from_catalog))
}

/// What an order says about its refunds: the net refunded so far (Polar's `refunded_amount` is
/// net of tax, like `net_amount`; the tax refunded is `refunded_tax_amount`), the net amount,
/// and whether it is fully refunded.
pub fn refund_of(order: &Order) -> Result<(i64, i64, bool)> {
    let refunded = Some(order.refunded_amount)
        .filter(|n| *n >= 0)
        .ok_or_else(|| Error::Invalid("order has a negative refunded_amount".into()))?;
    // `net_amount` is there since the 2026-04 API; before tax, after discounts.
    let net = order
        .net_amount
        .or_else(|| order.total_amount.checked_sub(order.tax_amount))
        .filter(|n| *n >= 0)
        .ok_or_else(|| Error::Invalid("order has no usable net_amount".into()))?;
    let fully = order.status == OrderStatus::Refunded || (refunded >= net && refunded > 0);
    Ok((refunded, net, fully))
}

fn is_pack_purchase(order: &Order) -> bool {
    order.billing_reason == OrderBillingReason::Purchase
}

/// Any order event: records whose order it is (invoices check ownership before asking Polar).
pub async fn order_seen(conn: &mut PgConnection, order: &Order) -> Result<()> {
    if let Some(user) = user_of_external(conn, order.external_customer_id()).await? {
        crate::server::billing::invoices::remember_order(conn, user, &order.id).await?;
        // The order list on the invoices page may have changed.
        crate::server::billing::invoices::forget_orders(conn, user).await?;
    }
    Ok(())
}

/// A paid order: a pack's credits, once per order (subscription orders are applied through
/// their subscription).
pub async fn order_paid(
    conn: &mut PgConnection,
    config: &Config,
    order: &Order,
    now: DateTime<Utc>,
) -> Result<Applied> {
    if !is_pack_purchase(order) {
        return Ok(Applied::Skipped);
    }
    let Some(credits) = pack_credits(config, order)? else { return Ok(Applied::Skipped) };
    let Some(user) = user_of_external(conn, order.external_customer_id()).await? else { return Ok(Applied::Skipped) };
    let product_id = order.product_ref_id().unwrap_or_default();
    if ledger::grant_pack(conn, user, &order.id, credits, product_id, now).await?.applied {
        // Delivered out of order: a refund came first.
        ledger::settle_pack_refund(conn, user, &order.id, now).await?;
    }
    Ok(Applied::Done)
}

/// A refunded order: a full refund takes back what is unspent of the pack; a partial one its
/// share, rounded down (the customer keeps the fraction).
pub async fn order_refunded(
    conn: &mut PgConnection,
    config: &Config,
    order: &Order,
    now: DateTime<Utc>,
) -> Result<Applied> {
    if !is_pack_purchase(order) || pack_credits(config, order)?.is_none() {
        return Ok(Applied::Skipped);
    }
    let (refunded, net, fully) = refund_of(order)?;
    if refunded == 0 && !fully {
        return Ok(Applied::Skipped);
    }
    let Some(user) = user_of_external(conn, order.external_customer_id()).await? else { return Ok(Applied::Skipped) };
    ledger::refund_pack(conn, user, &order.id, refunded, net, fully, now).await?;
    Ok(Applied::Done)
}

/// A subscription as Polar has it: newest state wins (by `modified_at`), then the credit
/// effects of that state, each idempotent by its ledger key.
pub async fn subscription(
    conn: &mut PgConnection,
    config: &Config,
    sub: &Subscription,
    now: DateTime<Utc>,
) -> Result<Applied> {
    let Some(user) = user_of_external(conn, sub.external_customer_id()).await? else { return Ok(Applied::Skipped) };
    let modified = sub.modified_at.or(Some(sub.created_at).filter(|t| *t != DateTime::UNIX_EPOCH)).unwrap_or(now);
    let plan = subscription_allotment(config, sub)?;
    let (start, end) = (sub.current_period_start, sub.current_period_end);

    // The customer's row first, as every writer of a customer's billing takes it (the worker's
    // batch marks it stale for `customer.state_changed` before this event's upsert; a change
    // made from a page upserted first and deadlocked with it). Marking the cached state stale
    // costs nothing when the upsert below turns out to be an older state: it is re-read.
    crate::server::billing::invalidate_state(conn, user).await?;
    // Out-of-order delivery: a state older than the stored one is ignored. The upsert itself
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
    .bind(&sub.id)
    .bind(user)
    .bind(sub.product_ref_id().unwrap_or_default())
    .bind(plan.map(|(p, _)| p.slug()))
    .bind(sub.status.as_str())
    .bind(start)
    .bind(end)
    .bind(sub.cancel_at_period_end)
    .bind(sub.canceled_at)
    .bind(sub.ended_at)
    .bind(modified)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    if stored.rows_affected() == 0 {
        return Ok(Applied::Skipped);
    }

    // Whatever the status, the current period began at `start`: earlier periods' allotments
    // end then (they may not have been ended yet if their own events came late).
    ledger::end_earlier_allotments(conn, user, &sub.id, start, now).await?;
    let Some((plan, allotment)) = plan else { return Ok(Applied::Done) };
    let period = ledger::Period { user_id: user, subscription_id: &sub.id, plan: plan.slug(), start, end };
    match sub.status {
        // Access now: this period's allotment (once), and any upgrade within it.
        SubscriptionStatus::Active | SubscriptionStatus::Trialing | SubscriptionStatus::PastDue => {
            let schedule =
                allotment_schedule(AllotmentPolicy::DailyAccrual, allotment, start, end, config.credit_day_offset);
            ledger::start_allotment(conn, &period, schedule, 0, now).await?;
            // The upgrade is worth the rest of the period from when it happened (the state's
            // `modified_at`), not from when this delivery arrived.
            let upgrade = ledger::Upgrade {
                new_allotment: allotment,
                policy: AllotmentPolicy::DailyAccrual,
                day_boundary: config.credit_day_offset,
            };
            ledger::upgrade_allotment(conn, &period, upgrade, modified.min(now)).await?;
            // The period the spends count into, with the plan's metered price (overage) if the
            // subscription has one. New overage only while it is active and set to renew: not in
            // a trial, not past due, not once set to end, so nothing is run up that a last or
            // failing invoice might not collect (what was run up stays billed under the price).
            let key = ledger::period::key(&sub.id, start);
            let open = sub.status == SubscriptionStatus::Active && !sub.cancel_at_period_end;
            let counted = ledger::period::PeriodStart {
                key: &key,
                start,
                end,
                allotment,
                overage: sub.overage_terms(config.polar.overage_meter_id.as_deref()),
                open,
                default_cap_cents: config.polar.overage_default_cap_cents,
            };
            ledger::period::start(conn, user, &counted).await?;
        }
        // Access over (revoked, or canceled and ended, or never paid): the allotment ends now.
        SubscriptionStatus::Canceled | SubscriptionStatus::Unpaid | SubscriptionStatus::IncompleteExpired => {
            let at = sub.ended_at.unwrap_or(now).min(end);
            ledger::end_allotment(conn, user, &sub.id, start, at, now).await?;
            ledger::period::end(conn, user, &ledger::period::key(&sub.id, start), at).await?;
        }
        _ => {}
    }
    Ok(Applied::Done)
}

/// The customer's state changed at Polar: the cached Customer State is stale; the next read
/// fetches it (re-reading instead of trusting this payload's place in the delivery order).
pub async fn customer_changed(conn: &mut PgConnection, customer: &Customer) -> Result<Applied> {
    let Some(user) = user_of_external(conn, customer.external_id.as_deref()).await? else {
        return Ok(Applied::Skipped);
    };
    crate::server::billing::invalidate_state(conn, user).await?;
    Ok(Applied::Done)
}

/// The customer was deleted at Polar: detach it (a later purchase creates a new one).
pub async fn customer_deleted(conn: &mut PgConnection, customer: &Customer) -> Result<Applied> {
    let Some(user) = user_of_external(conn, customer.external_id.as_deref()).await? else {
        return Ok(Applied::Skipped);
    };
    sqlx::query(
        "UPDATE polar_customers SET status = 'deleted', polar_customer_id = NULL, state = NULL, state_fetched_at = NULL, state_stale = false, updated_at = now()
          WHERE user_id = $1 AND polar_customer_id = $2",
    )
    .bind(user)
    .bind(&customer.id)
    .execute(&mut *conn)
    .await?;
    Ok(Applied::Done)
}
