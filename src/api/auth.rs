//! Sign-up, sign-in, sign-out and "who am I". The form posts work without JavaScript
//! (URL-encoded bodies, 302 redirects); with JavaScript they run as fetches.

use crate::error::AppError;
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

/// What the browser may know about the signed-in user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    pub email: String,
}

#[cfg(feature = "ssr")]
mod ssr {
    use crate::error::AppError;
    use crate::server::auth::session;
    use crate::server::state::AppState;
    use crate::server::util::is_safe_local_path;

    pub(crate) use crate::api::state;

    pub(crate) use crate::api::request_headers;

    /// The client's address as `client_ip` resolved it (behind trusted proxies, the real one),
    /// as limits key on it (an IPv6 client by its /64).
    pub fn client_ip() -> Option<String> {
        crate::server::client_ip::current().map(crate::server::client_ip::limit_key)
    }

    /// What account operations use (not the whole state).
    pub fn accounts(state: &AppState) -> crate::server::auth::Accounts<'_> {
        crate::server::auth::Accounts {
            pool: &state.pool,
            passwords: &state.passwords,
            config: &state.config,
            mailer: &state.mailer,
        }
    }

    /// Replaces whatever session the request carried with a fresh one (no session fixation).
    pub async fn start_session(state: &AppState, user_id: uuid::Uuid) -> Result<(), AppError> {
        session::destroy(&state.pool, &state.config, &request_headers()).await?;
        let cookie = session::create(&state.pool, &state.config, user_id).await?;
        session::set_cookie(cookie);
        Ok(())
    }

    pub fn redirect_after_auth(next: Option<String>) {
        let target = next.filter(|n| is_safe_local_path(n)).unwrap_or_else(|| "/billing".to_string());
        leptos_axum::redirect(&target);
    }
}

/// Creates an account and signs it in, then redirects to `next` (a local path) or `/billing`.
#[server(prefix = "/api", endpoint = "signup")]
pub async fn sign_up(email: String, password: String, next: Option<String>) -> Result<(), AppError> {
    super::with_status(
        async {
            let state = ssr::state()?;
            let ip = ssr::client_ip();
            let user_id =
                crate::server::auth::users::sign_up(ssr::accounts(&state), &email, &password, ip.as_deref()).await?;
            // The Polar customer (external_id = user id) is created in the background, so a slow
            // or unreachable Polar never blocks sign-up; its status is kept on the row.
            crate::server::billing::customer_pending(&state.pool, user_id).await?;
            ssr::start_session(&state, user_id).await?;
            ssr::redirect_after_auth(next);
            Ok(())
        }
        .await,
    )
}

/// Signs in, rotating the session id, then redirects to `next` or `/billing`.
#[server(prefix = "/api", endpoint = "login")]
pub async fn log_in(email: String, password: String, next: Option<String>) -> Result<(), AppError> {
    super::with_status(
        async {
            let state = ssr::state()?;
            let ip = ssr::client_ip();
            let user_id =
                crate::server::auth::users::sign_in(ssr::accounts(&state), &email, &password, ip.as_deref()).await?;
            ssr::start_session(&state, user_id).await?;
            ssr::redirect_after_auth(next);
            Ok(())
        }
        .await,
    )
}

/// Ends the session and returns to the home page.
#[server(prefix = "/api", endpoint = "logout")]
pub async fn log_out() -> Result<(), AppError> {
    let state = ssr::state()?;
    crate::server::auth::session::destroy(&state.pool, &state.config, &ssr::request_headers()).await?;
    crate::server::auth::session::set_cookie(crate::server::auth::session::clearing_cookie(&state.config));
    leptos_axum::redirect("/");
    Ok(())
}

/// The signed-in user, or `None`.
#[server(prefix = "/api", endpoint = "me")]
pub async fn get_current_user() -> Result<Option<UserView>, AppError> {
    Ok(crate::server::auth::session::current_user().await?.map(|u| UserView { email: u.email }))
}

