//! Cross-site request protection for everything that changes state.
//!
//! Session cookies are SameSite=Lax, which already keeps them off cross-site POSTs in modern
//! browsers; this middleware is the second lock. A non-GET request is refused with 403 before
//! any handler runs when its `Origin` is not `APP_URL`'s origin (scheme, host and port), or,
//! without `Origin`, when `Sec-Fetch-Site` says another site sent it. `Host` plays no part: a
//! reverse proxy may rewrite it (nginx's default), HTTP/2 replaces it, and an attacker chooses
//! it. Requests with neither header come from non-browser clients, which carry no ambient
//! cookies to abuse. The webhook receiver and the metered API authenticate by signature and API
//! key, not cookies, so they are exempt, as is the stand-in (another site with its own rules).

use crate::server::state::AppState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{header, Method, StatusCode};

/// Paths that do not use cookie authentication.
fn exempt(path: &str) -> bool {
    path.starts_with("/api/webhooks/") || path.starts_with("/api/v1/") || path.starts_with("/polar/")
}

pub async fn protect(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        || exempt(req.uri().path())
        || req.uri().path() == state.config.polar.webhook_path
    {
        return next.run(req).await;
    }
    if is_cross_site(req.headers(), &state.config.app_origin()) {
        tracing::warn!(path = %req.uri().path(), "cross-site request refused");
        return (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            Body::from("Cross-site request refused."),
        )
            .into_response();
    }
    next.run(req).await
}

/// Whether the request was sent by a page of another origin than `app_origin`
/// (`https://billing.example.com`, as `url::Url::origin` serializes it).
pub fn is_cross_site(headers: &http::HeaderMap, app_origin: &str) -> bool {
    if let Some(origin) = headers.get(header::ORIGIN) {
        // Privacy-sensitive contexts send the literal "null"; a value that is not text is no origin of ours.
        let Ok(origin) = origin.to_str() else { return true };
        return !origin.trim_end_matches('/').eq_ignore_ascii_case(app_origin);
    }
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some("same-origin") | Some("none") | None => false,
        Some(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    const APP: &str = "https://app.example.com";

    #[test]
    fn same_origin_posts_pass_whatever_the_host_header_says() {
        assert!(
            !is_cross_site(&headers(&[("host", "127.0.0.1:3000"), ("origin", "https://app.example.com")]), APP),
            "a proxy rewrote Host"
        );
        assert!(!is_cross_site(&headers(&[("origin", "https://APP.example.com")]), APP));
        assert!(!is_cross_site(&headers(&[("sec-fetch-site", "same-origin")]), APP));
        assert!(!is_cross_site(&headers(&[]), APP));
        assert!(!is_cross_site(&headers(&[("origin", "http://127.0.0.1:3000")]), "http://127.0.0.1:3000"));
    }

    #[test]
    fn other_origins_are_refused_scheme_and_port_included() {
        for o in [
            "https://evil.example",
            "null",
            "http://app.example.com",
            "https://app.example.com:8443",
            "https://app.example.com.evil.example",
        ] {
            assert!(is_cross_site(&headers(&[("host", "app.example.com"), ("origin", o)]), APP), "{o}");
        }
        assert!(
            is_cross_site(&headers(&[("host", "evil.example"), ("origin", "https://evil.example")]), APP),
            "a forged Host does not help"
        );
        assert!(is_cross_site(&headers(&[("sec-fetch-site", "cross-site")]), APP));
        assert!(is_cross_site(&headers(&[("sec-fetch-site", "same-site")]), APP));
    }
}
