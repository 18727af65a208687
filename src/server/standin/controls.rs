//! Controls for tests and demos, under `/_standin` (they exist only in the stand-in, which the
//! app mounts only in local mode). They hand out free plans and refunds and send webhooks
//! anywhere, so each needs `Authorization: Bearer <controls token>` (the app derives it from
//! `SESSION_SECRET`, or takes `POLAR_STANDIN_CONTROLS_TOKEN`); without it: 401. JSON in, JSON out:
//!
//! | request | effect |
//! |---|---|
//! | `POST /_standin/clock/advance {"seconds": n}` | moves the stand-in's clock; renewals and expiries that fall due happen, with their webhooks |
//! | `POST /_standin/subscriptions/{id}/renew` | ends the current period now and renews (or ends, if canceled) |
//! | `POST /_standin/renewals/fail-next {"subscription_id"?}` | the next renewal payment fails: `past_due` |
//! | `POST /_standin/orders/{id}/refund {"amount"?}` | refunds an order (all of what is left by default) |
//! | `POST /_standin/checkouts/{id}/expire` | expires an open checkout now |
//! | `POST /_standin/webhooks/duplicate-next {"times": n}` | every event of the next batch is delivered n extra times |
//! | `POST /_standin/webhooks/shuffle-next` | the next batch is delivered in random order |
//! | `POST /_standin/webhooks/chaos {"duplicate": n, "shuffle": bool}` | every batch from now on, until set back to 0/false |
//! | `POST /_standin/webhooks/endpoints {"url","secret","standard"}` | adds a webhook endpoint |
//! | `GET /_standin/webhooks/deliveries` | every delivery attempt so far |
//! | `POST /_standin/outage {"kind": "error"/"timeout"/"rate_limit", "count": n, "retry_after"?}` | the next n API requests fail that way |
//! | `DELETE /_standin/outage` | ends the outage |
//! | `GET /_standin/products` | the catalogue's ids by key (`pro`, `business`, `pro_yearly`, `business_yearly`, `pack_50`, `pack_100`) |
//! | `GET /_standin/requests` | every API request received, `[method, path]`, oldest first |

use super::api::{invalid, polar_error};
use super::{lock, product_id, Outage, OutageKind, StandIn, WebhookEndpoint};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

pub fn routes(s: StandIn) -> Router {
    Router::new()
        .route("/_standin/clock/advance", post(advance))
        .route("/_standin/subscriptions/{id}/renew", post(renew))
        .route("/_standin/renewals/fail-next", post(fail_next))
        .route("/_standin/orders/{id}/refund", post(refund))
        .route("/_standin/checkouts/{id}/expire", post(expire))
        .route("/_standin/webhooks/duplicate-next", post(duplicate_next))
        .route("/_standin/webhooks/shuffle-next", post(shuffle_next))
        .route("/_standin/webhooks/chaos", post(chaos))
        .route("/_standin/webhooks/endpoints", post(add_endpoint))
        .route("/_standin/webhooks/deliveries", get(deliveries))
        .route("/_standin/outage", post(outage).delete(end_outage))
        .route("/_standin/events/refuse", post(refuse_events))
        .route("/_standin/webhooks/lose", post(lose_webhooks))
        .route("/_standin/products", get(products))
        .route("/_standin/requests", get(requests))
        .layer(axum::middleware::from_fn_with_state(s.clone(), require_token))
        .with_state(s)
}

/// Refuses a control request without the controls token (compared in constant time).
async fn require_token(
    State(s): State<StandIn>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(expected) = &s.inner.config.controls_token {
        let given = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !crate::server::util::constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({ "error": "Unauthorized", "detail": "The stand-in's controls need its controls token." })),
            )
                .into_response();
        }
    }
    next.run(req).await
}

fn body(raw: &[u8]) -> Value {
    serde_json::from_slice(raw).unwrap_or(Value::Null)
}

async fn advance(State(s): State<StandIn>, raw: axum::body::Bytes) -> Response {
    let Some(seconds) = body(&raw)["seconds"].as_i64().filter(|n| *n > 0) else {
        return invalid("missing", json!(["body", "seconds"]), "seconds: a positive whole number", Value::Null);
    };
    lock(&s.inner.controls).clock_offset += chrono::Duration::seconds(seconds);
    s.mutate(|_, _, _| ());
    Json(json!({ "now": super::world::ts(s.now()) })).into_response()
}

async fn renew(State(s): State<StandIn>, Path(id): Path<String>) -> Response {
    let found = s.mutate(|w, now, _| match w.subscription_mut(&id) {
        Some(sub) if sub.is_active() => {
            sub.current_period_end = now;
            true
        }
        _ => false,
    });
    if !found {
        return polar_error(404, "ResourceNotFound", "No active subscription with this id.");
    }
    // The renewal runs on the next change of the world.
    s.mutate(|_, _, _| ());
    s.mutate(|w, _, _| match w.subscriptions.iter().find(|x| x.id == id) {
        Some(sub) => Json(w.subscription_json(sub)).into_response(),
        None => polar_error(404, "ResourceNotFound", "Not found"),
    })
}

async fn fail_next(State(s): State<StandIn>, raw: axum::body::Bytes) -> Response {
    let sub = body(&raw)["subscription_id"].as_str().map(str::to_string);
    lock(&s.inner.controls).fail_next_renewal = Some(sub);
    StatusCode::NO_CONTENT.into_response()
}

