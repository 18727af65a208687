//! The metered API: `POST /api/v1/text/stats` counts characters, words, lines and sentences
//! of a text and spends credits for it, one per started 1,000 characters.
//!
//! - `Authorization: Bearer tly_…` (a key from /settings/billing); 401 without a live key.
//! - Body `{"text": "…"}` (at most 100,000 characters); malformed JSON 400, invalid input 422,
//!   and in both cases nothing is spent.
//! - `Idempotency-Key: …` (optional): a retry with the same key returns the same result and
//!   spends nothing again.
//! - Texts over `FREE_MAX_CHARS` (10,000) characters need a paid plan's benefit (`pro` or
//!   `business`, see `domain::plans::PAID_BENEFITS`): 403 `plan_required` without it, 503
//!   `billing_unavailable` when Polar cannot confirm the plan (fail closed); nothing is spent.
//! - Not enough credits: 402 with what is available and what it would cost.
//! - More than the per-key limit per minute: 429 with `Retry-After`.
//! - Success: 200 and `X-Credits-Remaining`.
//!
//! Every error body is `{"error": {"code": "…", "message": "…"}}` plus details.

use crate::domain::plans::{FREE_MAX_CHARS, PAID_BENEFITS};
use crate::error::AppError;
use crate::server::ledger::{self, SpendOutcome};
use crate::server::state::AppState;
use crate::server::{api_keys, billing, util};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

pub const MAX_CHARS: usize = 100_000;

#[derive(Debug, Deserialize)]
struct StatsRequest {
    text: Option<Value>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct TextStats {
    pub characters: usize,
    pub words: usize,
    pub lines: usize,
    pub sentences: usize,
}

/// The operation being sold: plain text statistics.
pub fn text_stats(text: &str) -> TextStats {
    TextStats {
        characters: text.chars().count(),
        words: text.split_whitespace().count(),
        lines: if text.is_empty() { 0 } else { text.lines().count() },
        sentences: text
            .split(['.', '!', '?'])
            .filter(|s| s.chars().any(|c| c.is_alphanumeric()))
            .count(),
    }
}

/// One credit per started 1,000 characters, at least one.
pub fn cost_of(characters: usize) -> i64 {
    characters.div_ceil(1000).max(1) as i64
}

fn error(status: StatusCode, code: &str, message: &str, extra: Value) -> Response {
    let mut body = json!({ "error": { "code": code, "message": message } });
    if let (Some(obj), Value::Object(more)) = (body["error"].as_object_mut(), extra) {
        obj.extend(more);
    }
    (status, Json(body)).into_response()
}

/// A fixed-window limit per API key, per instance (so N instances allow up to N× the limit).
#[derive(Clone)]
pub struct RateLimiter {
    per_minute: u32,
    windows: Arc<Mutex<HashMap<Uuid, (Instant, u32)>>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        RateLimiter { per_minute, windows: Arc::new(Mutex::new(HashMap::new())) }
    }

    /// `Ok` to proceed, or `Err(seconds to wait)`.
    pub fn check(&self, key: Uuid, now: Instant) -> Result<(), u64> {
        let mut w = self.windows.lock().expect("rate limiter lock");
        if w.len() > 100_000 {
            w.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(60));
        }
        let entry = w.entry(key).or_insert((now, 0));
        if now.duration_since(entry.0) >= Duration::from_secs(60) {
            *entry = (now, 0);
        }
        if entry.1 >= self.per_minute {
            let wait = 60u64.saturating_sub(now.duration_since(entry.0).as_secs()).max(1);
            return Err(wait);
        }
        entry.1 += 1;
        Ok(())
    }
}

