//! What the account pages need before the billing issues fill them in: the signed-in user
//! and the catalogue. Pages that need a user redirect anonymous visitors to sign-in and back.

use crate::domain::credits::Balance;
use crate::domain::plans::{CreditPackOffer, PlanId, PlanOffer};
use crate::error::AppError;
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PricingView {
    pub offers: Vec<PlanOffer>,
    pub packs: Vec<CreditPackOffer>,
    /// The visitor's plan, when signed in.
    pub current_plan: Option<PlanId>,
    pub enterprise_demo_url: Option<String>,
}

/// The paid subscription a page shows, as the last Polar webhook described it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionView {
    pub status: String,
    pub renews_or_ends_on: String,
    pub cancel_at_period_end: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountView {
    pub email: String,
    pub plan: PlanId,
    pub subscription: Option<SubscriptionView>,
    pub member_since: String,
    pub credits: Balance,
    /// When a credit day begins, e.g. "00:00 UTC" or "00:00 UTC+02:00".
    pub day_boundary: String,
    /// Set when the plan shown is the last known one (Polar unreachable).
    pub plan_notice: Option<String>,
    /// Whether the user has a Polar customer (so the portal can open).
    pub has_billing_account: bool,
    /// Whether the account's email address is confirmed (the free credits come with it).
    pub email_verified: bool,
    /// The free credits an account receives once confirmed.
    pub free_credits: i64,
}

/// The catalogue and, for a signed-in visitor, their plan.
#[server(prefix = "/api", endpoint = "pricing")]
pub async fn get_pricing() -> Result<PricingView, AppError> {
    use crate::server::state::AppState;
    let state = use_context::<AppState>().ok_or_else(|| AppError::internal("AppState missing"))?;
    let user = crate::server::auth::session::current_user().await?;
    let products = &state.config.polar.products;
    let mut offers = crate::domain::plans::default_offers(state.config.free_credits);
    // Yearly prices only for plans whose yearly product is configured.
    for o in &mut offers {
        let sold_yearly = match o.plan {
            PlanId::Pro => products.pro_yearly.is_some(),
            PlanId::Business => products.business_yearly.is_some(),
            _ => false,
        };
        if !sold_yearly {
            o.yearly_price_cents = None;
        }
    }
    Ok(PricingView {
        offers,
        packs: crate::domain::plans::default_packs(),
        current_plan: match user {
            Some(u) => Some(plan_of_user(&state, u.id).await?.0),
            None => None,
        },
        enterprise_demo_url: state.config.enterprise_demo_url.as_ref().map(|u| u.to_string()),
    })
}

/// The signed-in user's account summary. Anonymous visitors are sent to sign-in with a way
/// back to `return_to`.
#[server(prefix = "/api", endpoint = "account")]
pub async fn get_account(return_to: String) -> Result<AccountView, AppError> {
    use crate::server::state::AppState;
    let state = use_context::<AppState>().ok_or_else(|| AppError::internal("AppState missing"))?;
    let Some(user) = crate::server::auth::session::current_user().await? else {
        let back = if crate::server::util::is_safe_local_path(&return_to) { return_to } else { "/billing".into() };
        leptos_axum::redirect(&format!(
            "/login?next={}",
            url::form_urlencoded::byte_serialize(back.as_bytes()).collect::<String>()
        ));
        return Err(AppError::Unauthorized);
    };
    let (created, verified): (chrono::DateTime<chrono::Utc>, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT created_at, email_verified_at FROM users WHERE id = $1")
            .bind(user.id)
            .fetch_one(&state.pool)
            .await
            .map_err(AppError::internal)?;
    let credits =
        crate::server::ledger::balance(&state.pool, user.id, chrono::Utc::now()).await.map_err(AppError::internal)?;
    let offset = state.config.credit_day_offset;
    let (_, subscription) = current_subscription(&state.pool, user.id).await?;
    let (plan, plan_notice, has_billing_account) = plan_of_user(&state, user.id).await?;
    Ok(AccountView {
        email: user.email,
        plan,
        plan_notice,
        has_billing_account,
        email_verified: verified.is_some(),
        free_credits: state.config.free_credits,
        subscription,
        member_since: created.format("%B %-d, %Y").to_string(),
        credits,
        day_boundary: if offset.local_minus_utc() == 0 {
            "00:00 UTC".to_string()
        } else {
            format!("00:00 UTC{offset}")
        },
    })
}

/// The user's plan from Polar's Customer State (granted benefits, through the cache). When
/// Polar cannot be reached: the last known state, or the last subscription webhook, with a
/// notice saying so.
#[cfg(feature = "ssr")]
async fn plan_of_user(
    state: &crate::server::state::AppState,
    user: uuid::Uuid,
) -> Result<(PlanId, Option<String>, bool), AppError> {
    use crate::server::billing;
    match billing::customer_state(state, user, billing::STATE_TTL).await {
        Ok(read) => {
            let notice = read.stale.then(|| {
                format!(
                    "Our billing provider is not answering; this is your plan as of {}.",
                    read.fetched_at.format("%B %-d, %H:%M UTC")
                )
            });
            Ok((read.plan(), notice, read.state.is_some()))
        }
        Err(AppError::Unavailable { .. }) => {
            let (plan, _) = current_subscription(&state.pool, user).await?;
            Ok((
                plan,
                Some("Our billing provider is not answering; this is your plan as we last heard of it.".into()),
                false,
            ))
        }
        Err(e) => Err(e),
    }
}

/// The user's plan from their live subscription (active, trialing or past due), else Free.
#[cfg(feature = "ssr")]
async fn current_subscription(
    pool: &sqlx::PgPool,
    user_id: uuid::Uuid,
) -> Result<(PlanId, Option<SubscriptionView>), AppError> {
    let row: Option<(Option<String>, String, chrono::DateTime<chrono::Utc>, bool)> = sqlx::query_as(
        "SELECT plan, status, current_period_end, cancel_at_period_end FROM subscriptions
          WHERE user_id = $1 AND status IN ('active', 'trialing', 'past_due')
          ORDER BY polar_modified_at DESC LIMIT 1",
    )
    .bind(user_id)
    .fetch_optional(pool)
    .await
    .map_err(AppError::internal)?;
    Ok(match row {
        Some((plan, status, end, cancel)) => (
            plan.and_then(|p| p.parse().ok()).unwrap_or(PlanId::Free),
            Some(SubscriptionView {
                status,
                renews_or_ends_on: end.format("%B %-d, %Y").to_string(),
                cancel_at_period_end: cancel,
            }),
        ),
        None => (PlanId::Free, None),
    })
}

/// One line of the credit history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerLine {
    pub when: String,
    pub what: String,
    /// Signed, e.g. `+50` or `-1`.
    pub amount: String,
    pub is_debit: bool,
}

