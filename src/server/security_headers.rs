//! Security headers.
//!
//! Every response: `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`,
//! `Referrer-Policy: strict-origin-when-cross-origin`, `Cross-Origin-Opener-Policy:
//! same-origin`, and on https `Strict-Transport-Security` (two years, subdomains). Every page:
//! a Content-Security-Policy with a fresh nonce per response ([`page_policy`]), under which
//! hydration works: scripts only from this origin or carrying the nonce (Leptos puts it on its
//! hydration and resource scripts), wasm compiled from this origin, no inline styles, no
//! plugins, no framing (`frame-ancestors 'none'`), forms only to this origin and Polar's hosted
//! checkout. A response to a request that carries a session (signed-in pages and server
//! functions) gets `Cache-Control: no-store`, so no shared cache or back button keeps a user's
//! billing.

use crate::server::state::AppState;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::HeaderValue;

/// The policy of a page rendered with `nonce`.
pub fn page_policy(nonce: &str) -> String {
    format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; \
         form-action 'self' https://polar.sh https://sandbox.polar.sh"
    )
}

/// Sets the page's CSP on the response being rendered (called from the document shell).
pub fn set_page_policy() {
    use leptos::prelude::use_context;
    if let (Some(nonce), Some(res)) = (leptos::nonce::use_nonce(), use_context::<leptos_axum::ResponseOptions>()) {
        if let Ok(v) = HeaderValue::from_str(&page_policy(&nonce.to_string())) {
            res.insert_header(http::header::CONTENT_SECURITY_POLICY, v);
        }
    }
}

pub async fn apply(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let signed_in = crate::server::auth::session::token_from_headers(&state.config, req.headers()).is_some();
    let static_file = req.uri().path().starts_with("/pkg/") || req.uri().path().starts_with("/favicon");
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    for (k, v) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "strict-origin-when-cross-origin"),
        ("cross-origin-opener-policy", "same-origin"),
    ] {
        if !h.contains_key(k) {
            h.insert(k, HeaderValue::from_static(v));
        }
    }
    if state.config.secure_cookies() {
        h.insert(
            http::header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=63072000; includeSubDomains"),
        );
    }
    let dynamic = h
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/html") || t.starts_with("application/json"));
    if signed_in && dynamic && !static_file {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_policy_allows_only_this_origin_and_the_nonce() {
        let p = page_policy("abc123");
        assert!(p.contains("script-src 'self' 'nonce-abc123' 'wasm-unsafe-eval'"));
        assert!(p.contains("frame-ancestors 'none'"));
        assert!(!p.contains("unsafe-inline"), "{p}");
    }
}
