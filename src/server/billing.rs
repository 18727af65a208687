//! Billing operations on top of Polar: the user's Polar customer, the Customer State cache and
//! the entitlement guard, checkout, the portal, plan changes, billing details and invoices.
//! Server functions call these; nothing here trusts the browser for a product, price or user.
//!
//! Failure policy (documented in the README): when Polar cannot be reached, pages show the
//! last known Customer State marked as such; `require_benefit` accepts a last known state up
//! to [`STALE_GRACE`] old and fails closed after that, or when there is none.

use crate::domain::plans::PlanId;
use crate::error::AppError;
use crate::server::polar::client::{CheckoutCreate, CustomerUpdate, Proration};
use crate::server::polar::models::{Address, CustomerState};
use crate::server::polar::{PolarClient, PolarError};
use crate::server::state::AppState;
use crate::server::state_cache::CachedState;
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// How long a Customer State read from Polar is served from the cache.
pub const STATE_TTL: Duration = Duration::seconds(30);
/// Polar's Customer State lags a change by about 10 s. For this long after a change (a
/// webhook, or one Tally made) a read is kept only `SETTLING_TTL`, so the cache does not hold
/// on to a pre-change answer for a whole `STATE_TTL`.
pub const SETTLE_WINDOW: Duration = Duration::seconds(20);
pub const SETTLING_TTL: Duration = Duration::seconds(2);
/// How long a last known state keeps granting access while Polar is unreachable.
pub const STALE_GRACE: Duration = Duration::hours(24);

pub fn polar(state: &AppState) -> Result<&PolarClient, AppError> {
    state.polar.as_ref().ok_or_else(|| AppError::Unavailable {
        message: "Billing is not configured on this server (POLAR_ACCESS_TOKEN).".into(),
    })
}

/// The client for reads a page shows: each call bounded by `POLAR_READ_DEADLINE_MS`.
pub fn polar_reads(state: &AppState) -> Result<&PolarClient, AppError> {
    state.polar_reads.as_ref().ok_or_else(|| AppError::Unavailable {
        message: "Billing is not configured on this server (POLAR_ACCESS_TOKEN).".into(),
    })
}

/// Polar's quota is one budget for the whole organization (500 requests a minute): no single
/// user may spend more than `POLAR_CALLS_PER_USER_PER_MINUTE` of it. Every server function
/// that asks Polar for a user goes through this first (after checking what it can locally).
pub async fn polar_budget(state: &AppState, user: Uuid) -> Result<(), AppError> {
    let t = crate::server::throttle::Throttle {
        scope: "polar.user",
        limit: state.config.polar_calls_per_user_per_minute,
        window_secs: 60,
    };
    match crate::server::throttle::hit(&state.pool, t, &user.to_string(), Utc::now())
        .await
        .map_err(AppError::internal)?
    {
        Ok(()) => Ok(()),
        Err(secs) => {
            tracing::warn!(%user, retry_after_secs = secs, "per-user Polar budget spent");
            Err(AppError::RateLimited { retry_after_secs: secs })
        }
    }
}

/// The client, once `user`'s budget allows another call.
pub async fn polar_for(state: &AppState, user: Uuid) -> Result<&PolarClient, AppError> {
    polar_budget(state, user).await?;
    polar(state)
}

/// Records that a Polar order is `user`'s (from a listing Polar answered for that user, or a
/// webhook about their customer), so its id can be checked before Polar is asked again.
pub async fn remember_order(conn: &mut sqlx::PgConnection, user: Uuid, order_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO polar_orders (id, user_id) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
        .bind(order_id)
        .bind(user)
        .execute(conn)
        .await?;
    Ok(())
}

/// Maps a Polar failure to what the user sees: outages as "try again", the rest logged.
pub fn polar_failure(e: PolarError) -> AppError {
    if e.is_unavailable() {
        tracing::warn!(error = %e, "Polar unavailable");
        AppError::Unavailable {
            message: "Our billing provider is not answering right now. Please try again in a minute.".into(),
        }
    } else {
        AppError::internal(format!("Polar: {e}"))
    }
}

// ---- the Polar customer ----

/// Records that `user` needs a Polar customer; the background task creates or links it.
pub async fn customer_pending(pool: &PgPool, user: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO polar_customers (user_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(user)
        .execute(pool)
        .await?;
    Ok(())
}

/// Creates or links the user's Polar customer (`external_id` = user id). Idempotent: an
/// existing customer is linked; a creation race resolves to the one that won.
pub async fn ensure_customer(state: &AppState, user: Uuid) -> Result<String, AppError> {
    let client = polar(state)?;
    let email: String = sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
        .bind(user)
        .fetch_one(&state.pool)
        .await
        .map_err(AppError::internal)?;
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
            .execute(&state.pool)
            .await
            .map_err(AppError::internal)?;
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
            .execute(&state.pool)
            .await
            .map_err(AppError::internal)?;
            Err(polar_failure(e))
        }
    }
}

