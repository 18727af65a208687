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
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::time::Duration;
use url::Url;

/// One item of a 422's `detail`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationIssue {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub loc: Vec<Value>,
    #[serde(default)]
    pub msg: String,
}

impl ValidationIssue {
    /// The last named element of `loc` (`["body", "tax_id"]` → `tax_id`).
    pub fn field(&self) -> Option<&str> {
        self.loc.iter().rev().find_map(Value::as_str)
    }
}

/// What can go wrong talking to Polar.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolarError {
    /// 401: no token, or Polar does not accept it (`invalid_token`).
    #[error("Polar refused the access token ({code})")]
    Unauthorized { code: String },
    /// 403: the token lacks a scope (`insufficient_scope`), or the action is not permitted
    /// (`NotPermitted`, `AlreadyCanceledSubscription`, …).
    #[error("Polar refused the request: {code}: {detail}")]
    Forbidden { code: String, detail: String },
    /// 404 (`ResourceNotFound`, `InvoiceDoesNotExist`, or an unknown route).
    #[error("not found at Polar: {code}")]
    NotFound { code: String, detail: String },
    /// 409 (`SubscriptionLocked`, `OrderNotEligibleForInvoice`, …).
    #[error("conflict at Polar: {code}: {detail}")]
    Conflict { code: String, detail: String },
    /// 422 with pydantic-style issues (or a business rule named in `code`).
    #[error("Polar rejected the input: {}", .issues.iter().map(|i| format!("{}: {}", i.field().unwrap_or("body"), i.msg)).collect::<Vec<_>>().join("; "))]
    Invalid { code: Option<String>, issues: Vec<ValidationIssue> },
    /// 402 (`PaymentFailed`).
    #[error("payment failed: {detail}")]
    PaymentFailed { detail: String },
    /// 429 after retries; `retry_after` in seconds when Polar said.
    #[error("rate limited by Polar")]
    RateLimited { retry_after: Option<u64> },
    /// 5xx after retries.
    #[error("Polar is having trouble (HTTP {status})")]
    Server { status: u16 },
    /// No answer: connection refused, DNS, TLS, timeout.
    #[error("could not reach Polar: {0}")]
    Unreachable(String),
    /// An answer Tally cannot read (a contract break).
    #[error("unexpected answer from Polar: {0}")]
    Decode(String),
    #[error("unexpected HTTP {status} from Polar")]
    Other { status: u16 },
}

impl PolarError {
    /// Whether Polar could not be asked or answered (pages then show the last known state).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, PolarError::Unreachable(_) | PolarError::Server { .. } | PolarError::RateLimited { .. })
    }
}

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

/// Creating a checkout (`CheckoutProductsCreate`, the fields Tally sets).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckoutCreate {
    pub products: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_customer_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_billing_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_billing_address: Option<Address>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_tax_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_url: Option<String>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
}

/// Changing a customer (`CustomerUpdateExternalID`); `None` leaves a field as it is.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CustomerUpdate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billing_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billing_address: Option<Address>,
    /// `Some(None)` clears the tax id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tax_id: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

/// How a plan change is billed (`SubscriptionProrationBehavior`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Proration {
    /// Invoice the difference now.
    Invoice,
    /// Add the difference to the next invoice.
    Prorate,
    /// No proration; the new price applies from the next period.
    NextPeriod,
}

