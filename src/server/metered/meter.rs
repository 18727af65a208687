//! What every metered endpoint needs, as one extractor and one error type, so that an endpoint
//! is its own work plus a few lines:
//!
//! ```ignore
//! async fn word_count(call: MeteredCall) -> Result<Response, ApiError> {
//!     let text = std::str::from_utf8(call.body()).map_err(|_| ApiError::invalid("text", "Send UTF-8 text."))?;
//!     let words = text.split_whitespace().count();
//!     call.charge(1, "text.words", json!({ "bytes": text.len() }), json!({ "words": words })).await
//! }
//! // routes: .route("/api/v1/text/words", post(word_count).layer(DefaultBodyLimit::max(1 << 20)))
//! ```
//!
//! [`MeteredCall`] (an axum extractor) authenticates the `Authorization: Bearer tly_…` key
//! (401), applies the key's rate limit and the account's in-flight limit (429 with
//! `Retry-After`, the slot held until the answer), validates `Idempotency-Key` (422) and,
//! when the key was used before, answers for the endpoint: the first answer replayed exactly
//! (`Idempotent-Replayed: true`) for the same request, 422 for another one. The request is
//! bound to the key by a hash of its method, path and body.
//!
//! [`MeteredCall::charge`] spends through the ledger and, for a keyed request, records the
//! answer in the same transaction: 200 with the endpoint's JSON, `credits_spent` and
//! `X-Credits-Remaining`; 402 `insufficient_credits` or `spend_cap_reached` with nothing
//! spent. Every refusal is an [`ApiError`]: `{"error": {"code", "message", …details}}`.

use super::idempotency::{self, Answer, Prior, Record};
use super::spender::spent_answer;
use crate::server::ledger::{self, batch::Spend, SpendOutcome};
use crate::server::state::AppState;
use crate::server::{api_keys, billing, util};
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::time::Instant;
use uuid::Uuid;

/// A refusal of a metered endpoint, in the API's error shape.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Value,
    retry_after: Option<u64>,
    /// A recorded answer to send as it is (an idempotent replay).
    replay: Option<Answer>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>, details: Value) -> ApiError {
        ApiError { status, code, message: message.into(), details, retry_after: None, replay: None }
    }

    /// 422 `invalid_input` about `field`.
    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", message, json!({ "field": field }))
    }

    /// 429 with `Retry-After: wait`.
    pub fn too_many(code: &'static str, message: impl Into<String>, wait: u64) -> ApiError {
        let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message, json!({ "retry_after_seconds": wait }));
        e.retry_after = Some(wait);
        e
    }

    /// 500 with a reference; the cause is logged, never shown.
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        let reference = util::short_reference();
        tracing::error!(%reference, error = %cause, "metered API failure");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("Something went wrong on our side (reference {reference})."),
            json!({}),
        )
    }

    fn reused_key() -> ApiError {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "This Idempotency-Key was already used for a different request. Use a new key for a new request; nothing was spent.",
            json!({ "field": "Idempotency-Key" }),
        )
    }

    fn replay(answer: Answer) -> ApiError {
        let mut e = ApiError::new(StatusCode::OK, "replayed", "", json!({}));
        e.replay = Some(answer);
        e
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> ApiError {
        ApiError::internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(answer) = self.replay {
            let mut res = answer.into_response();
            res.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
            return res;
        }
        let mut body = json!({ "error": { "code": self.code, "message": self.message } });
        if let (Some(obj), Value::Object(more)) = (body["error"].as_object_mut(), self.details) {
            obj.extend(more);
        }
        let mut res = (self.status, Json(body)).into_response();
        if let Some(wait) = self.retry_after {
            res.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(wait));
        }
        res
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut res = (StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK), self.body).into_response();
        for (k, v) in &self.headers {
            if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
                res.headers_mut().insert(k, v);
            }
        }
        res
    }
}

/// An authenticated, admitted metered request (see the module's documentation).
pub struct MeteredCall {
    state: AppState,
    key_id: Uuid,
    user_id: Uuid,
    /// The client's `Idempotency-Key`, if it sent one, and the request's hash bound to it.
    client_key: Option<String>,
    hash: Vec<u8>,
    body: Bytes,
    /// The account's in-flight slot, released when the call is dropped (after the answer).
    _slot: super::limits::Slot,
}

