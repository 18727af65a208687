//! The account pages' server functions: the catalogue with the visitor's plan, the account
//! summary and the credit history (built by `server::account`). Pages that need a user
//! redirect anonymous visitors to sign-in and back.

use crate::error::AppError;
use leptos::prelude::*;

pub use crate::views::account::*;

/// The catalogue and, for a signed-in visitor, their plan.
#[server(prefix = "/api", endpoint = "pricing")]
pub async fn get_pricing() -> Result<PricingView, AppError> {
    let state = super::state()?;
    let user = crate::server::auth::session::current_user().await?;
    Ok(crate::server::account::pricing(&state.billing, user.map(|u| u.id)).await?)
}

/// The signed-in user's account summary. Anonymous visitors are sent to sign-in with a way
/// back to `return_to`.
#[server(prefix = "/api", endpoint = "account")]
pub async fn get_account(return_to: String) -> Result<AccountView, AppError> {
    let state = super::state()?;
    let Some(user) = crate::server::auth::session::current_user().await? else {
        let back = if crate::server::util::is_safe_local_path(&return_to) { return_to } else { "/billing".into() };
        leptos_axum::redirect(&format!(
            "/login?next={}",
            url::form_urlencoded::byte_serialize(back.as_bytes()).collect::<String>()
        ));
        return Err(AppError::Unauthorized);
    };
    Ok(crate::server::account::summary(&state.billing, user.id, user.email).await?)
}

/// Everything `/billing` shows, read in one server function: the account summary, the usage
/// panel and a page of credit history share one pooled connection (each checkout of a
/// connection costs a round trip, and the page used three), the plan alongside.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BillingPageView {
    pub account: AccountView,
    /// Its own `Result`: the page still shows the account when usage cannot be read.
    pub usage: Result<crate::api::usage::UsageView, AppError>,
    pub activity: Result<ActivityView, AppError>,
}

/// The billing page of the signed-in user, with the page of credit history just older than the
/// cursor `before` or newer than `after` (the newest without either). Anonymous visitors are
/// sent to sign-in and back.
#[server(prefix = "/api", endpoint = "billing-page")]
pub async fn get_billing_page(before: Option<String>, after: Option<String>) -> Result<BillingPageView, AppError> {
    let state = super::state()?;
    let Some(user) = crate::server::auth::session::current_user().await? else {
        leptos_axum::redirect("/login?next=%2Fbilling");
        return Err(AppError::Unauthorized);
    };
    // The account and the plan first (the plan from the cache row the account's statement
    // reads; when that is not fresh, through the cache on connections of its own), then the
    // usage panel and the history on the same connection.
    let (account, conn) =
        crate::server::account::account_on(&state.billing, state.pool.acquire().await?, user.id, user.email).await?;
    let mut conn = match conn {
        Some(conn) => conn,
        None => state.pool.acquire().await?,
    };
    let usage = crate::api::usage::usage_on(&mut conn, user.id).await;
    let activity =
        crate::server::account::activity(&state.billing, &mut conn, user.id, before.as_deref(), after.as_deref())
            .await
            .map_err(AppError::from);
    Ok(BillingPageView { account, usage, activity })
}