/// Background: creates or links pending Polar customers (sign-ups while Polar was down).
pub async fn sync_pending_customers(state: AppState) {
    loop {
        let due: Vec<Uuid> = sqlx::query_scalar("SELECT user_id FROM polar_customers WHERE status = 'pending' AND next_attempt_at <= now() ORDER BY next_attempt_at LIMIT 20")
            .fetch_all(&state.pool)
            .await
            .unwrap_or_default();
        for user in due {
            if let Err(e) = ensure_customer(&state, user).await {
                tracing::info!(%user, error = %e, "Polar customer not linked yet");
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    }
}

// ---- Customer State ----

/// A Customer State as read: `None` when Polar has no customer for the user yet.
#[derive(Debug, Clone)]
pub struct StateRead {
    pub state: Option<CustomerState>,
    pub fetched_at: DateTime<Utc>,
    /// True when Polar could not be reached and this is the last known state.
    pub stale: bool,
}

impl StateRead {
    pub fn has_benefit(&self, slug: &str) -> bool {
        self.state.as_ref().is_some_and(|s| s.has_benefit("slug", slug))
    }

    /// The plan the granted benefits stand for (Business over Pro over Free).
    pub fn plan(&self) -> PlanId {
        if self.has_benefit("business") {
            PlanId::Business
        } else if self.has_benefit("pro") {
            PlanId::Pro
        } else {
            PlanId::Free
        }
    }
}

/// The user's Customer State through the cache: served from Redis (when `REDIS_URL` is set)
/// or Postgres when younger than `max_age` (and not invalidated by a webhook), else read from
/// Polar and stored in both. `max_age` zero always asks Polar.
pub async fn customer_state(state: &AppState, user: Uuid, max_age: Duration) -> Result<StateRead, AppError> {
    let now = Utc::now();
    let redis = state.redis.as_ref().filter(|_| max_age > Duration::zero());
    if let Some(r) = redis {
        if let Some(c) = r.get(user).await.filter(|c| now - c.fetched_at < max_age) {
            return Ok(StateRead {
                state: c.state.and_then(|v| serde_json::from_value(v).ok()),
                fetched_at: c.fetched_at,
                stale: false,
            });
        }
    }
    let row: Option<(Option<Value>, Option<DateTime<Utc>>, bool, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT state, state_fetched_at, state_stale, state_changed_at FROM polar_customers WHERE user_id = $1",
    )
    .bind(user)
    .fetch_optional(&state.pool)
    .await
    .map_err(AppError::internal)?;
    let settling = row.as_ref().and_then(|r| r.3).is_some_and(|changed| now - changed < SETTLE_WINDOW);
    let ttl = if settling { SETTLING_TTL } else { STATE_TTL };
    let max_age = max_age.min(ttl);
    let cached = row.as_ref().filter(|r| !r.2).and_then(|(s, at, _, _)| Some((s.clone(), (*at)?)));
    if let Some((s, at)) = &cached {
        if now - *at < max_age {
            if let Some(r) = redis {
                r.put(user, &CachedState { state: s.clone(), fetched_at: *at }, ttl - (now - *at)).await;
            }
            return Ok(StateRead {
                state: s.as_ref().and_then(|v| serde_json::from_value(v.clone()).ok()),
                fetched_at: *at,
                stale: false,
            });
        }
    }
    let client = polar_reads(state)?;
    let fetched = match client.customer_state(&user.to_string()).await {
        Ok(s) => Some(s),
        Err(PolarError::NotFound { .. }) => None,
        Err(e) if e.is_unavailable() => {
            // The last known state, whatever its age, marked as such.
            let last = row.and_then(|(s, at, _, _)| Some((s?, at?)));
            return match last {
                Some((s, at)) => Ok(StateRead { state: serde_json::from_value(s).ok(), fetched_at: at, stale: true }),
                None => Err(polar_failure(e)),
            };
        }
        Err(e) => return Err(polar_failure(e)),
    };
    let json = fetched.as_ref().map(|s| serde_json::to_value(s).expect("serializable"));
    sqlx::query(
        "INSERT INTO polar_customers (user_id, polar_customer_id, status, state, state_fetched_at) VALUES ($1, $2, CASE WHEN $2 IS NULL THEN 'pending' ELSE 'linked' END, $3, $4)
         ON CONFLICT (user_id) DO UPDATE SET state = $3, state_fetched_at = $4, state_stale = false,
             polar_customer_id = coalesce($2, polar_customers.polar_customer_id),
             status = CASE WHEN $2 IS NOT NULL AND polar_customers.status <> 'deleted' THEN 'linked' ELSE polar_customers.status END, updated_at = now()",
    )
    .bind(user)
    .bind(fetched.as_ref().map(|s| s.id.clone()))
    .bind(&json)
    .bind(now)
    .execute(&state.pool)
    .await
    .map_err(AppError::internal)?;
    if let Some(r) = &state.redis {
        r.put(user, &CachedState { state: json, fetched_at: now }, ttl).await;
    }
    Ok(StateRead { state: fetched, fetched_at: now, stale: false })
}

/// Drops the Redis entry of a user whose Customer State just changed (after the change
/// committed; Postgres was marked stale in the same transaction).
pub async fn forget_cached_state(state: &AppState, user: Uuid) {
    if let Some(r) = &state.redis {
        r.forget(user).await;
    }
}

/// Marks the cached state as stale (a `customer.state_changed` webhook, or a change we made).
pub async fn invalidate_state(conn: &mut sqlx::PgConnection, user: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE polar_customers SET state_stale = true, state_changed_at = now() WHERE user_id = $1")
        .bind(user)
        .execute(conn)
        .await?;
    Ok(())
}

/// The entitlement guard: `Ok` when the user holds a granted benefit whose metadata `slug` is
/// `slug`. Follows benefits, never "has a subscription".
pub async fn require_benefit(state: &AppState, user: Uuid, slug: &str) -> Result<(), AppError> {
    require_any_benefit(state, user, &[slug]).await
}

/// Like [`require_benefit`], satisfied by any one of `slugs` (e.g. `PAID_BENEFITS`).
pub async fn require_any_benefit(state: &AppState, user: Uuid, slugs: &[&str]) -> Result<(), AppError> {
    let read = customer_state(state, user, STATE_TTL).await?;
    if read.stale && Utc::now() - read.fetched_at > STALE_GRACE {
        return Err(AppError::Unavailable {
            message: "We can't confirm your plan with our billing provider right now. Please try again shortly.".into(),
        });
    }
    if slugs.iter().any(|s| read.has_benefit(s)) {
        Ok(())
    } else {
        Err(AppError::NotEntitled {
            message: format!("This needs the {} benefit, which your plan does not include.", slugs.join(" or ")),
        })
    }
}

// ---- checkout ----

/// What a checkout can sell, by the slug the browser sends. The product id comes from the
/// server's plan map only.
fn product_for(state: &AppState, item: &str) -> Result<String, AppError> {
    let p = &state.config.polar.products;
    let id = match item {
        "pro" => p.pro.clone(),
        "business" => p.business.clone(),
        "pro_yearly" => p.pro_yearly.clone(),
        "business_yearly" => p.business_yearly.clone(),
        "pack_50" => p.pack_50.clone(),
        "pack_100" => p.pack_100.clone(),
        _ => return Err(AppError::validation("item", "Choose a plan or a credit pack to buy.")),
    };
    id.ok_or_else(|| AppError::validation("item", "That item is not for sale on this server."))
}

/// The product of `plan` billed monthly or yearly.
fn plan_product(state: &AppState, plan: PlanId, yearly: bool) -> Result<String, AppError> {
    product_for(state, &format!("{}{}", plan.slug(), if yearly { "_yearly" } else { "" }))
}

/// The live subscription (id, plan, status) Tally knows of from webhooks.
pub async fn live_subscription(
    pool: &PgPool,
    user: Uuid,
) -> Result<Option<(String, Option<String>, String)>, AppError> {
    sqlx::query_as(
        "SELECT id, plan, status FROM subscriptions WHERE user_id = $1 AND status IN ('active', 'trialing', 'past_due', 'incomplete')
          ORDER BY polar_modified_at DESC LIMIT 1",
    )
    .bind(user)
    .fetch_optional(pool)
    .await
    .map_err(AppError::internal)
}

/// The user's live subscription id and plan: from a fresh Customer State (the truth, and
/// ahead of webhooks right after a checkout), else from the last webhooks (which also know
/// `past_due` subscriptions, absent from Customer State's active list).
pub async fn current_subscription(state: &AppState, user: Uuid) -> Result<Option<(String, PlanId)>, AppError> {
    let read = customer_state(state, user, Duration::zero()).await?;
    if let Some(sub) = read.state.as_ref().and_then(|s| s.active_subscriptions.first()) {
        return Ok(Some((sub.id.clone(), read.plan())));
    }
    Ok(live_subscription(&state.pool, user)
        .await?
        .map(|(id, plan, _)| (id, plan.and_then(|p| p.parse().ok()).unwrap_or(PlanId::Free))))
}

/// Creates a Polar checkout for the signed-in user and returns its URL.
pub async fn start_checkout(state: &AppState, user: Uuid, email: &str, item: &str) -> Result<String, AppError> {
    let product = product_for(state, item)?;
    let is_plan = matches!(item, "pro" | "business" | "pro_yearly" | "business_yearly");
    if is_plan && current_subscription(state, user).await?.is_some() {
        return Err(AppError::Conflict {
            field: None,
            message: "You already have a subscription. Change your plan from the billing page instead.".into(),
        });
    }
    let details = billing_details(&state.pool, user).await?;
    let app = state.config.app_url.as_str().trim_end_matches('/');
    let body = CheckoutCreate {
        products: vec![product],
        external_customer_id: Some(user.to_string()),
        customer_email: Some(
            details.as_ref().and_then(|d| d.billing_email.clone()).unwrap_or_else(|| email.to_string()),
        ),
        customer_billing_name: details.as_ref().and_then(|d| d.company.clone()),
        customer_billing_address: details.as_ref().map(|d| d.address()),
        customer_tax_id: details.as_ref().and_then(|d| d.tax_id.clone()),
        success_url: Some(format!("{app}/billing/success?checkout_id={{CHECKOUT_ID}}")),
        return_url: Some(format!("{app}/pricing")),
        metadata: [("tally_item".to_string(), Value::String(item.into()))].into_iter().collect(),
        ..Default::default()
    };
    let checkout = polar_for(state, user).await?.create_checkout(&body).await.map_err(polar_failure)?;
    sqlx::query("INSERT INTO checkouts (id, user_id, item) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING")
        .bind(&checkout.id)
        .bind(user)
        .bind(item)
        .execute(&state.pool)
        .await
        .map_err(AppError::internal)?;
    tracing::info!(%user, checkout = %checkout.id, item, "checkout created");
    Ok(checkout.url)
}

/// Where a checkout stands, for the success page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Paid or being paid; access not confirmed yet.
    Processing,
    /// Access confirmed: the plan's benefit is granted, or the pack's credits are in the ledger.
    Ready {
        what: String,
        is_plan: bool,
    },
    Expired,
    Failed,
}

pub async fn checkout_progress(state: &AppState, user: Uuid, checkout_id: &str) -> Result<Progress, AppError> {
    if Uuid::parse_str(checkout_id).is_err() {
        return Err(AppError::NotFound);
    }
    // Someone else's checkout (or one Tally never made) looks like no checkout at all, and
    // costs no call to Polar.
    let ours: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM checkouts WHERE id = $1 AND user_id = $2)")
        .bind(checkout_id)
        .bind(user)
        .fetch_one(&state.pool)
        .await
        .map_err(AppError::internal)?;
    if !ours {
        return Err(AppError::NotFound);
    }
    // The success page polls: over budget, it is simply still processing (and polls slower).
    if let Err(AppError::RateLimited { .. }) = polar_budget(state, user).await {
        return Ok(Progress::Processing);
    }
    let client = polar_reads(state)?;
    let checkout = match client.get_checkout(checkout_id).await {
        Ok(c) => c,
        Err(PolarError::NotFound { .. }) => return Err(AppError::NotFound),
        Err(e) => return Err(polar_failure(e)),
    };
    // Someone else's checkout looks like no checkout at all.
    if checkout.external_customer_id.as_deref() != Some(user.to_string().as_str()) {
        return Err(AppError::NotFound);
    }
    use crate::server::polar::models::CheckoutStatus as S;
    match checkout.status {
        S::Expired => return Ok(Progress::Expired),
        S::Failed => return Ok(Progress::Failed),
        S::Succeeded => {}
        _ => return Ok(Progress::Processing),
    }
    let product = checkout.product_id.clone().unwrap_or_default();
    let plan = crate::server::webhooks::handlers::plan_of(&state.config, &serde_json::json!({ "product_id": product }))
        .map(|(plan, _)| plan);
    if let Some(plan) = plan {
        // Fresh from Polar: the cache must not hide the moment access appears.
        let read = customer_state(state, user, Duration::zero()).await?;
        return Ok(if read.has_benefit(plan.slug()) {
            Progress::Ready { what: plan.name().to_string(), is_plan: true }
        } else {
            Progress::Processing
        });
    }
    let orders = client.orders_for_checkout(checkout_id).await.map_err(polar_failure)?;
    let Some(order) = orders.first() else { return Ok(Progress::Processing) };
    remember_order(&mut *state.pool.acquire().await.map_err(AppError::internal)?, user, &order.id)
        .await
        .map_err(AppError::internal)?;
    let credited: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM credit_buckets WHERE user_id = $1 AND source_key = $2)")
            .bind(user)
            .bind(format!("order:{}", order.id))
            .fetch_one(&state.pool)
            .await
            .map_err(AppError::internal)?;
    Ok(if credited {
        Progress::Ready { what: order.description.clone(), is_plan: false }
    } else {
        Progress::Processing
    })
}