impl FromRequest<AppState> for MeteredCall {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<MeteredCall, ApiError> {
        let (parts, body) = req.into_parts();
        let header = |name: &str| parts.headers.get(name).map(|v| v.to_str().ok());
        let Some(key) = header("authorization").flatten().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing_api_key",
                "Send your API key as `Authorization: Bearer tly_…`.",
                json!({}),
            ));
        };
        let Some((key_id, user_id)) = api_keys::authenticate(&state.pool, key).await.map_err(ApiError::internal)?
        else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                "This API key is not valid or was revoked.",
                json!({}),
            ));
        };
        if let Err(wait) = state.rate_limiter.check(key_id, Instant::now()) {
            return Err(ApiError::too_many("rate_limited", "Too many requests for this API key; slow down.", wait));
        }
        // Held until this call has answered: one account cannot take every database connection.
        let Some(slot) = state.api_in_flight.enter(user_id) else {
            return Err(ApiError::too_many(
                "too_many_in_flight",
                format!(
                    "This account already has {} calls in progress; wait for them to finish.",
                    state.api_in_flight.max()
                ),
                1,
            ));
        };
        let client_key = match header("idempotency-key") {
            None => None,
            Some(k) => match k.filter(|k| crate::domain::text_stats::valid_idempotency_key(k)) {
                Some(k) => Some(k.to_string()),
                None => return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_idempotency_key",
                    "Idempotency-Key must be 1 to 255 printable ASCII characters, without leading or trailing spaces.",
                    json!({ "field": "Idempotency-Key" }),
                )),
            },
        };
        // The key is bound to the request: its method, path and body.
        let (method, path) = (parts.method.clone(), parts.uri.path().to_string());
        let body = Bytes::from_request(Request::from_parts(parts, body), state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    e.status(),
                    "body_too_large",
                    "The request body is too large; nothing was spent.",
                    json!({}),
                )
            } else {
                ApiError::new(e.status(), "unreadable_body", e.body_text(), json!({}))
            }
        })?;
        let hash = idempotency::request_hash(method.as_str(), &path, &body);
        let call = MeteredCall { state: state.clone(), key_id, user_id, client_key, hash, body, _slot: slot };
        if let Some(k) = &call.client_key {
            match call.lookup(k).await? {
                Prior::Replay(answer) => return Err(ApiError::replay(answer)),
                Prior::Mismatch => return Err(ApiError::reused_key()),
                Prior::Unused => {}
            }
        }
        Ok(call)
    }
}

impl MeteredCall {
    /// The request's body, as sent.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The account the API key belongs to.
    pub fn user(&self) -> Uuid {
        self.user_id
    }

