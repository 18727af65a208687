//! The metered API: `POST /api/v1/text/stats` counts characters, words, lines and sentences
//! of a text (`domain::text_stats`) and spends credits for it, one per started 1,000
//! characters.
//!
//! - `Authorization: Bearer tly_…` (a key from /settings/billing); 401 without a live key.
//! - Body `{"text": "…"}` (at most 100,000 characters); malformed JSON 400, invalid input 422,
//!   and in both cases nothing is spent.
//! - `Idempotency-Key: …` (optional, 1–255 printable ASCII characters, else 422
//!   `invalid_idempotency_key`): bound to the request, see [`idempotency`].
//! - Texts over `FREE_MAX_CHARS` (10,000) characters need a paid plan's benefit (`pro` or
//!   `business`, see `domain::plans::PAID_BENEFITS`): 403 `plan_required` without it, 503
//!   `billing_unavailable` when Polar cannot confirm the plan (fail closed); nothing is spent.
//! - Not enough credits: 402 `insufficient_credits` with what is available and what it would
//!   cost; with overage on (a plan with a metered price, and the user opted in) the shortfall
//!   is overage instead, and 402 `spend_cap_reached` names the cap it would pass.
//! - More than the per-key limit per minute: 429 `rate_limited` with `Retry-After`; more than
//!   `API_MAX_IN_FLIGHT_PER_ACCOUNT` calls of one account at once: 429 `too_many_in_flight`.
//! - Success: 200 and `X-Credits-Remaining`.
//!
//! Every error body is `{"error": {"code": "…", "message": "…"}}` plus details.

pub mod idempotency;
pub mod limits;

use crate::domain::plans::{FREE_MAX_CHARS, PAID_BENEFITS};
use crate::domain::text_stats::{self, BodyError, TextStats};
use crate::error::AppError;
use crate::server::ledger::{self, SpendOutcome};
use crate::server::state::AppState;
use crate::server::{api_keys, billing, util};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use idempotency::{Answer, Prior};
use serde_json::{json, Value};
use std::time::Instant;

pub use limits::{InFlight, RateLimiter};

/// The route, as bound into every idempotency key's request hash.
pub const PATH: &str = "/api/v1/text/stats";

fn error(status: StatusCode, code: &str, message: &str, extra: Value) -> Response {
    let mut body = json!({ "error": { "code": code, "message": message } });
    if let (Some(obj), Value::Object(more)) = (body["error"].as_object_mut(), extra) {
        obj.extend(more);
    }
    (status, Json(body)).into_response()
}

fn too_many(code: &str, message: &str, wait: u64) -> Response {
    let mut res = error(StatusCode::TOO_MANY_REQUESTS, code, message, json!({ "retry_after_seconds": wait }));
    res.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(wait));
    res
}

fn reused_key() -> Response {
    error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
        "This Idempotency-Key was already used for a different request. Use a new key for a new request; nothing was spent.",
        json!({ "field": "Idempotency-Key" }),
    )
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

fn replay(answer: Answer) -> Response {
    let mut res = answer.into_response();
    res.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    res
}

/// The 200 answer of a spend.
fn success(stats: &TextStats, spent: i64, balance: i64) -> Answer {
    let body = json!({
        "characters": stats.characters,
        "words": stats.words,
        "lines": stats.lines,
        "sentences": stats.sentences,
        "credits_spent": spent,
    });
    Answer {
        status: 200,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-credits-remaining".into(), balance.to_string()),
        ],
        body: serde_json::to_vec(&body).unwrap_or_default(),
    }
}

