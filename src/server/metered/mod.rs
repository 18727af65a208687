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
//!
//! Everything but counting the text and its price is [`meter`]'s, the piece any metered
//! endpoint is built on: the key, the limits, idempotency, the spend and the error bodies.

pub mod idempotency;
pub mod limits;
pub mod meter;
pub mod spender;

use crate::domain::plans::{FREE_MAX_CHARS, PAID_BENEFITS};
use crate::domain::text_stats::{self, BodyError};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

pub use limits::{InFlight, RateLimiter};
pub use meter::{ApiError, MeteredCall};

/// The route.
pub const PATH: &str = "/api/v1/text/stats";

/// `POST /api/v1/text/stats`: the text's statistics, one credit per started 1,000 characters.
pub async fn text_stats_handler(call: MeteredCall) -> Result<Response, ApiError> {
    let text = text_stats::parse_body(call.body()).map_err(|e| match e {
        BodyError::Malformed(e) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("The body is not valid JSON: {e}"),
            json!({}),
        ),
        BodyError::Invalid(m) => ApiError::invalid("text", m),
    })?;
    let stats = text_stats::text_stats(&text);
    // Longer texts are a paid feature: the entitlement guard decides, and nothing is spent
    // when it refuses.
    if stats.characters > FREE_MAX_CHARS {
        let refusal = format!("Texts over {FREE_MAX_CHARS} characters need the Pro or Business plan.");
        call.require_any_benefit(
            &PAID_BENEFITS,
            &refusal,
            json!({ "field": "text", "max_characters": FREE_MAX_CHARS }),
        )
        .await?;
    }
    let details = json!({ "endpoint": PATH, "characters": stats.characters });
    let answer = json!({ "characters": stats.characters, "words": stats.words, "lines": stats.lines, "sentences": stats.sentences });
    call.charge(text_stats::cost_of(stats.characters), "text.stats", details, answer).await
}