/// One usage event for `POST /v1/events/ingest`.
#[derive(Debug, Clone, Serialize)]
pub struct UsageEvent {
    pub name: String,
    pub external_customer_id: String,
    /// Your idempotency key: a repeat is counted in `duplicates`, not inserted.
    pub external_id: String,
    /// When it happened (Polar bills it in the period it is received, docs/polar-contract.md §2.8).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    detail: Option<Value>,
}

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

    pub async fn create_checkout(&self, body: &CheckoutCreate) -> Result<Checkout, PolarError> {
        let body = serde_json::to_value(body).expect("serializable");
        self.call(Method::POST, "/v1/checkouts/", &[], Some(&body), Idempotency::Once).await
    }

    pub async fn get_checkout(&self, id: &str) -> Result<Checkout, PolarError> {
        self.call(Method::GET, &format!("/v1/checkouts/{}", path_segment(id)), &[], None, Idempotency::Safe).await
    }

    // ---- customers ----

    /// A customer portal session for the customer with this external id.
    pub async fn create_customer_session(
        &self,
        external_customer_id: &str,
        return_url: Option<&str>,
    ) -> Result<CustomerSession, PolarError> {
        let body = json!({ "external_customer_id": external_customer_id, "return_url": return_url });
        self.call(Method::POST, "/v1/customer-sessions/", &[], Some(&body), Idempotency::Once).await
    }

    pub async fn create_customer(
        &self,
        email: &str,
        external_id: &str,
        name: Option<&str>,
    ) -> Result<Customer, PolarError> {
        let body = json!({ "email": email, "external_id": external_id, "name": name });
        self.call(Method::POST, "/v1/customers/", &[], Some(&body), Idempotency::Once).await
    }

    pub async fn get_customer(&self, external_id: &str) -> Result<Customer, PolarError> {
        self.call(
            Method::GET,
            &format!("/v1/customers/external/{}", path_segment(external_id)),
            &[],
            None,
            Idempotency::Safe,
        )
        .await
    }

    pub async fn update_customer(&self, external_id: &str, update: &CustomerUpdate) -> Result<Customer, PolarError> {
        let body = serde_json::to_value(update).expect("serializable");
        // Setting fields to given values: repeating it changes nothing more.
        self.call(
            Method::PATCH,
            &format!("/v1/customers/external/{}", path_segment(external_id)),
            &[],
            Some(&body),
            Idempotency::Safe,
        )
        .await
    }

    /// Deletes the customer (204); `anonymize` also scrubs personal data at Polar.
    pub async fn delete_customer(&self, external_id: &str, anonymize: bool) -> Result<(), PolarError> {
        self.send(
            Method::DELETE,
            &format!("/v1/customers/external/{}", path_segment(external_id)),
            &[("anonymize", anonymize.to_string())],
            None,
            Idempotency::Safe,
        )
        .await
        .map(|_| ())
    }

    pub async fn customer_state(&self, external_id: &str) -> Result<CustomerState, PolarError> {
        self.call(
            Method::GET,
            &format!("/v1/customers/external/{}/state", path_segment(external_id)),
            &[],
            None,
            Idempotency::Safe,
        )
        .await
    }

    // ---- orders and invoices ----

    /// One page of a customer's orders, newest first.
    pub async fn list_orders(
        &self,
        external_customer_id: &str,
        page: u32,
        limit: u32,
    ) -> Result<ListResource<Order>, PolarError> {
        let q = [
            ("external_customer_id", external_customer_id.to_string()),
            ("page", page.to_string()),
            ("limit", limit.to_string()),
            ("sorting", "-created_at".into()),
        ];
        self.call(Method::GET, "/v1/orders/", &q, None, Idempotency::Safe).await
    }

    /// Every order of a customer, following pagination to `max_page`.
    pub async fn all_orders(&self, external_customer_id: &str) -> Result<Vec<Order>, PolarError> {
        let mut out = vec![];
        let mut page = 1;
        loop {
            let p = self.list_orders(external_customer_id, page, 100).await?;
            let n = p.items.len();
            out.extend(p.items);
            if page as i64 >= p.pagination.max_page || n < 100 {
                return Ok(out);
            }
            page += 1;
        }
    }

    pub async fn get_order(&self, id: &str) -> Result<Order, PolarError> {
        self.call(Method::GET, &format!("/v1/orders/{}", path_segment(id)), &[], None, Idempotency::Safe).await
    }

    /// Sets an order's billing name and address (needed before its invoice is generated).
    pub async fn update_order_billing(
        &self,
        id: &str,
        billing_name: &str,
        address: &Address,
    ) -> Result<Order, PolarError> {
        let body = json!({ "billing_name": billing_name, "billing_address": address });
        self.call(Method::PATCH, &format!("/v1/orders/{}", path_segment(id)), &[], Some(&body), Idempotency::Safe).await
    }

    /// Asks Polar to generate the invoice (202); it is ready when [`Self::invoice`] stops
    /// answering 404.
    pub async fn generate_invoice(&self, order_id: &str) -> Result<(), PolarError> {
        self.send(Method::POST, &format!("/v1/orders/{}/invoice", path_segment(order_id)), &[], None, Idempotency::Safe)
            .await
            .map(|_| ())
    }

    /// The invoice's download URL; `Ok(None)` while it is not generated yet.
    pub async fn invoice(&self, order_id: &str) -> Result<Option<InvoiceUrl>, PolarError> {
        match self
            .call(Method::GET, &format!("/v1/orders/{}/invoice", path_segment(order_id)), &[], None, Idempotency::Safe)
            .await
        {
            Ok(u) => Ok(Some(u)),
            Err(PolarError::NotFound { code, .. }) if code == "InvoiceDoesNotExist" => Ok(None),
            Err(e) => Err(e),
        }
    }

    // ---- products and subscriptions ----

    pub async fn list_products(&self) -> Result<Vec<Product>, PolarError> {
        let p: ListResource<Product> = self
            .call(
                Method::GET,
                "/v1/products/",
                &[("is_archived", "false".into()), ("limit", "100".into())],
                None,
                Idempotency::Safe,
            )
            .await?;
        Ok(p.items)
    }

    pub async fn get_product(&self, id: &str) -> Result<Product, PolarError> {
        self.call(Method::GET, &format!("/v1/products/{}", path_segment(id)), &[], None, Idempotency::Safe).await
    }

    pub async fn list_subscriptions(&self, external_customer_id: &str) -> Result<Vec<Subscription>, PolarError> {
        let q = [("external_customer_id", external_customer_id.to_string()), ("limit", "100".into())];
        let p: ListResource<Subscription> =
            self.call(Method::GET, "/v1/subscriptions/", &q, None, Idempotency::Safe).await?;
        Ok(p.items)
    }

    /// The orders a checkout produced.
    pub async fn orders_for_checkout(&self, checkout_id: &str) -> Result<Vec<Order>, PolarError> {
        let q = [("checkout_id", checkout_id.to_string()), ("limit", "10".into())];
        let p: ListResource<Order> = self.call(Method::GET, "/v1/orders/", &q, None, Idempotency::Safe).await?;
        Ok(p.items)
    }

    pub async fn get_subscription(&self, id: &str) -> Result<Subscription, PolarError> {
        self.call(Method::GET, &format!("/v1/subscriptions/{}", path_segment(id)), &[], None, Idempotency::Safe).await
    }

    async fn update_subscription(&self, id: &str, body: Value, idem: Idempotency) -> Result<Subscription, PolarError> {
        self.call(Method::PATCH, &format!("/v1/subscriptions/{}", path_segment(id)), &[], Some(&body), idem).await
    }

    /// Cancel at the end of the period (`true`) or undo that (`false`).
    pub async fn set_cancel_at_period_end(&self, id: &str, cancel: bool) -> Result<Subscription, PolarError> {
        self.update_subscription(id, json!({ "cancel_at_period_end": cancel }), Idempotency::Safe).await
    }

    /// Switches the subscription's product; may charge, so it is sent once.
    pub async fn change_product(
        &self,
        id: &str,
        product_id: &str,
        proration: Proration,
    ) -> Result<Subscription, PolarError> {
        self.update_subscription(
            id,
            json!({ "product_id": product_id, "proration_behavior": proration }),
            Idempotency::Once,
        )
        .await
    }

    /// Ends the subscription now.
    pub async fn revoke_subscription(&self, id: &str) -> Result<Subscription, PolarError> {
        self.call(Method::DELETE, &format!("/v1/subscriptions/{}", path_segment(id)), &[], None, Idempotency::Safe)
            .await
    }

    // ---- usage ----

    /// Ingests usage events; safe to repeat because each carries its `external_id`.
    pub async fn ingest_events(&self, events: &[UsageEvent]) -> Result<IngestResult, PolarError> {
        let body = json!({ "events": events });
        self.call(Method::POST, "/v1/events/ingest", &[], Some(&body), Idempotency::Safe).await
    }

    pub async fn list_customer_meters(&self, external_customer_id: &str) -> Result<Vec<CustomerMeter>, PolarError> {
        let p: ListResource<CustomerMeter> = self
            .call(
                Method::GET,
                "/v1/customer-meters/",
                &[("external_customer_id", external_customer_id.to_string())],
                None,
                Idempotency::Safe,
            )
            .await?;
        Ok(p.items)
    }
}

