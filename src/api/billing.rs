//! Server functions for buying and managing: checkout, the success page's progress, the
//! portal, cancel/undo, plan changes, billing details and invoices. The browser names only a
//! plan or pack slug, an order id of its own, or its own form values; the server decides the
//! rest.

use crate::error::AppError;
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

#[cfg(feature = "ssr")]
mod ssr {
    use crate::error::AppError;
    pub use crate::server::billing;

    pub(crate) use crate::api::state;

    /// A plan one can buy or switch to from the browser: `pro` or `business`.
    pub fn paid_plan(slug: &str) -> Result<crate::domain::plans::PlanId, AppError> {
        slug.parse::<crate::domain::plans::PlanId>()
            .ok()
            .filter(|p| p.is_self_serve_paid())
            .ok_or_else(|| AppError::validation("plan", "Choose Pro or Business."))
    }

    pub(crate) use crate::api::go;
}

/// Starts a Polar checkout for a plan (`pro`, `business`) or a pack (`pack_50`, `pack_100`)
/// and redirects to it. Anonymous visitors are sent to sign in and come back to pricing.
#[server(prefix = "/api", endpoint = "billing/checkout")]
pub async fn start_checkout(item: String) -> Result<String, AppError> {
    super::with_status(
        async {
            let state = ssr::state()?;
            let Some(user) = crate::server::auth::session::current_user().await? else {
                return Ok(ssr::go("/login?next=%2Fpricing"));
            };
            let url = ssr::billing::start_checkout(&state.billing, user.id, &user.email, &item).await?;
            Ok(ssr::go(&url))
        }
        .await,
    )
}

/// Where the checkout of the success page stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckoutState {
    Processing,
    Ready { what: String, is_plan: bool },
    Expired,
    Failed,
}

#[server(prefix = "/api", endpoint = "billing/checkout-status")]
pub async fn checkout_status(checkout_id: String) -> Result<CheckoutState, AppError> {
    super::with_status(
        async {
            let state = ssr::state()?;
            let user = crate::server::auth::require_user().await?;
            use ssr::billing::Progress;
            Ok(match ssr::billing::checkout_progress(&state.billing, user.id, &checkout_id).await? {
                Progress::Processing => CheckoutState::Processing,
                Progress::Ready { what, is_plan } => CheckoutState::Ready { what, is_plan },
                Progress::Expired => CheckoutState::Expired,
                Progress::Failed => CheckoutState::Failed,
            })
        }
        .await,
    )
}

/// Opens Polar's customer portal (a fresh customer session).
#[server(prefix = "/api", endpoint = "billing/portal")]
pub async fn open_portal() -> Result<String, AppError> {
    super::with_status(
        async {
            let state = ssr::state()?;
            let user = crate::server::auth::require_user().await?;
            let url = ssr::billing::portal_url(&state.billing, user.id).await?;
            Ok(ssr::go(&url))
        }
        .await,
    )
}

/// Cancels at the end of the period (`cancel = true`) or undoes that.
#[server(prefix = "/api", endpoint = "billing/cancel")]
pub async fn set_cancel(cancel: bool) -> Result<String, AppError> {
    super::with_status(
        async {
            let state = ssr::state()?;
            let user = crate::server::auth::require_user().await?;
            ssr::billing::set_cancel_at_period_end(&state.billing, user.id, cancel).await?;
            Ok(ssr::go(if cancel { "/billing?done=canceled" } else { "/billing?done=resumed" }))
        }
        .await,
    )
}

/// Switches plan: an upgrade now (difference invoiced), a downgrade at renewal. Without a
/// subscription it is a checkout.
#[server(prefix = "/api", endpoint = "billing/change-plan")]
pub async fn change_plan(plan: String) -> Result<String, AppError> {
    super::with_status(
        async {
            let state = ssr::state()?;
            let user = crate::server::auth::require_user().await?;
            let to = ssr::paid_plan(&plan)?;
            if ssr::billing::current_subscription(&state.billing, user.id).await?.is_none() {
                let url = ssr::billing::start_checkout(&state.billing, user.id, &user.email, to.slug()).await?;
                return Ok(ssr::go(&url));
            }
            let done = ssr::billing::change_plan(&state.billing, user.id, to).await?;
            Ok(ssr::go(&format!("/billing?done={done}")))
        }
        .await,
    )
}

