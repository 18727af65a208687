//! A typed client for Polar's API (version 2026-04): reqwest with rustls, a bearer token,
//! timeouts, retries only where they are safe, and Polar's error bodies turned into
//! [`PolarError`] values a caller can act on.
//!
//! Retries: GET, DELETE and PUT-like idempotent calls are retried on 429 (after `retry-after`),
//! 5xx and connection failures, with doubling backoff. POSTs and PATCHes that create or change
//! something are sent once, except where Polar makes them safe to repeat (event ingestion
//! with `external_id`, invoice generation, and a 429, which Polar answers before doing
//! anything).

use super::models::*;
use crate::server::config::{PolarConfig, Secret};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::time::Duration;
use url::Url;

mod endpoints;
mod errors;
mod requests;

use errors::error_from;
pub use errors::{PolarError, ValidationIssue};
pub use requests::*;

/// Whether a request may be sent again after a failure with no answer or a 5xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Idempotency {
    Safe,
    Once,
}

#[derive(Clone)]
pub struct PolarClient {
    http: reqwest::Client,
    base: Url,
    token: Secret,
    max_attempts: u32,
    backoff: Duration,
    /// Shared by every clone: one instance, one breaker.
    breaker: super::breaker::Breaker,
    /// The most one call may take, retries included (`None`: the per-attempt timeouts only).
    deadline: Option<Duration>,
}

impl std::fmt::Debug for PolarClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolarClient").field("base", &self.base.as_str()).finish_non_exhaustive()
    }
}

/// Query pairs for list endpoints.
pub type Query = Vec<(&'static str, String)>;

fn path_segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20")
}

impl PolarClient {
    /// A client for `config` (base URL and token); `None` when no token is configured.
    pub fn from_config(config: &PolarConfig) -> Option<PolarClient> {
        Some(PolarClient::new(config.api_url.clone(), config.access_token.clone()?))
    }

    pub fn new(base: Url, token: Secret) -> PolarClient {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .user_agent(concat!("tally/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("HTTP client");
        PolarClient {
            http,
            base,
            token,
            max_attempts: 3,
            backoff: Duration::from_millis(250),
            breaker: Default::default(),
            deadline: None,
        }
    }

    /// The same client (same connections and breaker) whose calls give up after `deadline`
    /// in all, retries included: for what a page shows, which must answer in seconds with the
    /// last known state rather than wait out a Polar outage.
    pub fn with_deadline(&self, deadline: Duration) -> Self {
        let mut c = self.clone();
        c.deadline = Some(deadline);
        c
    }

    /// The same client with its own breaker of these settings (tests).
    pub fn with_breaker(mut self, threshold: u32, open_for: Duration) -> Self {
        self.breaker = super::breaker::Breaker::new(threshold, open_for);
        self
    }

    pub fn breaker(&self) -> &super::breaker::Breaker {
        &self.breaker
    }

    /// Same client with other retry settings (tests use short waits).
    pub fn with_retries(mut self, max_attempts: u32, backoff: Duration) -> Self {
        self.max_attempts = max_attempts.max(1);
        self.backoff = backoff;
        self
    }

    fn url(&self, path: &str) -> Url {
        let base = self.base.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}{path}")).expect("valid Polar URL")
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        idem: Idempotency,
    ) -> Result<(StatusCode, axum::body::Bytes), PolarError> {
        use super::breaker::Permit;
        if self.breaker.permit(std::time::Instant::now()) == Permit::Refused {
            return Err(PolarError::Unreachable(
                "circuit open after repeated failures; not calling Polar for a while".into(),
            ));
        }
        // Dropped before it reports (the caller went away), the call counts as a failure.
        let outcome = self.breaker.watch();
        let call = self.send_with_retries(method, path, query, body, idem);
        let result = match self.deadline {
            Some(d) => {
                tokio::time::timeout(d, call).await.unwrap_or_else(|_| Err(PolarError::Unreachable("timed out".into())))
            }
            None => call.await,
        };
        outcome.report(!matches!(&result, Err(e) if e.is_unavailable()));
        result
    }

    async fn send_with_retries(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        idem: Idempotency,
    ) -> Result<(StatusCode, axum::body::Bytes), PolarError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self
                .http
                .request(method.clone(), self.url(path))
                .bearer_auth(self.token.expose())
                .header("accept", "application/json");
            if !query.is_empty() {
                req = req.query(query);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let last = attempt >= self.max_attempts;
            match req.send().await {
                Err(e) => {
                    // A request that may have reached Polar is not repeated unless it is safe.
                    let retry = !last && (idem == Idempotency::Safe || e.is_connect());
                    if retry {
                        tokio::time::sleep(self.backoff * 2u32.pow(attempt - 1)).await;
                        continue;
                    }
                    return Err(PolarError::Unreachable(if e.is_timeout() {
                        "timed out".into()
                    } else {
                        e.without_url().to_string()
                    }));
                }
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok());
                    if status == StatusCode::TOO_MANY_REQUESTS && !last {
                        // Polar refuses before doing anything, so any request may be repeated.
                        let wait = retry_after
                            .map(Duration::from_secs)
                            .unwrap_or(self.backoff * 2u32.pow(attempt - 1))
                            .min(Duration::from_secs(30));
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    if status.is_server_error() && idem == Idempotency::Safe && !last {
                        tokio::time::sleep(self.backoff * 2u32.pow(attempt - 1)).await;
                        continue;
                    }
                    let bytes = resp.bytes().await.map_err(|e| PolarError::Unreachable(e.without_url().to_string()))?;
                    if status.is_success() {
                        return Ok((status, bytes));
                    }
                    return Err(error_from(status, retry_after, &bytes));
                }
            }
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        idem: Idempotency,
    ) -> Result<T, PolarError> {
        let (_, bytes) = self.send(method, path, query, body, idem).await?;
        serde_json::from_slice(&bytes).map_err(|e| PolarError::Decode(format!("{path}: {e}")))
    }

    // ---- checkouts ----
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(path_segment("a b/c"), "a%20b%2Fc");
        assert_eq!(path_segment("3f2c0a9e-1111-4b5e-9c1d-5f0e6a7b8c9d"), "3f2c0a9e-1111-4b5e-9c1d-5f0e6a7b8c9d");
    }
}