/// A day of usage for the chart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageDay {
    /// `Nov 3`.
    pub label: String,
    pub credits: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityView {
    pub lines: Vec<LedgerLine>,
    pub page: u32,
    pub has_more: bool,
    /// The last 30 credit days, oldest first.
    pub usage: Vec<UsageDay>,
}

/// Lines per page of the credit history.
pub const LEDGER_PAGE_SIZE: i64 = 15;

/// The signed-in user's credit history (newest first, paginated) and their spend per day for
/// the last 30 days, in the configured credit day.
#[server(prefix = "/api", endpoint = "activity")]
pub async fn get_activity(page: u32) -> Result<ActivityView, AppError> {
    use crate::server::state::AppState;
    let state = use_context::<AppState>().ok_or_else(|| AppError::internal("AppState missing"))?;
    let user = crate::server::auth::require_user().await?;
    let page = page.max(1);
    let rows: Vec<(String, i64, chrono::DateTime<chrono::Utc>, serde_json::Value)> = sqlx::query_as(
        "SELECT kind, amount, effective_at, metadata FROM credit_entries WHERE user_id = $1 AND effective_at <= now()
          ORDER BY effective_at DESC, id DESC LIMIT $2 OFFSET $3",
    )
    .bind(user.id)
    .bind(LEDGER_PAGE_SIZE + 1)
    .bind((page as i64 - 1) * LEDGER_PAGE_SIZE)
    .fetch_all(&state.pool)
    .await
    .map_err(AppError::internal)?;
    let has_more = rows.len() as i64 > LEDGER_PAGE_SIZE;
    let offset = state.config.credit_day_offset;
    let lines = rows
        .into_iter()
        .take(LEDGER_PAGE_SIZE as usize)
        .map(|(kind, amount, at, meta)| LedgerLine {
            when: at.with_timezone(&offset).format("%b %-d, %H:%M").to_string(),
            what: match kind.as_str() {
                "free_grant" => "Free credits".to_string(),
                "allotment" => format!(
                    "{} plan allotment",
                    meta["plan"].as_str().map(crate::server::util::capitalize).unwrap_or_else(|| "Plan".into())
                ),
                "daily_accrual" => "Daily allotment".to_string(),
                "purchase" => "Credit pack".to_string(),
                "spend" => {
                    meta["operation"].as_str().map(|o| format!("API call: {o}")).unwrap_or_else(|| "API call".into())
                }
                "refund_clawback" => "Refunded pack taken back".to_string(),
                "adjustment" => {
                    meta["reason"].as_str().map(|r| format!("Adjustment: {r}")).unwrap_or_else(|| "Adjustment".into())
                }
                "expiry" => "Unused allotment expired".to_string(),
                other => other.to_string(),
            },
            amount: if amount > 0 {
                format!("+{}", crate::domain::money::group_thousands(amount as u64))
            } else {
                format!("-{}", crate::domain::money::group_thousands(amount.unsigned_abs()))
            },
            is_debit: amount < 0,
        })
        .collect();
    // Spend per credit day, last 30 days (days without spend are zero).
    let secs = offset.local_minus_utc();
    let spent: Vec<(chrono::NaiveDate, i64)> = sqlx::query_as(
        "SELECT (effective_at + make_interval(secs => $2))::date AS day, (-sum(amount))::bigint FROM credit_entries
          WHERE user_id = $1 AND kind = 'spend' AND effective_at > now() - interval '31 days' GROUP BY 1",
    )
    .bind(user.id)
    .bind(secs as f64)
    .fetch_all(&state.pool)
    .await
    .map_err(AppError::internal)?;
    let today = chrono::Utc::now().with_timezone(&offset).date_naive();
    let usage = (0..30)
        .rev()
        .map(|back| {
            let day = today - chrono::Duration::days(back);
            UsageDay {
                label: day.format("%b %-d").to_string(),
                credits: spent.iter().find(|(d, _)| *d == day).map(|(_, n)| *n).unwrap_or(0),
            }
        })
        .collect();
    Ok(ActivityView { lines, page, has_more, usage })
}