/// What a plan change would do, as the confirmation page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanChangeView {
    pub plan: String,
    pub from_name: String,
    pub to_name: String,
    pub upgrade: bool,
    /// Formatted amounts, e.g. `$10.00`.
    pub charge_now: String,
    pub current_price: String,
    pub new_price: String,
    pub extra_credits_now: i64,
    /// Credits of one billing period.
    pub current_period_credits: i64,
    pub new_period_credits: i64,
    /// `month` or `year`.
    pub interval: String,
    /// The next renewal, e.g. `December 22, 2026`.
    pub period_end: String,
    /// A plan change already scheduled for the renewal.
    pub pending_name: Option<String>,
}

/// The preview of switching to `plan` (`pro`, `business`), for a user with a subscription.
#[server(prefix = "/api", endpoint = "billing/plan-change")]
pub async fn get_plan_change(plan: String) -> Result<PlanChangeView, AppError> {
    super::with_status(
        async {
            let state = ssr::state()?;
            let user = crate::server::auth::require_user().await?;
            let to = ssr::paid_plan(&plan)?;
            let p = ssr::billing::preview_plan_change(&state.billing, user.id, to, chrono::Utc::now()).await?;
            let money = |c: i64| crate::domain::money::format_cents_exact(c, &p.currency);
            Ok(PlanChangeView {
                plan: to.slug().to_string(),
                from_name: p.from.name().to_string(),
                to_name: p.to.name().to_string(),
                upgrade: p.upgrade,
                charge_now: money(p.charge_now_cents),
                current_price: money(p.current_price_cents),
                new_price: money(p.new_price_cents),
                extra_credits_now: p.extra_credits_now,
                current_period_credits: p.current_period_credits,
                new_period_credits: p.new_period_credits,
                interval: if p.yearly { "year" } else { "month" }.to_string(),
                period_end: p.period_end.format("%B %-d, %Y").to_string(),
                pending_name: p.pending.map(|x| x.name().to_string()),
            })
        }
        .await,
    )
}

