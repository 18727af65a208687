//! Cross-site request protection for everything that changes state.
//!
//! Session cookies are SameSite=Lax, which already keeps them off cross-site POSTs in modern
//! browsers; this middleware is the second lock. A non-GET request whose `Origin` (or, when
//! absent, `Sec-Fetch-Site`) says it came from another site is refused with 403 before any
//! handler runs. Requests with neither header come from non-browser clients, which carry no
//! ambient cookies to abuse. The webhook receiver and the metered API authenticate by
//! signature and API key, not cookies, so they are exempt.

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{header, Method, StatusCode};

/// Paths that do not use cookie authentication.
fn exempt(path: &str) -> bool {
    path.starts_with("/api/webhooks/") || path.starts_with("/api/v1/") || path.starts_with("/polar/")
}

pub async fn protect(req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) || exempt(req.uri().path()) {
        return next.run(req).await;
    }
    if is_cross_site(req.headers()) {
        tracing::warn!(path = %req.uri().path(), "cross-site request refused");
        return (StatusCode::FORBIDDEN, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], Body::from("Cross-site request refused."))
            .into_response();
    }
    next.run(req).await
}

/// Whether the request was sent by a page of another site.
pub fn is_cross_site(headers: &http::HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        // Privacy-sensitive contexts send the literal "null".
        if origin == "null" {
            return true;
        }
        let authority = origin.split_once("://").map(|(_, rest)| rest).unwrap_or(origin);
        return Some(authority) != host;
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

    #[test]
    fn same_origin_posts_pass() {
        assert!(!is_cross_site(&headers(&[("host", "127.0.0.1:3000"), ("origin", "http://127.0.0.1:3000")])));
        assert!(!is_cross_site(&headers(&[("host", "app.example.com"), ("origin", "https://app.example.com")])));
        assert!(!is_cross_site(&headers(&[("host", "app.example.com"), ("sec-fetch-site", "same-origin")])));
        assert!(!is_cross_site(&headers(&[("host", "app.example.com")])));
    }

    #[test]
    fn cross_site_posts_are_refused() {
        assert!(is_cross_site(&headers(&[("host", "app.example.com"), ("origin", "https://evil.example")])));
        assert!(is_cross_site(&headers(&[("host", "app.example.com"), ("origin", "null")])));
        assert!(is_cross_site(&headers(&[("host", "app.example.com"), ("sec-fetch-site", "cross-site")])));
        assert!(is_cross_site(&headers(&[("host", "app.example.com:443"), ("origin", "https://app.example.com.evil.example:443")])));
    }
}
