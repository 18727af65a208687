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
    use leptos::prelude::*;

    pub fn state() -> Result<AppState, AppError> {
        use_context::<AppState>().ok_or_else(|| AppError::internal("AppState missing from context"))
    }

    pub(crate) use crate::api::request_headers;

    pub async fn client_ip() -> Option<String> {
        leptos_axum::extract::<axum::extract::ConnectInfo<std::net::SocketAddr>>().await.ok().map(|c| c.0.ip().to_string())
    }

    /// Replaces whatever session the request carried with a fresh one (no session fixation).
    pub async fn start_session(state: &AppState, user_id: uuid::Uuid) -> Result<(), AppError> {
        session::destroy(&state.pool, &state.config, &request_headers()).await.map_err(AppError::internal)?;
        let cookie = session::create(&state.pool, &state.config, user_id).await.map_err(AppError::internal)?;
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
    super::with_status(async {
        let state = ssr::state()?;
        let user_id = crate::server::auth::users::sign_up(&state.pool, &email, &password, state.config.free_credits).await?;
        // The Polar customer (external_id = user id) is created in the background, so a slow
        // or unreachable Polar never blocks sign-up; its status is kept on the row.
        crate::server::billing::customer_pending(&state.pool, user_id).await.map_err(AppError::internal)?;
        ssr::start_session(&state, user_id).await?;
        ssr::redirect_after_auth(next);
        Ok(())
    }.await)
}

/// Signs in, rotating the session id, then redirects to `next` or `/billing`.
#[server(prefix = "/api", endpoint = "login")]
pub async fn log_in(email: String, password: String, next: Option<String>) -> Result<(), AppError> {
    super::with_status(async {
        let state = ssr::state()?;
        let ip = ssr::client_ip().await;
        let user_id = crate::server::auth::users::sign_in(&state.pool, &email, &password, ip.as_deref(), state.config.login_max_failures).await?;
        ssr::start_session(&state, user_id).await?;
        ssr::redirect_after_auth(next);
        Ok(())
    }.await)
}

/// Ends the session and returns to the home page.
#[server(prefix = "/api", endpoint = "logout")]
pub async fn log_out() -> Result<(), AppError> {
    let state = ssr::state()?;
    crate::server::auth::session::destroy(&state.pool, &state.config, &ssr::request_headers()).await.map_err(AppError::internal)?;
    crate::server::auth::session::set_cookie(crate::server::auth::session::clearing_cookie(&state.config));
    leptos_axum::redirect("/");
    Ok(())
}

/// The signed-in user, or `None`.
#[server(prefix = "/api", endpoint = "me")]
pub async fn get_current_user() -> Result<Option<UserView>, AppError> {
    Ok(crate::server::auth::session::current_user().await?.map(|u| UserView { email: u.email }))
}