// ---- subscription changes ----

/// Applies Polar's current view of a subscription locally at once (the webhook that follows
/// changes nothing more), and marks the cached state stale.
async fn refresh_subscription(state: &AppState, user: Uuid, id: &str) -> Result<(), AppError> {
    let raw = polar(state)?.get_subscription_raw(id).await.map_err(polar_failure)?;
    let mut tx = state.pool.begin().await.map_err(AppError::internal)?;
    crate::server::webhooks::handlers::handle(
        &mut tx,
        &state.config,
        "subscription.updated",
        &serde_json::json!({ "data": raw }),
        Utc::now(),
    )
    .await
    .map_err(AppError::internal)?;
    invalidate_state(&mut tx, user).await.map_err(AppError::internal)?;
    tx.commit().await.map_err(AppError::internal)?;
    forget_cached_state(state, user).await;
    Ok(())
}

async fn require_live_subscription(state: &AppState, user: Uuid) -> Result<(String, PlanId), AppError> {
    current_subscription(state, user)
        .await?
        .ok_or_else(|| AppError::Conflict { field: None, message: "You have no active subscription.".into() })
}

/// Cancel at the end of the period (`true`) or keep the subscription (`false`).
pub async fn set_cancel_at_period_end(state: &AppState, user: Uuid, cancel: bool) -> Result<(), AppError> {
    let (id, _) = require_live_subscription(state, user).await?;
    polar_for(state, user).await?.set_cancel_at_period_end(&id, cancel).await.map_err(polar_failure)?;
    refresh_subscription(state, user, &id).await
}