    /// Refuses unless the account holds one of `benefits` (Polar's Customer State, fail
    /// closed): 403 `plan_required` with `refusal` and `details`, 503 `billing_unavailable`
    /// when Polar cannot confirm the plan, 429 when the account's Polar reads are spent.
    pub async fn require_any_benefit(&self, benefits: &[&str], refusal: &str, details: Value) -> Result<(), ApiError> {
        match billing::require_any_benefit(&self.state.billing, self.user_id, benefits).await {
            Ok(()) => Ok(()),
            Err(billing::Error::NotEntitled(_)) => {
                Err(ApiError::new(StatusCode::FORBIDDEN, "plan_required", refusal, details))
            }
            Err(
                e @ (billing::Error::CannotConfirm | billing::Error::Unavailable(_) | billing::Error::NotConfigured),
            ) => {
                let mut e = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "billing_unavailable",
                    crate::error::AppError::from(e).to_string(),
                    json!({}),
                );
                e.retry_after = Some(30);
                Err(e)
            }
            Err(billing::Error::RateLimited(wait)) => Err(ApiError::too_many(
                "rate_limited",
                "Too many billing checks for this account right now; try again shortly.",
                wait,
            )),
            Err(e) => Err(ApiError::internal(crate::server::errors::chain(&e))),
        }
    }

    /// Spends `cost` credits for `operation` (its `details` kept in the ledger entry's
    /// metadata) and answers 200 with the JSON object `answer` plus `credits_spent`, and
    /// `X-Credits-Remaining`; for a keyed request the answer is recorded with the spend, in one
    /// transaction, and replayed for a retry. 402 when the credits (or the overage cap) do not
    /// cover it: nothing spent. The spend goes through the app's [`super::spender::Spender`]: with the calls
    /// in flight at the same moment (group commit) unless `SPEND_BATCH=0`; answered only once
    /// it is committed.
    pub async fn charge(
        &self,
        cost: i64,
        operation: &str,
        details: Value,
        answer: Value,
    ) -> Result<Response, ApiError> {
        let key = match &self.client_key {
            Some(k) => idempotency::ledger_key(self.key_id, k),
            None => format!("api:{}:{}", self.key_id, util::random_token(16)),
        };
        let mut metadata = json!({ "operation": operation, "api_key_id": self.key_id });
        if let (Some(obj), Value::Object(more)) = (metadata.as_object_mut(), details) {
            obj.extend(more);
        }
        let spend = Spend { user_id: self.user_id, cost, key, metadata };
        let record = self.client_key.as_ref().map(|k| Record {
            api_key_id: self.key_id,
            client_key: k.clone(),
            hash: self.hash.clone(),
            answer: answer.clone(),
        });
        let outcome = self.state.spender.spend(spend, record).await.map_err(ApiError::internal)?;
        match outcome {
            SpendOutcome::Spent { spent, balance } => Ok(spent_answer(&answer, spent, balance).into_response()),
            refused => Err(self.refusal(refused, cost).await),
        }
    }

    /// Why a spend did not happen, as the API says it.
    async fn refusal(&self, outcome: SpendOutcome, cost: i64) -> ApiError {
        match outcome {
            SpendOutcome::Spent { .. } => ApiError::internal("a completed spend is not a refusal"),
            SpendOutcome::Insufficient { available } => ApiError::new(
                StatusCode::PAYMENT_REQUIRED,
                "insufficient_credits",
                format!(
                    "This request costs {cost} credit{}; you have {available}. Buy a credit pack or upgrade your plan.",
                    if cost == 1 { "" } else { "s" }
                ),
                json!({ "cost": cost, "available": available }),
            ),
            SpendOutcome::OverCap { available } => self.over_cap(cost, available).await,
            // The same key committed meanwhile (a concurrent retry): its answer, or a refusal.
            SpendOutcome::Duplicate { .. } => match &self.client_key {
                Some(k) => match self.lookup(k).await {
                    Ok(Prior::Replay(answer)) => ApiError::replay(answer),
                    Ok(_) => ApiError::reused_key(),
                    Err(e) => e,
                },
                None => ApiError::internal("a random spend key was already taken"),
            },
        }
    }

    async fn lookup(&self, client_key: &str) -> Result<Prior, ApiError> {
        let mut conn = self.state.pool.acquire().await?;
        Ok(idempotency::lookup(&mut conn, self.key_id, client_key, &self.hash).await?)
    }

    /// 402 naming the overage cap that stopped the call (the lower of the plan's and the user's).
    async fn over_cap(&self, cost: i64, available: i64) -> ApiError {
        let period = match ledger::period::current(&self.state.pool, self.user_id, chrono::Utc::now()).await {
            Ok(p) => p,
            Err(e) => return ApiError::internal(e),
        };
        let (cap, used) = period
            .as_ref()
            .and_then(|p| {
                let terms = p.terms()?;
                let units = terms.max_units(p.user_cap_cents)?;
                Some((units * terms.unit_cents, terms.charge_cents(p.overage)))
            })
            .unwrap_or((0, 0));
        let usd = |c: i64| crate::domain::money::format_cents_exact(c, "usd");
        ApiError::new(
            StatusCode::PAYMENT_REQUIRED,
            "spend_cap_reached",
            format!(
                "This request costs {cost} credits and you have {available}; the rest would be overage past your cap of {} this period ({} used). Raise the cap in your billing settings, or buy a credit pack.",
                usd(cap),
                usd(used)
            ),
            json!({ "cost": cost, "available": available, "cap_cents": cap, "overage_cents": used }),
        )
    }
}