pub async fn text_stats_handler(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(key) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
    else {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing_api_key",
            "Send your API key as `Authorization: Bearer tly_…`.",
            json!({}),
        );
    };
    let (key_id, user_id) = match api_keys::authenticate(&state.pool, key).await {
        Ok(Some(ids)) => ids,
        Ok(None) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                "This API key is not valid or was revoked.",
                json!({}),
            )
        }
        Err(e) => return internal(e),
    };
    if let Err(wait) = state.rate_limiter.check(key_id, Instant::now()) {
        return too_many("rate_limited", "Too many requests for this API key; slow down.", wait);
    }
    // Held until this call has answered: one account cannot take every database connection.
    let Some(_slot) = state.api_in_flight.enter(user_id) else {
        return too_many(
            "too_many_in_flight",
            &format!(
                "This account already has {} calls in progress; wait for them to finish.",
                state.api_in_flight.max()
            ),
            1,
        );
    };
    let client_key =
        match headers.get("idempotency-key") {
            None => None,
            Some(v) => match v.to_str().ok().filter(|k| text_stats::valid_idempotency_key(k)) {
                Some(k) => Some(k.to_string()),
                None => return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_idempotency_key",
                    "Idempotency-Key must be 1 to 255 printable ASCII characters, without leading or trailing spaces.",
                    json!({ "field": "Idempotency-Key" }),
                ),
            },
        };
    let hash = idempotency::request_hash("POST", PATH, &body);
    if let Some(k) = &client_key {
        let prior = match state.pool.acquire().await {
            Ok(mut conn) => idempotency::lookup(&mut conn, key_id, k, &hash).await,
            Err(e) => Err(e),
        };
        match prior {
            Ok(Prior::Replay(answer)) => return replay(answer),
            Ok(Prior::Mismatch) => return reused_key(),
            Ok(Prior::Unused) => {}
            Err(e) => return internal(e),
        }
    }
    let text = match text_stats::parse_body(&body) {
        Ok(t) => t,
        Err(BodyError::Malformed(e)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                &format!("The body is not valid JSON: {e}"),
                json!({}),
            )
        }
        Err(BodyError::Invalid(m)) => {
            return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", m, json!({ "field": "text" }))
        }
    };
    let stats = text_stats::text_stats(&text);
    // Longer texts are a paid feature: the entitlement guard decides (fail closed when Polar
    // cannot confirm the plan), and nothing is spent when it refuses.
    if stats.characters > FREE_MAX_CHARS {
        match billing::require_any_benefit(&state, user_id, &PAID_BENEFITS).await {
            Ok(()) => {}
            Err(billing::Error::NotEntitled(_)) => {
                return error(
                    StatusCode::FORBIDDEN,
                    "plan_required",
                    &format!("Texts over {FREE_MAX_CHARS} characters need the Pro or Business plan."),
                    json!({ "field": "text", "max_characters": FREE_MAX_CHARS }),
                )
            }
            Err(
                e @ (billing::Error::CannotConfirm | billing::Error::Unavailable(_) | billing::Error::NotConfigured),
            ) => {
                let message = AppError::from(e).to_string();
                let mut res = error(StatusCode::SERVICE_UNAVAILABLE, "billing_unavailable", &message, json!({}));
                res.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(30));
                return res;
            }
            // The account's budget of Polar reads is spent (the plan could not be confirmed
            // without one): nothing spent, try again later.
            Err(billing::Error::RateLimited(wait)) => {
                return too_many(
                    "rate_limited",
                    "Too many billing checks for this account right now; try again shortly.",
                    wait,
                )
            }
            Err(e) => return internal(crate::server::errors::chain(&e)),
        }
    }
    let cost = text_stats::cost_of(stats.characters);
    let spend_key = match &client_key {
        Some(k) => idempotency::ledger_key(key_id, k),
        None => format!("api:{key_id}:{}", util::random_token(16)),
    };
    let metadata =
        json!({ "operation": "text.stats", "endpoint": PATH, "api_key_id": key_id, "characters": stats.characters });
    let result = spend(
        &state,
        user_id,
        cost,
        &spend_key,
        &metadata,
        client_key.as_deref().map(|k| (key_id, k, hash.as_slice())),
        &stats,
    )
    .await;
    match result {
        Ok(Spent::Answered(answer)) => answer.into_response(),
        Ok(Spent::Insufficient { available }) => error(
            StatusCode::PAYMENT_REQUIRED,
            "insufficient_credits",
            &format!(
                "This request costs {cost} credit{}; you have {available}. Buy a credit pack or upgrade your plan.",
                if cost == 1 { "" } else { "s" }
            ),
            json!({ "cost": cost, "available": available }),
        ),
        Ok(Spent::OverCap { available }) => over_cap(&state, user_id, cost, available).await,
        Ok(Spent::KeyTaken) => match client_key.as_deref() {
            // The same key committed meanwhile (a concurrent retry): its answer, or a refusal.
            Some(k) => match lookup_again(&state, key_id, k, &hash).await {
                Ok(Prior::Replay(answer)) => replay(answer),
                Ok(_) => reused_key(),
                Err(e) => internal(e),
            },
            None => internal("a random spend key was already taken"),
        },
        Err(e) => internal(e),
    }
}

enum Spent {
    Answered(Answer),
    Insufficient {
        available: i64,
    },
    /// The overage it needs would pass the period's cap.
    OverCap {
        available: i64,
    },
    /// The ledger already holds a spend under this key.
    KeyTaken,
}

/// Spends and, for a keyed request, records the answer, in one transaction.
async fn spend(
    state: &AppState,
    user_id: uuid::Uuid,
    cost: i64,
    spend_key: &str,
    metadata: &Value,
    keyed: Option<(uuid::Uuid, &str, &[u8])>,
    stats: &TextStats,
) -> Result<Spent, sqlx::Error> {
    let mut tx = state.pool.begin().await?;
    match ledger::spend(&mut tx, user_id, cost, spend_key, metadata, chrono::Utc::now()).await? {
        SpendOutcome::Spent { spent, balance } => {
            let answer = success(stats, spent, balance);
            if let Some((key_id, client_key, hash)) = keyed {
                idempotency::record(&mut tx, key_id, client_key, hash, &answer).await?;
            }
            tx.commit().await?;
            Ok(Spent::Answered(answer))
        }
        SpendOutcome::Duplicate { .. } => Ok(Spent::KeyTaken),
        SpendOutcome::Insufficient { available } => Ok(Spent::Insufficient { available }),
        SpendOutcome::OverCap { available } => Ok(Spent::OverCap { available }),
    }
}

/// 402 naming the overage cap that stopped the call (the lower of the plan's and the user's).
async fn over_cap(state: &AppState, user_id: uuid::Uuid, cost: i64, available: i64) -> Response {
    let period = match crate::server::ledger::period::current(&state.pool, user_id, chrono::Utc::now()).await {
        Ok(p) => p,
        Err(e) => return internal(e),
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
    error(
        StatusCode::PAYMENT_REQUIRED,
        "spend_cap_reached",
        &format!(
            "This request costs {cost} credits and you have {available}; the rest would be overage past your cap of {} this period ({} used). Raise the cap in your billing settings, or buy a credit pack.",
            usd(cap),
            usd(used)
        ),
        json!({ "cost": cost, "available": available, "cap_cents": cap, "overage_cents": used }),
    )
}

async fn lookup_again(
    state: &AppState,
    key_id: uuid::Uuid,
    client_key: &str,
    hash: &[u8],
) -> Result<Prior, sqlx::Error> {
    let mut conn = state.pool.acquire().await?;
    idempotency::lookup(&mut conn, key_id, client_key, hash).await
}

fn internal(e: impl std::fmt::Display) -> Response {
    let reference = util::short_reference();
    tracing::error!(%reference, error = %e, "metered API failure");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        &format!("Something went wrong on our side (reference {reference})."),
        json!({}),
    )
}
