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
    Ok(crate::server::account::pricing(&state, user.map(|u| u.id)).await?)
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
    Ok(crate::server::account::summary(&state, user.id, user.email).await?)
}

/// The signed-in user's credit history (newest first, a page before or after a cursor) and their spend per day for
/// the last 30 days, in the configured credit day.
#[server(prefix = "/api", endpoint = "activity")]
pub async fn get_activity(before: Option<String>, after: Option<String>) -> Result<ActivityView, AppError> {
    let state = super::state()?;
    let user = crate::server::auth::require_user().await?;
    Ok(crate::server::account::activity(&state, user.id, before.as_deref(), after.as_deref()).await?)
}