pub async fn text_stats_handler(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(key) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
    else {
        return error(StatusCode::UNAUTHORIZED, "missing_api_key", "Send your API key as `Authorization: Bearer tly_…`.", json!({}));
    };
    let (key_id, user_id) = match api_keys::authenticate(&state.pool, key).await {
        Ok(Some(ids)) => ids,
        Ok(None) => return error(StatusCode::UNAUTHORIZED, "invalid_api_key", "This API key is not valid or was revoked.", json!({})),
        Err(e) => return internal(e),
    };
    if let Err(wait) = state.rate_limiter.check(key_id, Instant::now()) {
        let mut res = error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "Too many requests for this API key; slow down.", json!({ "retry_after_seconds": wait }));
        res.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(wait));
        return res;
    }
    let req: StatsRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, "malformed_json", &format!("The body is not valid JSON: {e}"), json!({})),
    };
    let text = match req.text {
        Some(Value::String(s)) => s,
        Some(_) => return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", "`text` must be a string.", json!({ "field": "text" })),
        None => return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", "`text` is required.", json!({ "field": "text" })),
    };
    let stats = text_stats(&text);
    if stats.characters > MAX_CHARS {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", &format!("`text` may have at most {MAX_CHARS} characters."), json!({ "field": "text" }));
    }
    // Longer texts are a paid feature: the entitlement guard decides (fail closed when Polar
    // cannot confirm the plan), and nothing is spent when it refuses.
    if stats.characters > FREE_MAX_CHARS {
        match billing::require_any_benefit(&state, user_id, &PAID_BENEFITS).await {
            Ok(()) => {}
            Err(AppError::NotEntitled { .. }) => {
                return error(
                    StatusCode::FORBIDDEN,
                    "plan_required",
                    &format!("Texts over {FREE_MAX_CHARS} characters need the Pro or Business plan."),
                    json!({ "field": "text", "max_characters": FREE_MAX_CHARS }),
                )
            }
            Err(AppError::Unavailable { message }) => {
                let mut res = error(StatusCode::SERVICE_UNAVAILABLE, "billing_unavailable", &message, json!({}));
                res.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(30));
                return res;
            }
            Err(e) => return internal(e),
        }
    }
    let cost = cost_of(stats.characters);
    let idem = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).filter(|k| !k.is_empty() && k.len() <= 200);
    let spend_key = match idem {
        Some(k) => format!("api:{key_id}:{k}"),
        None => format!("api:{key_id}:{}", util::random_token(16)),
    };
    let metadata = json!({ "operation": "text.stats", "endpoint": "/api/v1/text/stats", "api_key_id": key_id, "characters": stats.characters });
    let outcome = match state.pool.acquire().await {
        Ok(mut conn) => ledger::spend(&mut conn, user_id, cost, &spend_key, &metadata, chrono::Utc::now()).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(SpendOutcome::Spent { spent, balance }) | Ok(SpendOutcome::Duplicate { spent, balance }) => {
            let mut res = Json(json!({
                "characters": stats.characters,
                "words": stats.words,
                "lines": stats.lines,
                "sentences": stats.sentences,
                "credits_spent": spent,
            }))
            .into_response();
            res.headers_mut().insert("x-credits-remaining", HeaderValue::from(balance));
            res
        }
        Ok(SpendOutcome::Insufficient { available }) => error(
            StatusCode::PAYMENT_REQUIRED,
            "insufficient_credits",
            &format!("This request costs {cost} credit{}; you have {available}. Buy a credit pack or upgrade your plan.", if cost == 1 { "" } else { "s" }),
            json!({ "cost": cost, "available": available }),
        ),
        Err(e) => internal(e),
    }
}

fn internal(e: impl std::fmt::Display) -> Response {
    let reference = util::short_reference();
    tracing::error!(%reference, error = %e, "metered API failure");
    error(StatusCode::INTERNAL_SERVER_ERROR, "internal", &format!("Something went wrong on our side (reference {reference})."), json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_text() {
        assert_eq!(text_stats("Hello world. How are you?\nFine!"), TextStats { characters: 31, words: 6, lines: 2, sentences: 3 });
        assert_eq!(text_stats(""), TextStats { characters: 0, words: 0, lines: 0, sentences: 0 });
        assert_eq!(text_stats("héllo"), TextStats { characters: 5, words: 1, lines: 1, sentences: 1 });
    }

    #[test]
    fn costs_one_credit_per_started_thousand_characters() {
        assert_eq!(cost_of(0), 1);
        assert_eq!(cost_of(1000), 1);
        assert_eq!(cost_of(1001), 2);
        assert_eq!(cost_of(100_000), 100);
    }

    #[test]
    fn the_limiter_allows_the_limit_then_says_how_long_to_wait() {
        let l = RateLimiter::new(2);
        let k = Uuid::new_v4();
        let t0 = Instant::now();
        assert!(l.check(k, t0).is_ok());
        assert!(l.check(k, t0).is_ok());
        let wait = l.check(k, t0 + Duration::from_secs(20)).unwrap_err();
        assert_eq!(wait, 40);
        assert!(l.check(Uuid::new_v4(), t0).is_ok(), "limits are per key");
        assert!(l.check(k, t0 + Duration::from_secs(61)).is_ok(), "a new window starts");
    }
}