/// Upgrades now (the difference invoiced at once) or downgrades at renewal.
pub async fn change_plan(state: &AppState, user: Uuid, to: PlanId) -> Result<&'static str, AppError> {
    let (id, current) = require_live_subscription(state, user).await?;
    if current == to {
        return Err(AppError::Conflict { field: None, message: format!("You are already on {}.", to.name()) });
    }
    // The same billing interval as now.
    let sub = polar_for(state, user).await?.get_subscription_raw(&id).await.map_err(polar_failure)?;
    let product = plan_product(state, to, crate::server::webhooks::handlers::billed_yearly(&state.config, &sub))?;
    let upgrade = is_upgrade(current, to);
    let proration = if upgrade { Proration::Invoice } else { Proration::NextPeriod };
    polar(state)?.change_product(&id, &product, proration).await.map_err(polar_failure)?;
    refresh_subscription(state, user, &id).await?;
    Ok(if upgrade { "upgraded" } else { "scheduled" })
}

/// Moving up (charged now, prorated) rather than down or sideways (at renewal).
fn is_upgrade(from: PlanId, to: PlanId) -> bool {
    matches!((from, to), (PlanId::Pro, PlanId::Business))
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
    state: &AppState,
    user: Uuid,
    to: PlanId,
    now: DateTime<Utc>,
) -> Result<PlanChangePreview, AppError> {
    let (id, current) = require_live_subscription(state, user).await?;
    if current == to {
        return Err(AppError::Conflict { field: None, message: format!("You are already on {}.", to.name()) });
    }
    polar_budget(state, user).await?;
    let client = polar_reads(state)?;
    let sub = client.get_subscription_raw(&id).await.map_err(polar_failure)?;
    let yearly = crate::server::webhooks::handlers::billed_yearly(&state.config, &sub);
    let product_id = plan_product(state, to, yearly)?;
    let product = client.get_product(&product_id).await.map_err(polar_failure)?;
    let time =
        |k: &str| sub[k].as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|t| t.with_timezone(&Utc));
    let (Some(start), Some(end)) = (time("current_period_start"), time("current_period_end")) else {
        return Err(AppError::internal(format!("subscription {id} has no current period")));
    };
    let config = &state.config;
    let current_credits = crate::server::webhooks::handlers::plan_of(config, &sub).map(|(_, c)| c).unwrap_or(0);
    let new_credits = crate::server::webhooks::handlers::plan_of(config, &serde_json::json!({ "product_id": product.id, "product": { "metadata": product.metadata, "recurring_interval": product.recurring_interval } }))
        .map(|(_, c)| c)
        .unwrap_or(0);
    let price = product
        .prices
        .iter()
        .filter(|p| !p.is_archived)
        .find_map(|p| p.price_amount.map(|a| (a, p.price_currency.clone())));
    let Some((new_price, currency)) = price else {
        return Err(AppError::Conflict {
            field: None,
            message: format!("{} has no fixed price to switch to; contact us.", to.name()),
        });
    };
    let current_price = sub["amount"].as_i64().unwrap_or(0);
    let upgrade = is_upgrade(current, to);
    let (charge_now, extra_now) = if upgrade {
        let period = (end - start).num_seconds().max(1);
        let left = (end - now).num_seconds().clamp(0, period);
        // The level the period's allotment was granted at (higher after an earlier upgrade).
        let level: Option<i64> = sqlx::query_scalar(
            "SELECT (metadata->>'level')::bigint FROM credit_buckets WHERE user_id = $1 AND source_key = $2",
        )
        .bind(user)
        .bind(crate::server::ledger::allotment_source(&id, start))
        .fetch_optional(&state.pool)
        .await
        .map_err(AppError::internal)?
        .flatten();
        (
            ((new_price as i128 - current_price as i128) * left as i128 / period as i128).clamp(0, i64::MAX as i128)
                as i64,
            crate::domain::credits::upgrade_extra(level.unwrap_or(current_credits), new_credits, start, end, now),
        )
    } else {
        (0, 0)
    };
    let pending = sub["pending_update"]["product_id"].as_str().and_then(|p| {
        crate::server::webhooks::handlers::plan_of(config, &serde_json::json!({ "product_id": p }))
            .map(|(plan, _)| plan)
    });
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
        yearly,
        period_end: end,
        pending,
    })
}