/// Billing details as the settings page shows and edits them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingDetailsView {
    pub billing_email: String,
    pub company: String,
    pub line1: String,
    pub line2: String,
    pub city: String,
    pub region: String,
    pub postal_code: String,
    pub country: String,
    pub tax_id: String,
    /// Why the last push to Polar failed, if it did.
    pub sync_notice: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceView {
    pub order_id: String,
    pub date: String,
    pub description: String,
    pub amount: String,
    pub status: String,
    /// `available`, `preparing`, `ready` or `unavailable`.
    pub invoice: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingSettingsView {
    pub account_email: String,
    pub details: BillingDetailsView,
    pub has_details: bool,
    /// `Err`: why the invoices could not be listed (Polar unreachable).
    pub invoices: Result<Vec<InvoiceView>, String>,
}

/// The session flash slot holding billing details a plain form post had rejected.
#[cfg(feature = "ssr")]
const DETAILS_DRAFT: &str = "billing_details";

#[server(prefix = "/api", endpoint = "billing/settings")]
pub async fn get_billing_settings() -> Result<BillingSettingsView, AppError> {
    super::with_status(
        async {
            let state = ssr::state()?;
            let Some(user) = crate::server::auth::session::current_user().await? else {
                leptos_axum::redirect("/login?next=%2Fsettings%2Fbilling");
                return Err(AppError::Unauthorized);
            };
            let saved = ssr::billing::billing_details(&state.pool, user.id).await?;
            let has_details = saved.is_some();
            // A form rejected without JavaScript comes back with what was typed.
            let draft = crate::server::auth::session::take_flash(
                &state.pool,
                &state.config,
                &crate::api::request_headers(),
                DETAILS_DRAFT,
            )
            .await?
            .and_then(|v| serde_json::from_value::<ssr::billing::BillingDetails>(v).ok());
            let d = draft.or(saved).unwrap_or_default();
            let o = |v: Option<String>| v.unwrap_or_default();
            let details = BillingDetailsView {
                billing_email: o(d.billing_email),
                company: o(d.company),
                line1: o(d.line1),
                line2: o(d.line2),
                city: o(d.city),
                region: o(d.region),
                postal_code: o(d.postal_code),
                country: d.country,
                tax_id: o(d.tax_id),
                sync_notice: d.polar_error,
            };
            let invoices = match ssr::billing::invoices(&state.billing, user.id).await {
                Ok(rows) => Ok(rows
                    .into_iter()
                    .map(|r| InvoiceView {
                        order_id: r.order_id,
                        date: r.date,
                        description: r.description,
                        amount: r.amount,
                        status: r.status,
                        invoice: match r.invoice {
                            ssr::billing::InvoiceState::Available => "available",
                            ssr::billing::InvoiceState::Preparing => "preparing",
                            ssr::billing::InvoiceState::Ready => "ready",
                            ssr::billing::InvoiceState::Unavailable => "unavailable",
                        }
                        .into(),
                    })
                    .collect()),
                Err(e) => Err(e.to_string()),
            };
            Ok(BillingSettingsView { account_email: user.email, details, has_details, invoices })
        }
        .await,
    )
}

// A #[server] function's arguments are its form's fields (posted without JavaScript too), so
// they stay flat here and become `BillingDetails` at once.
#[allow(clippy::too_many_arguments)]
#[server(prefix = "/api", endpoint = "billing/details")]
pub async fn save_billing_details(
    billing_email: Option<String>,
    company: Option<String>,
    line1: Option<String>,
    line2: Option<String>,
    city: Option<String>,
    region: Option<String>,
    postal_code: Option<String>,
    country: String,
    tax_id: Option<String>,
) -> Result<String, AppError> {
    super::with_status(
        async {
            let state = ssr::state()?;
            let user = crate::server::auth::require_user().await?;
            let input = ssr::billing::BillingDetails {
                billing_email,
                company,
                line1,
                line2,
                city,
                region,
                postal_code,
                country,
                tax_id,
                tax_id_kind: None,
                polar_error: None,
            };
            match ssr::billing::save_billing_details(&state.billing, user.id, input.clone()).await {
                Ok(synced) => Ok(ssr::go(if synced {
                    "/settings/billing?done=saved"
                } else {
                    "/settings/billing?done=saved-locally"
                })),
                Err(e) => {
                    // Without JavaScript the page is rendered anew after the error: keep what
                    // was typed for it (with JavaScript the form itself keeps it).
                    if crate::api::is_plain_form_post() {
                        let draft = serde_json::to_value(&input).map_err(|e| crate::server::errors::internal(&e))?;
                        crate::server::auth::session::set_flash(
                            &state.pool,
                            &state.config,
                            &crate::api::request_headers(),
                            DETAILS_DRAFT,
                            &draft,
                        )
                        .await?;
                    }
                    Err(e.into())
                }
            }
        }
        .await,
    )
}

#[server(prefix = "/api", endpoint = "billing/invoice")]
pub async fn generate_invoice(order_id: String) -> Result<String, AppError> {
    super::with_status(
        async {
            let state = ssr::state()?;
            let user = crate::server::auth::require_user().await?;
            ssr::billing::generate_invoice(&state.billing, user.id, &order_id).await?;
            Ok(ssr::go("/settings/billing?done=invoice#invoices-title"))
        }
        .await,
    )
}

/// Deletes the signed-in account after the person typed their email to confirm. Polar's
/// customer goes first; if Polar cannot be reached nothing is deleted.
#[server(prefix = "/api", endpoint = "account/delete")]
pub async fn delete_account(confirm_email: String) -> Result<String, AppError> {
    super::with_status(
        async {
            let state = ssr::state()?;
            let user = crate::server::auth::require_user().await?;
            if !confirm_email.trim().eq_ignore_ascii_case(&user.email) {
                return Err(AppError::validation(
                    "confirm_email",
                    "Type your account's email address exactly to confirm.",
                ));
            }
            ssr::billing::delete_account(&state.billing, user.id, ssr::billing::Deletion::Customer).await?;
            crate::server::auth::session::set_cookie(crate::server::auth::session::clearing_cookie(&state.config));
            Ok(ssr::go("/?done=account-deleted"))
        }
        .await,
    )
}