/// Reads Polar's error bodies (docs/polar-contract.md §1.3).
fn error_from(status: StatusCode, retry_after: Option<u64>, body: &[u8]) -> PolarError {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let raw: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let code = parsed.as_ref().and_then(|b| b.error.clone()).unwrap_or_default();
    let detail = match parsed.as_ref().and_then(|b| b.detail.clone()) {
        Some(Value::String(s)) => s,
        _ => raw.get("error_description").and_then(Value::as_str).unwrap_or_default().to_string(),
    };
    match status.as_u16() {
        401 => PolarError::Unauthorized { code: if code.is_empty() { "Unauthorized".into() } else { code } },
        402 => PolarError::PaymentFailed { detail },
        403 => PolarError::Forbidden { code, detail },
        404 => PolarError::NotFound { code: if code.is_empty() { "NotFound".into() } else { code }, detail },
        409 => PolarError::Conflict { code, detail },
        422 => {
            let issues = match raw.get("detail") {
                Some(Value::Array(items)) => {
                    items.iter().filter_map(|i| serde_json::from_value(i.clone()).ok()).collect()
                }
                Some(Value::String(msg)) => {
                    vec![ValidationIssue { kind: "value_error".into(), loc: vec![json!("body")], msg: msg.clone() }]
                }
                _ => vec![],
            };
            PolarError::Invalid { code: Some(code).filter(|c| !c.is_empty()), issues }
        }
        429 => PolarError::RateLimited { retry_after },
        s if s >= 500 => PolarError::Server { status: s },
        s => PolarError::Other { status: s },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polar_error_bodies_become_typed_errors() {
        let e = error_from(StatusCode::UNAUTHORIZED, None, br#"{"error":"invalid_token","error_description":"The access token provided is expired, revoked, malformed, or invalid for other reasons."}"#);
        assert_eq!(e, PolarError::Unauthorized { code: "invalid_token".into() });
        let e = error_from(StatusCode::FORBIDDEN, None, br#"{"error":"insufficient_scope","error_description":"The request requires higher privileges than provided by the access token."}"#);
        assert!(
            matches!(e, PolarError::Forbidden { ref code, ref detail } if code == "insufficient_scope" && detail.contains("higher privileges"))
        );
        let e = error_from(StatusCode::NOT_FOUND, None, br#"{"error":"ResourceNotFound","detail":"Not found"}"#);
        assert_eq!(e, PolarError::NotFound { code: "ResourceNotFound".into(), detail: "Not found".into() });
        let e = error_from(StatusCode::NOT_FOUND, None, br#"{"detail":"Not Found"}"#);
        assert!(matches!(e, PolarError::NotFound { ref code, .. } if code == "NotFound"));
        let e = error_from(
            StatusCode::CONFLICT,
            None,
            br#"{"error":"SubscriptionLocked","detail":"Subscription is pending an update."}"#,
        );
        assert!(matches!(e, PolarError::Conflict { ref code, .. } if code == "SubscriptionLocked"));
        let e = error_from(
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
            br#"{"error":"PolarRequestValidationError","detail":[{"type":"value_error","loc":["body","tax_id"],"msg":"Invalid tax ID.","input":"x"}]}"#,
        );
        match &e {
            PolarError::Invalid { issues, .. } => {
                assert_eq!(issues[0].field(), Some("tax_id"));
                assert_eq!(issues[0].msg, "Invalid tax ID.");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(e.to_string(), "Polar rejected the input: tax_id: Invalid tax ID.");
        assert_eq!(
            error_from(StatusCode::TOO_MANY_REQUESTS, Some(7), b""),
            PolarError::RateLimited { retry_after: Some(7) }
        );
        assert_eq!(error_from(StatusCode::BAD_GATEWAY, None, b"<html>"), PolarError::Server { status: 502 });
        assert!(PolarError::Server { status: 502 }.is_unavailable());
        assert!(!PolarError::NotFound { code: "x".into(), detail: String::new() }.is_unavailable());
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(path_segment("a b/c"), "a%20b%2Fc");
        assert_eq!(path_segment("3f2c0a9e-1111-4b5e-9c1d-5f0e6a7b8c9d"), "3f2c0a9e-1111-4b5e-9c1d-5f0e6a7b8c9d");
    }
}