/// A customer portal session URL for the user.
pub async fn portal_url(state: &AppState, user: Uuid) -> Result<String, AppError> {
    let back = format!("{}/billing", state.config.app_url.as_str().trim_end_matches('/'));
    match polar_for(state, user).await?.create_customer_session(&user.to_string(), Some(&back)).await {
        Ok(s) => Ok(s.customer_portal_url),
        Err(PolarError::Invalid { .. }) => Err(AppError::Conflict {
            field: None,
            message: "You have no billing account with Polar yet; it is created with your first purchase.".into(),
        }),
        Err(e) => Err(polar_failure(e)),
    }
}

// ---- billing details ----

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BillingDetails {
    pub billing_email: Option<String>,
    pub company: Option<String>,
    pub line1: Option<String>,
    pub line2: Option<String>,
    pub city: Option<String>,
    pub region: Option<String>,
    pub postal_code: Option<String>,
    pub country: String,
    pub tax_id: Option<String>,
    pub tax_id_kind: Option<String>,
    pub polar_error: Option<String>,
}

impl BillingDetails {
    pub fn address(&self) -> Address {
        Address {
            line1: self.line1.clone(),
            line2: self.line2.clone(),
            postal_code: self.postal_code.clone(),
            city: self.city.clone(),
            state: self.region.clone(),
            country: self.country.clone(),
        }
    }
}

