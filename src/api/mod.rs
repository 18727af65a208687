//! Server functions, by area, and the DTOs they exchange with the browser. Each one is thin:
//! authenticate, call one server-side operation, map the error to an [`AppError`](crate::error::AppError).

pub mod account;
pub mod admin;
pub mod auth;
pub mod billing;
pub mod keys;
pub mod usage;

/// The server's state, which every server function needs.
#[cfg(feature = "ssr")]
pub(crate) fn state() -> Result<crate::server::state::AppState, crate::error::AppError> {
    leptos::prelude::use_context().ok_or_else(|| crate::server::errors::internal_msg("AppState missing"))
}

/// Where to go next. A plain HTML form post (JavaScript off) gets a 303 there; the hydrated
/// page receives the URL and does a full navigation itself, because the destination may be a
/// page outside this app's router (Polar's checkout or portal).
#[cfg(feature = "ssr")]
pub(crate) fn go(to: &str) -> String {
    if is_plain_form_post() {
        leptos_axum::redirect(to);
    }
    to.to_string()
}

/// The headers of the request being served (empty outside a request).
#[cfg(feature = "ssr")]
pub(crate) fn request_headers() -> http::HeaderMap {
    leptos::prelude::use_context::<http::request::Parts>().map(|p| p.headers).unwrap_or_default()
}

/// Gives a failed server-function call the HTTP status its error means (422, 401, 409, 429…)
/// instead of the framework's blanket 500, so logs and proxies see client errors as such.
/// Plain HTML form posts keep their 302 back to the form (the error travels in the URL).
#[cfg(feature = "ssr")]
pub(crate) fn with_status<T>(result: Result<T, crate::error::AppError>) -> Result<T, crate::error::AppError> {
    use leptos::prelude::use_context;
    if let Err(e) = &result {
        if !is_plain_form_post() {
            if let (Some(res), Ok(status)) =
                (use_context::<leptos_axum::ResponseOptions>(), http::StatusCode::from_u16(e.status_code()))
            {
                res.set_status(status);
                if let crate::error::AppError::RateLimited { retry_after_secs } = e {
                    res.insert_header(http::header::RETRY_AFTER, http::HeaderValue::from(*retry_after_secs));
                }
            }
        }
    }
    result
}

/// Whether the current server-function call is a plain HTML form post (JavaScript off), which
/// expects a redirect rather than a value.
#[cfg(feature = "ssr")]
pub(crate) fn is_plain_form_post() -> bool {
    leptos::prelude::use_context::<http::request::Parts>()
        .and_then(|p| {
            p.headers.get(http::header::ACCEPT).and_then(|v| v.to_str().ok()).map(|v| v.contains("text/html"))
        })
        .unwrap_or(false)
}
