//! Sends anonymous visitors of account pages to sign-in before any rendering happens:
//! `GET /billing` → `302 /login?next=%2Fbilling`. Pages also handle the anonymous case
//! themselves (client-side navigation never reaches this middleware), but answering here
//! means the server never renders a page only to throw it away. It also gives every request
//! its [`session::RequestSession`], so the session is looked up once per request.

use crate::server::auth::session;
use crate::server::state::AppState;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::Method;

/// Paths that need a signed-in user.
pub fn needs_account(path: &str) -> bool {
    path == "/billing" || path == "/billing/" || path == "/settings" || path.starts_with("/settings/")
}

pub async fn require_account(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let memo = session::RequestSession::default();
    req.extensions_mut().insert(memo.clone());
    if req.method() != Method::GET || !needs_account(req.uri().path()) {
        return next.run(req).await;
    }
    match memo.user(session::Lookup::of(&state), req.headers()).await {
        Ok(Some(_)) => next.run(req).await,
        Ok(None) => {
            let target = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/billing");
            let next_param: String = url::form_urlencoded::byte_serialize(target.as_bytes()).collect();
            (http::StatusCode::FOUND, [(http::header::LOCATION, format!("/login?next={next_param}"))]).into_response()
        }
        // The page itself reports the failure with a reference.
        Err(e) => {
            tracing::error!(error = %e, "session lookup failed");
            next.run(req).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_pages_are_gated_and_others_are_not() {
        for p in ["/billing", "/settings/billing", "/settings"] {
            assert!(needs_account(p), "{p}");
        }
        for p in ["/", "/pricing", "/billing/success", "/login", "/signup", "/billingx"] {
            assert!(!needs_account(p), "{p}");
        }
    }
}