pub async fn billing_details(pool: &PgPool, user: Uuid) -> Result<Option<BillingDetails>, AppError> {
    let row: Option<(Option<String>, Option<String>, Option<String>, Option<String>, Option<String>, Option<String>, Option<String>, String, Option<String>, Option<String>, Option<String>)> =
        sqlx::query_as(
            "SELECT billing_email, company, line1, line2, city, region, postal_code, country, tax_id, tax_id_kind, polar_error FROM billing_details WHERE user_id = $1",
        )
        .bind(user)
        .fetch_optional(pool)
        .await
        .map_err(AppError::internal)?;
    Ok(row.map(|r| BillingDetails {
        billing_email: r.0,
        company: r.1,
        line1: r.2,
        line2: r.3,
        city: r.4,
        region: r.5,
        postal_code: r.6,
        country: r.7,
        tax_id: r.8,
        tax_id_kind: r.9,
        polar_error: r.10,
    }))
}

fn clean(v: Option<String>, field: &str, max: usize) -> Result<Option<String>, AppError> {
    let v = v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    if v.as_ref().is_some_and(|s| s.chars().count() > max) {
        return Err(AppError::validation(field, format!("Keep this under {max} characters.")));
    }
    Ok(v)
}

/// Checks and saves billing details, then pushes them to the Polar customer. Returns whether
/// Polar has them (`false`: saved here, Polar was unreachable; pushed on the next save).
pub async fn save_billing_details(state: &AppState, user: Uuid, input: BillingDetails) -> Result<bool, AppError> {
    let country = input.country.trim().to_ascii_uppercase();
    if crate::domain::countries::name(&country).is_none() {
        return Err(AppError::validation("country", "Choose your country from the list."));
    }
    if crate::domain::countries::EMBARGOED.contains(&country.as_str()) {
        return Err(AppError::validation("country", "Our payment provider cannot bill customers in this country."));
    }
    let billing_email = clean(input.billing_email, "billing_email", 254)?;
    if let Some(e) = &billing_email {
        crate::domain::email::Email::parse(e).map_err(|e| AppError::validation("billing_email", e.to_string()))?;
    }
    let tax = match clean(input.tax_id, "tax_id", 40)? {
        Some(t) => Some(crate::domain::tax_id::validate(&country, &t).map_err(|m| AppError::validation("tax_id", m))?),
        None => None,
    };
    let d = BillingDetails {
        billing_email,
        company: clean(input.company, "company", 200)?,
        line1: clean(input.line1, "line1", 200)?,
        line2: clean(input.line2, "line2", 200)?,
        city: clean(input.city, "city", 100)?,
        region: clean(input.region, "region", 100)?,
        postal_code: clean(input.postal_code, "postal_code", 20)?,
        tax_id: tax.as_ref().map(|t| t.value.clone()),
        tax_id_kind: tax.as_ref().map(|t| t.kind.to_string()),
        country,
        polar_error: None,
    };
    sqlx::query(
        "INSERT INTO billing_details (user_id, billing_email, company, line1, line2, city, region, postal_code, country, tax_id, tax_id_kind, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, now())
         ON CONFLICT (user_id) DO UPDATE SET billing_email = $2, company = $3, line1 = $4, line2 = $5, city = $6, region = $7, postal_code = $8,
             country = $9, tax_id = $10, tax_id_kind = $11, updated_at = now()",
    )
    .bind(user)
    .bind(&d.billing_email)
    .bind(&d.company)
    .bind(&d.line1)
    .bind(&d.line2)
    .bind(&d.city)
    .bind(&d.region)
    .bind(&d.postal_code)
    .bind(&d.country)
    .bind(&d.tax_id)
    .bind(&d.tax_id_kind)
    .execute(&state.pool)
    .await
    .map_err(AppError::internal)?;
    push_billing_details(state, user, &d).await
}

