//! The user's live subscription and what they can do with it: cancel at period end and undo,
//! switch plans (an upgrade now, prorated and invoiced at once; a downgrade at renewal) after
//! a preview, and open Polar's customer portal. After each change the subscription as Polar
//! has it now is applied at once through [`super::sync`], so the page shows the change before
//! the webhook that follows (which then changes nothing more).

use super::customer_state::{customer_state, forget_cached_state, invalidate_state};
use super::Billing;
use super::{polar_budget, polar_for, polar_reads, sync, Error, Result};
use crate::domain::plans::{Interval, PlanId};
use crate::server::polar::client::Proration;
use crate::server::polar::models::Subscription;
use crate::server::polar::PolarError;
use chrono::{DateTime, Duration, Utc};

use uuid::Uuid;

/// The statuses in which a subscription is live: it grants its plan (past due: while Polar
/// retries the payment) and the user cannot start another one.
pub const LIVE_STATUSES: [&str; 3] = ["active", "trialing", "past_due"];

/// The user's live subscription as the last applied Polar state describes it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LiveSubscription {
    pub id: String,
    /// `None` for a product Tally does not map to a plan.
    pub plan: Option<String>,
    pub status: String,
    pub current_period_end: DateTime<Utc>,
    pub cancel_at_period_end: bool,
}

impl LiveSubscription {
    pub fn plan_id(&self) -> PlanId {
        self.plan.as_deref().and_then(|p| p.parse().ok()).unwrap_or(PlanId::Free)
    }
}

/// The user's live subscription Tally knows of (newest first), from the applied states.
pub async fn live_subscription(db: impl sqlx::PgExecutor<'_>, user: Uuid) -> Result<Option<LiveSubscription>> {
    Ok(sqlx::query_as(
        "SELECT id, plan, status, current_period_end, cancel_at_period_end FROM subscriptions
          WHERE user_id = $1 AND status = ANY($2) ORDER BY polar_modified_at DESC LIMIT 1",
    )
    .bind(user)
    .bind(&LIVE_STATUSES[..])
    .fetch_optional(db)
    .await?)
}

/// The user's subscriptions as Tally last applied them, live or not, newest first (at most
/// `limit`).
pub async fn of_user(db: impl sqlx::PgExecutor<'_>, user: Uuid, limit: i64) -> Result<Vec<LiveSubscription>> {
    Ok(sqlx::query_as(
        "SELECT id, plan, status, current_period_end, cancel_at_period_end FROM subscriptions
          WHERE user_id = $1 ORDER BY polar_modified_at DESC, id LIMIT $2",
    )
    .bind(user)
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// The user's live subscription id and plan: from a fresh Customer State (the truth, and
/// ahead of webhooks right after a checkout), else from the applied states (which also know
/// `past_due` subscriptions, absent from Customer State's active list).
pub async fn current_subscription(billing: &Billing, user: Uuid) -> Result<Option<(String, PlanId)>> {
    let read = customer_state(billing, user, Duration::zero()).await?;
    if let Some(sub) = read.state.as_ref().and_then(|s| s.active_subscriptions.first()) {
        return Ok(Some((sub.id.clone(), read.plan())));
    }
    Ok(live_subscription(&billing.pool, user).await?.map(|s| (s.id.clone(), s.plan_id())))
}

async fn require_live_subscription(billing: &Billing, user: Uuid) -> Result<(String, PlanId)> {
    current_subscription(billing, user).await?.ok_or_else(|| Error::Conflict("You have no active subscription.".into()))
}

/// Applies `sub`, as Polar just answered it, and marks the cached state stale.
async fn apply_now(billing: &Billing, user: Uuid, sub: &Subscription) -> Result<()> {
    let mut tx = billing.pool.begin().await?;
    sync::subscription(&mut tx, &billing.config, sub, Utc::now()).await.map_err(|e| match e {
        sync::Error::Db(e) => Error::Db(e),
        sync::Error::Invalid(m) => Error::Polar(PolarError::Decode(m)),
    })?;
    invalidate_state(&mut tx, user).await?;
    tx.commit().await?;
    forget_cached_state(billing, user).await;
    Ok(())
}

/// Cancel at the end of the period (`true`) or keep the subscription (`false`).
pub async fn set_cancel_at_period_end(billing: &Billing, user: Uuid, cancel: bool) -> Result<()> {
    let (id, _) = require_live_subscription(billing, user).await?;
    let sub = polar_for(billing, user).await?.set_cancel_at_period_end(&id, cancel).await?;
    apply_now(billing, user, &sub).await
}

/// Moving up (charged now, prorated) rather than down or sideways (at renewal).
fn is_upgrade(from: PlanId, to: PlanId) -> bool {
    matches!((from, to), (PlanId::Pro, PlanId::Business))
}

fn interval_of(billing: &Billing, sub: &Subscription) -> Interval {
    if sync::billed_yearly(&billing.config, sub) {
        Interval::Year
    } else {
        Interval::Month
    }
}

fn plan_product(billing: &Billing, plan: PlanId, interval: Interval) -> Result<String> {
    billing
        .config
        .polar
        .catalog
        .plan_product(plan, interval)
        .map(str::to_string)
        .ok_or_else(|| Error::invalid("plan", "That plan is not for sale on this server."))
}

/// What a change did: `upgraded` (now) or `scheduled` (at renewal).
pub async fn change_plan(billing: &Billing, user: Uuid, to: PlanId) -> Result<&'static str> {
    let (id, current) = require_live_subscription(billing, user).await?;
    if current == to {
        return Err(Error::Conflict(format!("You are already on {}.", to.name())));
    }
    // The same billing interval as now.
    let client = polar_for(billing, user).await?;
    let sub = client.get_subscription(&id).await?;
    let product = plan_product(billing, to, interval_of(billing, &sub))?;
    let upgrade = is_upgrade(current, to);
    let proration = if upgrade { Proration::Invoice } else { Proration::NextPeriod };
    let changed = client.change_product(&id, &product, proration).await?;
    apply_now(billing, user, &changed).await?;
    Ok(if upgrade { "upgraded" } else { "scheduled" })
}

/// What a plan change would do, shown before the user confirms it. Computed from Polar's
/// current subscription and the target product, the way Polar prorates (`invoice`: the price
/// difference for the seconds left in the period) and the way the ledger tops up an upgraded
/// period (`domain::credits::upgrade_extra`). Polar's invoice has the exact amount with tax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanChangePreview {
    pub from: PlanId,
    pub to: PlanId,
    pub upgrade: bool,
    pub currency: String,
    pub current_price_cents: i64,
    pub new_price_cents: i64,
    /// Charged at once (an upgrade), before tax; 0 for a change at renewal.
    pub charge_now_cents: i64,
    /// Credits added to this period at once (an upgrade), accruing daily to its end.
    pub extra_credits_now: i64,
    /// Credits of one billing period (a month, or a year for yearly billing).
    pub current_period_credits: i64,
    pub new_period_credits: i64,
    pub yearly: bool,
    /// The end of the current period: the next renewal, and when a downgrade applies.
    pub period_end: DateTime<Utc>,
    /// A change already scheduled for the renewal.
    pub pending: Option<PlanId>,
}