/// What the sign-up page says about the free plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignupInfo {
    /// Credits granted once the email address is confirmed (`FREE_CREDITS`).
    pub free_credits: i64,
}

#[server(prefix = "/api", endpoint = "signup-info")]
pub async fn get_signup_info() -> Result<SignupInfo, AppError> {
    let state = ssr::state()?;
    Ok(SignupInfo { free_credits: state.config.free_credits })
}

/// Follows an email-confirmation link's form: confirms the address (and grants the free
/// credits once), then goes to billing (signed in) or sign-in.
#[server(prefix = "/api", endpoint = "confirm-email")]
pub async fn confirm_email(token: String) -> Result<(), AppError> {
    super::with_status(
        async {
            let state = ssr::state()?;
            let verified = crate::server::auth::recovery::verify_email(ssr::accounts(&state), &token).await?;
            let signed_in = crate::server::auth::session::current_user().await?.is_some();
            let done = match verified {
                crate::server::auth::recovery::Verified::Confirmed { free_credits: 0, .. }
                    if state.config.free_credits > 0 =>
                {
                    "email-confirmed-claimed"
                }
                _ => "email-confirmed",
            };
            leptos_axum::redirect(&format!("{}?done={done}", if signed_in { "/billing" } else { "/login" }));
            Ok(())
        }
        .await,
    )
}

/// Sends the confirmation link again to the signed-in user.
#[server(prefix = "/api", endpoint = "resend-confirmation")]
pub async fn resend_confirmation() -> Result<(), AppError> {
    super::with_status(
        async {
            let state = ssr::state()?;
            let user = crate::server::auth::require_user().await?;
            crate::server::auth::recovery::resend_verification(ssr::accounts(&state), user.id).await?;
            leptos_axum::redirect("/billing?done=confirmation-sent");
            Ok(())
        }
        .await,
    )
}

/// "Forgot password": the same answer whether or not the address has an account.
#[server(prefix = "/api", endpoint = "forgot-password")]
pub async fn request_password_reset(email: String) -> Result<(), AppError> {
    super::with_status(
        async {
            let state = ssr::state()?;
            let ip = ssr::client_ip();
            crate::server::auth::recovery::request_password_reset(ssr::accounts(&state), &email, ip.as_deref()).await?;
            leptos_axum::redirect("/forgot-password?sent=1");
            Ok(())
        }
        .await,
    )
}

/// Whether a reset link still works (the reset page shows its form only then).
#[server(prefix = "/api", endpoint = "reset-link")]
pub async fn check_reset_link(token: String) -> Result<bool, AppError> {
    let state = ssr::state()?;
    Ok(crate::server::auth::recovery::reset_link_usable(ssr::accounts(&state), &token).await?)
}

/// Sets a new password through a reset link, ends every session, and signs this one in.
#[server(prefix = "/api", endpoint = "reset-password")]
pub async fn reset_password(token: String, password: String) -> Result<(), AppError> {
    super::with_status(
        async {
            let state = ssr::state()?;
            let ip = ssr::client_ip();
            let user =
                crate::server::auth::recovery::reset_password(ssr::accounts(&state), &token, &password, ip.as_deref())
                    .await?;
            ssr::start_session(&state, user).await?;
            leptos_axum::redirect("/billing?done=password-reset");
            Ok(())
        }
        .await,
    )
}

/// Changes the signed-in user's password (the current one is required); other sessions end.
#[server(prefix = "/api", endpoint = "change-password")]
pub async fn change_password(current_password: String, new_password: String) -> Result<(), AppError> {
    super::with_status(
        async {
            let state = ssr::state()?;
            let user = crate::server::auth::require_user().await?;
            let ip = ssr::client_ip();
            crate::server::auth::recovery::change_password(
                ssr::accounts(&state),
                user.id,
                &current_password,
                &new_password,
                ip.as_deref(),
                &ssr::request_headers(),
            )
            .await?;
            leptos_axum::redirect("/settings/billing?done=password-changed#password-title");
            Ok(())
        }
        .await,
    )
}