async fn push_billing_details(state: &AppState, user: Uuid, d: &BillingDetails) -> Result<bool, AppError> {
    let record = |err: Option<String>| async move {
        sqlx::query("UPDATE billing_details SET polar_error = $2, polar_synced_at = CASE WHEN $2 IS NULL THEN now() ELSE polar_synced_at END WHERE user_id = $1")
            .bind(user)
            .bind(err)
            .execute(&state.pool)
            .await
            .map_err(AppError::internal)
    };
    if let Err(e) = ensure_customer(state, user).await {
        record(Some(e.to_string())).await?;
        return match e {
            AppError::Unavailable { .. } => Ok(false),
            other => Err(other),
        };
    }
    let update = CustomerUpdate {
        billing_name: d.company.clone(),
        billing_address: Some(d.address()),
        tax_id: Some(d.tax_id.clone()),
        ..Default::default()
    };
    match polar_for(state, user).await?.update_customer(&user.to_string(), &update).await {
        Ok(_) => {
            record(None).await?;
            Ok(true)
        }
        Err(e) if e.is_unavailable() => {
            record(Some(
                "Not yet sent to our billing provider (unreachable); it will be sent on your next save.".into(),
            ))
            .await?;
            Ok(false)
        }
        Err(PolarError::Invalid { issues, .. }) => {
            let msg = issues
                .first()
                .map(|i| i.msg.clone())
                .unwrap_or_else(|| "Our billing provider did not accept these details.".into());
            let field = issues.first().and_then(|i| i.field()).filter(|f| *f == "tax_id").unwrap_or("country");
            record(Some(msg.clone())).await?;
            Err(AppError::validation(field, format!("Polar did not accept this: {msg}")))
        }
        Err(e) => Err(polar_failure(e)),
    }
}

// ---- invoices ----

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum InvoiceState {
    /// Not generated; can be.
    Available,
    Preparing,
    Ready,
    /// Not invoiceable (pending or void).
    Unavailable,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InvoiceRow {
    pub order_id: String,
    pub date: String,
    pub description: String,
    pub amount: String,
    pub status: String,
    pub invoice: InvoiceState,
}

/// The user's orders at Polar, newest first, with where each invoice stands.
pub async fn invoices(state: &AppState, user: Uuid) -> Result<Vec<InvoiceRow>, AppError> {
    polar_budget(state, user).await?;
    let orders = polar_reads(state)?.all_orders(&user.to_string()).await.map_err(polar_failure)?;
    // Polar listed them for this user's customer: they are this user's.
    let mut conn = state.pool.acquire().await.map_err(AppError::internal)?;
    for o in &orders {
        remember_order(&mut conn, user, &o.id).await.map_err(AppError::internal)?;
    }
    drop(conn);
    let requested: Vec<String> = sqlx::query_scalar("SELECT order_id FROM invoice_requests WHERE user_id = $1")
        .bind(user)
        .fetch_all(&state.pool)
        .await
        .map_err(AppError::internal)?;
    Ok(orders
        .into_iter()
        .map(|o| {
            let invoice = if o.is_invoice_generated {
                InvoiceState::Ready
            } else if requested.contains(&o.id) {
                InvoiceState::Preparing
            } else if matches!(o.status.as_str(), "paid" | "refunded" | "partially_refunded") {
                InvoiceState::Available
            } else {
                InvoiceState::Unavailable
            };
            InvoiceRow {
                date: o.created_at.format("%b %-d, %Y").to_string(),
                description: o.description.clone(),
                amount: crate::domain::money::format_cents_exact(o.total_amount, &o.currency),
                status: match o.status.as_str() {
                    "partially_refunded" => "Partially refunded".into(),
                    s => crate::server::util::capitalize(s),
                },
                order_id: o.id,
                invoice,
            }
        })
        .collect())
}

/// The order, if it is the user's.
async fn own_order(
    state: &AppState,
    user: Uuid,
    order_id: &str,
) -> Result<crate::server::polar::models::Order, AppError> {
    if Uuid::parse_str(order_id).is_err() {
        return Err(AppError::NotFound);
    }
    // Checked here first: another user's order id costs no call to Polar.
    let ours: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM polar_orders WHERE id = $1 AND user_id = $2)")
        .bind(order_id)
        .bind(user)
        .fetch_one(&state.pool)
        .await
        .map_err(AppError::internal)?;
    if !ours {
        return Err(AppError::NotFound);
    }
    let order = match polar_for(state, user).await?.get_order(order_id).await {
        Ok(o) => o,
        Err(PolarError::NotFound { .. }) => return Err(AppError::NotFound),
        Err(e) => return Err(polar_failure(e)),
    };
    if order.customer.as_ref().and_then(|c| c.external_id.as_deref()) != Some(user.to_string().as_str()) {
        return Err(AppError::NotFound);
    }
    Ok(order)
}