pub async fn preview_plan_change(
    billing: &Billing,
    user: Uuid,
    to: PlanId,
    now: DateTime<Utc>,
) -> Result<PlanChangePreview> {
    let (id, current) = require_live_subscription(billing, user).await?;
    if current == to {
        return Err(Error::Conflict(format!("You are already on {}.", to.name())));
    }
    polar_budget(billing, user).await?;
    let client = polar_reads(billing)?;
    let sub = client.get_subscription(&id).await?;
    let interval = interval_of(billing, &sub);
    let product = client.get_product(&plan_product(billing, to, interval)?).await?;
    let (start, end) = (sub.current_period_start, sub.current_period_end);
    let config = &billing.config;
    let invalid = |e: sync::Error| Error::Polar(PolarError::Decode(e.to_string()));
    let current_credits = sync::subscription_allotment(config, &sub).map_err(invalid)?.map(|(_, c)| c).unwrap_or(0);
    let target = crate::server::polar::models::ProductRef {
        id: product.id.clone(),
        recurring_interval: product.recurring_interval.clone(),
        metadata: product.metadata.clone(),
    };
    let new_credits = sync::period_allotment(config, Some(&product.id), Some(&target), None)
        .map_err(invalid)?
        .map(|(_, c)| c)
        .unwrap_or(0);
    let price = product
        .prices
        .iter()
        .filter(|p| !p.is_archived)
        .find_map(|p| p.price_amount.map(|a| (a, p.price_currency.clone())));
    let Some((new_price, currency)) = price else {
        return Err(Error::Conflict(format!("{} has no fixed price to switch to; contact us.", to.name())));
    };
    let current_price = sub.amount;
    let upgrade = is_upgrade(current, to);
    let (charge_now, extra_now) = if upgrade {
        let period = (end - start).num_seconds().max(1);
        let left = (end - now).num_seconds().clamp(0, period);
        // The level the period's allotment was granted at (higher after an earlier upgrade).
        let level = crate::server::ledger::period_level(&billing.pool, user, &id, start).await?;
        (
            ((new_price as i128 - current_price as i128) * left as i128 / period as i128).clamp(0, i64::MAX as i128)
                as i64,
            crate::domain::credits::upgrade_extra(level.unwrap_or(current_credits), new_credits, start, end, now),
        )
    } else {
        (0, 0)
    };
    let pending = sub
        .pending_update
        .as_ref()
        .and_then(|u| u.product_id.as_deref())
        .and_then(|p| sync::plan_of_product(config, p));
    Ok(PlanChangePreview {
        from: current,
        to,
        upgrade,
        currency,
        current_price_cents: current_price,
        new_price_cents: new_price,
        charge_now_cents: charge_now,
        extra_credits_now: extra_now,
        current_period_credits: current_credits,
        new_period_credits: new_credits,
        yearly: interval == Interval::Year,
        period_end: end,
        pending,
    })
}

/// A customer portal session URL for the user.
pub async fn portal_url(billing: &Billing, user: Uuid) -> Result<String> {
    let back = format!("{}/billing", billing.config.app_url.as_str().trim_end_matches('/'));
    match polar_for(billing, user).await?.create_customer_session(&user.to_string(), Some(&back)).await {
        Ok(s) => Ok(s.customer_portal_url),
        Err(PolarError::Invalid { .. }) => Err(Error::Conflict(
            "You have no billing account with Polar yet; it is created with your first purchase.".into(),
        )),
        Err(e) => Err(e.into()),
    }
}