async fn refund(State(s): State<StandIn>, Path(id): Path<String>, raw: axum::body::Bytes) -> Response {
    let amount = body(&raw)["amount"].as_i64();
    s.mutate(|w, now, ev| match w.refund_order(&id, amount, "customer_request", now, ev) {
        Ok(_) => Json(w.order_json(w.orders.iter().find(|o| o.id == id).expect("exists"), now)).into_response(),
        Err(r) => polar_error(r.status, r.error, &r.detail),
    })
}

async fn expire(State(s): State<StandIn>, Path(id): Path<String>) -> Response {
    s.mutate(|w, now, ev| {
        let Some(c) = w.checkout_mut(&id) else { return polar_error(404, "ResourceNotFound", "Not found") };
        if c.status == "open" {
            c.expires_at = now;
        }
        w.expire_checkouts(now, ev);
        Json(w.checkout_json(w.checkouts.iter().find(|c| c.id == id).expect("exists"))).into_response()
    })
}

async fn duplicate_next(State(s): State<StandIn>, raw: axum::body::Bytes) -> Response {
    let times = body(&raw)["times"].as_u64().unwrap_or(1).min(20) as u32;
    lock(&s.inner.controls).duplicate_next = times;
    StatusCode::NO_CONTENT.into_response()
}

/// `{"external_ids": [...]}`: ingestion refuses batches holding these events with a 422.
async fn refuse_events(State(s): State<StandIn>, raw: axum::body::Bytes) -> Response {
    let ids: Vec<String> = body(&raw)["external_ids"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).take(1000).collect())
        .unwrap_or_default();
    lock(&s.inner.controls).refuse_events = ids;
    StatusCode::NO_CONTENT.into_response()
}

/// `{"external_customer_ids": [...]}`: webhooks about these customers are lost from now on, as
/// when an endpoint is down past Polar's retries (`[]` delivers again).
async fn lose_webhooks(State(s): State<StandIn>, raw: axum::body::Bytes) -> Response {
    let ids: Vec<String> = body(&raw)["external_customer_ids"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).filter(|x| !x.is_empty()).take(1000).collect())
        .unwrap_or_default();
    s.lose_webhooks_for(ids);
    StatusCode::NO_CONTENT.into_response()
}

async fn shuffle_next(State(s): State<StandIn>) -> Response {
    lock(&s.inner.controls).shuffle_next = true;
    StatusCode::NO_CONTENT.into_response()
}

/// Every following batch is delivered `duplicate` extra times and/or shuffled, until set
/// back to `{"duplicate": 0, "shuffle": false}`.
async fn chaos(State(s): State<StandIn>, raw: axum::body::Bytes) -> Response {
    let b = body(&raw);
    let mut c = lock(&s.inner.controls);
    c.chaos_duplicate = b["duplicate"].as_u64().unwrap_or(0).min(20) as u32;
    c.chaos_shuffle = b["shuffle"].as_bool().unwrap_or(false);
    StatusCode::NO_CONTENT.into_response()
}

async fn add_endpoint(State(s): State<StandIn>, raw: axum::body::Bytes) -> Response {
    let b = body(&raw);
    let (Some(url), Some(secret)) = (b["url"].as_str(), b["secret"].as_str()) else {
        return invalid("missing", json!(["body", "url"]), "url and secret are required", b);
    };
    s.add_endpoint(WebhookEndpoint {
        url: url.into(),
        secret: secret.into(),
        standard: b["standard"].as_bool().unwrap_or(false),
    });
    StatusCode::CREATED.into_response()
}

async fn deliveries(State(s): State<StandIn>) -> Response {
    Json(s.deliveries()).into_response()
}

async fn outage(State(s): State<StandIn>, raw: axum::body::Bytes) -> Response {
    let b = body(&raw);
    let kind = match b["kind"].as_str() {
        Some("error") => OutageKind::ServerError,
        Some("timeout") => OutageKind::Timeout,
        Some("rate_limit") => OutageKind::RateLimited { retry_after: b["retry_after"].as_u64().unwrap_or(1) },
        _ => return invalid("enum", json!(["body", "kind"]), "kind: error, timeout or rate_limit", b),
    };
    let remaining = b["count"].as_u64().unwrap_or(u32::MAX as u64).min(u32::MAX as u64) as u32;
    lock(&s.inner.controls).outage = Some(Outage { kind, remaining });
    StatusCode::NO_CONTENT.into_response()
}

async fn end_outage(State(s): State<StandIn>) -> Response {
    lock(&s.inner.controls).outage = None;
    StatusCode::NO_CONTENT.into_response()
}

async fn requests(State(s): State<StandIn>) -> Response {
    Json(s.requests()).into_response()
}

async fn products(State(s): State<StandIn>) -> Response {
    let packs: Vec<String> = s.inner.config.packs.iter().map(|(c, _)| format!("pack_{c}")).collect();
    let mut m = serde_json::Map::new();
    for key in ["pro", "business", "pro_yearly", "business_yearly"].into_iter().map(String::from).chain(packs) {
        m.insert(key.clone(), json!(product_id(&key)));
    }
    Json(Value::Object(m)).into_response()
}