/// Asks Polar for an order's invoice, first giving the order the saved billing details if it
/// has none (Polar requires a billing name and address).
pub async fn generate_invoice(state: &AppState, user: Uuid, order_id: &str) -> Result<(), AppError> {
    let order = own_order(state, user, order_id).await?;
    let client = polar(state)?;
    if order.billing_name.is_none() || order.billing_address.is_none() {
        let Some(d) = billing_details(&state.pool, user).await? else {
            return Err(AppError::validation(
                "invoice",
                "Add your billing details (name and country at least) before generating an invoice.",
            ));
        };
        let email: String = sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
            .bind(user)
            .fetch_one(&state.pool)
            .await
            .map_err(AppError::internal)?;
        let name = d.company.clone().unwrap_or(email);
        client.update_order_billing(order_id, &name, &d.address()).await.map_err(polar_failure)?;
    }
    match client.generate_invoice(order_id).await {
        Ok(()) => {}
        Err(PolarError::Conflict { .. }) => {
            return Err(AppError::Conflict {
                field: None,
                message: "This order cannot have an invoice (it is not paid).".into(),
            })
        }
        Err(e) => return Err(polar_failure(e)),
    }
    sqlx::query("INSERT INTO invoice_requests (order_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(order_id)
        .bind(user)
        .execute(&state.pool)
        .await
        .map_err(AppError::internal)?;
    Ok(())
}

/// The invoice's download URL, when it is ready (`None`: still preparing).
pub async fn invoice_url(state: &AppState, user: Uuid, order_id: &str) -> Result<Option<String>, AppError> {
    own_order(state, user, order_id).await?;
    polar_for(state, user).await?.invoice(order_id).await.map(|u| u.map(|u| u.url)).map_err(polar_failure)
}

// ---- account deletion and reconciliation ----

/// Deletes the account: first the Polar customer (its subscriptions end and benefits are
/// revoked there; anonymized per `POLAR_DELETE_ANONYMIZE`), then locally the user is
/// pseudonymized, signed out everywhere and their keys revoked. The ledger keeps its totals.
/// If Polar cannot be reached nothing is deleted (a local-only deletion would leave a paying
/// subscription behind).
pub async fn delete_account(state: &AppState, user: Uuid) -> Result<(), AppError> {
    match polar_for(state, user).await?.delete_customer(&user.to_string(), state.config.polar.anonymize_on_delete).await
    {
        Ok(()) | Err(PolarError::NotFound { .. }) => {}
        Err(e) => return Err(polar_failure(e)),
    }
    let mut tx = state.pool.begin().await.map_err(AppError::internal)?;
    for q in [
        // Personal data kept elsewhere (before the address is pseudonymized below): what Polar
        // sent about them (events still waiting are skipped), the mail sent to them, their
        // links, and the sign-in failures of their address.
        "UPDATE webhook_events SET payload = NULL, raw_body = NULL,
                status = CASE WHEN status = 'pending' THEN 'skipped' ELSE status END,
                last_error = CASE WHEN status = 'pending' THEN 'account deleted before processing' ELSE last_error END,
                processed_at = coalesce(processed_at, now())
          WHERE user_id = $1",
        "DELETE FROM login_failures WHERE email_normalized = (SELECT lower(email) FROM users WHERE id = $1)",
        "DELETE FROM dev_mailbox WHERE lower(to_address) = (SELECT lower(email) FROM users WHERE id = $1)",
        "UPDATE outgoing_mail SET to_address = 'deleted', subject = 'deleted', body_text = NULL,
                status = CASE WHEN status = 'pending' THEN 'failed' ELSE status END,
                last_error = CASE WHEN status = 'pending' THEN 'account deleted before sending' ELSE last_error END
          WHERE user_id = $1",
        "DELETE FROM account_tokens WHERE user_id = $1",
        "UPDATE users SET email = 'deleted-' || id || '@deleted.invalid', password_hash = '!deleted', deleted_at = now() WHERE id = $1",
        "DELETE FROM sessions WHERE user_id = $1",
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE user_id = $1",
        "DELETE FROM billing_details WHERE user_id = $1",
        "DELETE FROM invoice_requests WHERE user_id = $1",
        "UPDATE polar_customers SET status = 'deleted', polar_customer_id = NULL, state = NULL, state_fetched_at = NULL, state_stale = false, updated_at = now() WHERE user_id = $1",
    ] {
        sqlx::query(q).bind(user).execute(&mut *tx).await.map_err(AppError::internal)?;
    }
    tx.commit().await.map_err(AppError::internal)?;
    forget_cached_state(state, user).await;
    tracing::info!(%user, "account deleted");
    Ok(())
}

/// Re-syncs one user from Polar: links the customer, refreshes the Customer State and applies
/// every subscription as Polar has it now. Returns the plan it finds.
pub async fn reconcile(state: &AppState, user: Uuid) -> Result<PlanId, AppError> {
    ensure_customer(state, user).await?;
    let read = customer_state(state, user, Duration::zero()).await?;
    let subs = polar(state)?.list_subscriptions_raw(&user.to_string()).await.map_err(polar_failure)?;
    let mut tx = state.pool.begin().await.map_err(AppError::internal)?;
    for raw in subs {
        crate::server::webhooks::handlers::handle(
            &mut tx,
            &state.config,
            "subscription.updated",
            &serde_json::json!({ "data": raw }),
            Utc::now(),
        )
        .await
        .map_err(AppError::internal)?;
    }
    tx.commit().await.map_err(AppError::internal)?;
    forget_cached_state(state, user).await;
    Ok(read.plan())
}
