//! Polar's HTTP API under `/v1`, for the operations Tally uses: same paths (collection paths
//! end in `/`), status codes, bodies and error shapes (docs/polar-contract.md §1.3, §2).

// A handler's helpers fail with the finished HTTP answer (Polar's error body), which is larger
// than clippy's threshold for an `Err`; it is built once, on the failing path only.
#![allow(clippy::result_large_err)]

use super::ops::Refusal;
use super::world::{new_id, Address, Customer, Session, World};
use super::{lock, OutageKind, StandIn};
use crate::domain::email::Email;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Map, Value};

mod checkouts;
mod customers;
mod events;
mod orders;
mod products;
mod subscriptions;

pub fn routes(s: StandIn) -> Router {
    Router::new()
        .route("/v1/checkouts/", post(checkouts::create_checkout).get(checkouts::list_checkouts))
        .route("/v1/checkouts/{id}", get(checkouts::get_checkout))
        .route("/v1/customer-sessions/", post(checkouts::create_session))
        .route("/v1/customers/", post(customers::create_customer).get(customers::list_customers))
        .route(
            "/v1/customers/external/{external_id}",
            get(customers::get_customer).patch(customers::update_customer).delete(customers::delete_customer),
        )
        .route("/v1/customers/external/{external_id}/state", get(customers::customer_state))
        .route("/v1/orders/", get(orders::list_orders))
        .route("/v1/orders/{id}", get(orders::get_order).patch(orders::update_order))
        .route("/v1/orders/{id}/invoice", post(orders::generate_invoice).get(orders::get_invoice))
        .route("/v1/subscriptions/", get(subscriptions::list_subscriptions))
        .route(
            "/v1/subscriptions/{id}",
            get(subscriptions::get_subscription)
                .patch(subscriptions::update_subscription)
                .delete(subscriptions::revoke_subscription),
        )
        .route("/v1/products/", get(products::list_products))
        .route("/v1/products/{id}", get(products::get_product))
        .route("/v1/events/ingest", post(events::ingest_events))
        .route("/v1/customer-meters/", get(events::list_customer_meters))
        .route("/v1/refunds/", post(orders::create_refund))
        .fallback(|| async { (StatusCode::NOT_FOUND, Json(json!({ "detail": "Not Found" }))) })
        .layer(axum::middleware::from_fn_with_state(s.clone(), guard))
        .with_state(s)
}

// ---- errors in Polar's shapes ----

pub(super) fn polar_error(status: u16, error: &str, detail: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        Json(json!({ "error": error, "detail": detail })),
    )
        .into_response()
}

fn not_found() -> Response {
    polar_error(404, "ResourceNotFound", "Not found")
}

/// A 422 with one `detail` item, as FastAPI/pydantic and Polar's business rules write it.
pub(super) fn invalid(kind: &str, loc: Value, msg: &str, input: Value) -> Response {
    (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({ "error": "PolarRequestValidationError", "detail": [{ "type": kind, "loc": loc, "msg": msg, "input": input }] }))).into_response()
}

fn refusal(r: Refusal) -> Response {
    if r.status == 422 {
        return invalid("value_error", json!(["body"]), &r.detail, Value::Null);
    }
    polar_error(r.status, r.error, &r.detail)
}

/// Bearer authentication and the outage switch, before any route.
async fn guard(State(s): State<StandIn>, req: Request, next: Next) -> Response {
    let limited = {
        let mut c = lock(&s.inner.controls);
        c.requests.push((req.method().to_string(), req.uri().path().to_string()));
        if c.requests.len() > 20_000 {
            c.requests.drain(..10_000);
        }
        // Polar's quota: one budget of requests a minute per token (500 in production, 100 in
        // the sandbox), answered 429 with an empty body and `retry-after`.
        match s.inner.config.rate_limit_per_minute {
            Some(limit) => {
                let now = std::time::Instant::now();
                let window = c.rate_window.get_or_insert((now, 0));
                if now.duration_since(window.0) >= std::time::Duration::from_secs(60) {
                    *window = (now, 0);
                }
                window.1 += 1;
                (window.1 > limit).then(|| 60u64.saturating_sub(now.duration_since(window.0).as_secs()).max(1))
            }
            None => None,
        }
    };
    if let Some(wait) = limited {
        return (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, wait.to_string())], "").into_response();
    }
    let outage = {
        let mut c = lock(&s.inner.controls);
        match c.outage.as_mut() {
            Some(o) if o.remaining > 0 => {
                o.remaining -= 1;
                Some(o.kind.clone())
            }
            _ => None,
        }
    };
    match outage {
        Some(OutageKind::ServerError) => return polar_error(500, "InternalServerError", "Internal Server Error"),
        Some(OutageKind::Timeout) => {
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            return polar_error(504, "GatewayTimeout", "Gateway Timeout");
        }
        Some(OutageKind::RateLimited { retry_after }) => {
            return (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, retry_after.to_string())], "")
                .into_response();
        }
        None => {}
    }
    let auth = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let token = auth.and_then(|a| a.strip_prefix("Bearer ").or_else(|| a.strip_prefix("bearer "))).map(str::trim);
    match token {
        None | Some("") => {
            let mut r = polar_error(401, "Unauthorized", "Unauthorized");
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"polar\""));
            r
        }
        Some(t) if !s.inner.config.access_tokens.iter().any(|k| k == t) => {
            let desc = "The access token provided is expired, revoked, malformed, or invalid for other reasons.";
            let mut r =
                (StatusCode::UNAUTHORIZED, Json(json!({ "error": "invalid_token", "error_description": desc })))
                    .into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_str(&format!(
                    "Bearer realm=\"polar\", error=\"invalid_token\", error_description=\"{desc}\""
                ))
                .expect("ascii"),
            );
            r
        }
        Some(_) => next.run(req).await,
    }
}

// ---- request parsing ----

fn parse_body(body: &Bytes) -> Result<Map<String, Value>, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(invalid(
            "model_attributes_type",
            json!(["body"]),
            "Input should be a valid dictionary or object to extract fields from",
            other,
        )),
        Err(e) => Err(invalid("json_invalid", json!(["body", e.column()]), "JSON decode error", json!({}))),
    }
}

fn opt_str(body: &Map<String, Value>, key: &str) -> Result<Option<String>, Response> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => {
            Err(invalid("string_type", json!(["body", key]), "Input should be a valid string", other.clone()))
        }
    }
}

fn opt_bool(body: &Map<String, Value>, key: &str, default: bool) -> Result<bool, Response> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => {
            Err(invalid("bool_type", json!(["body", key]), "Input should be a valid boolean", other.clone()))
        }
    }
}

/// `metadata`: ≤ 50 keys of 1–40 characters; values strings (1–500), numbers or booleans.
fn metadata(body: &Map<String, Value>, key: &str) -> Result<Map<String, Value>, Response> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => {
            if m.len() > 50 {
                return Err(invalid(
                    "too_long",
                    json!(["body", key]),
                    "Dictionary should have at most 50 items",
                    Value::Object(m.clone()),
                ));
            }
            for (k, v) in m {
                if k.is_empty() || k.chars().count() > 40 {
                    return Err(invalid(
                        "string_too_long",
                        json!(["body", key, k]),
                        "Key should have 1 to 40 characters",
                        json!(k),
                    ));
                }
                let ok = match v {
                    Value::String(s) => !s.is_empty() && s.chars().count() <= 500,
                    Value::Number(_) | Value::Bool(_) => true,
                    _ => false,
                };
                if !ok {
                    return Err(invalid(
                        "value_error",
                        json!(["body", key, k]),
                        "Value should be a string of 1 to 500 characters, a number or a boolean",
                        v.clone(),
                    ));
                }
            }
            Ok(m.clone())
        }
        Some(other) => {
            Err(invalid("dict_type", json!(["body", key]), "Input should be a valid dictionary", other.clone()))
        }
    }
}

fn address(body: &Map<String, Value>, key: &str) -> Result<Option<Address>, Response> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => {
            let field =
                |k: &str| m.get(k).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
            let Some(country) = field("country").map(|c| c.to_ascii_uppercase()) else {
                return Err(invalid(
                    "missing",
                    json!(["body", key, "country"]),
                    "Field required",
                    Value::Object(m.clone()),
                ));
            };
            if country.len() != 2 || !country.chars().all(|c| c.is_ascii_uppercase()) {
                return Err(invalid(
                    "enum",
                    json!(["body", key, "country"]),
                    "Input should be a valid ISO 3166-1 alpha-2 country code",
                    json!(country),
                ));
            }
            if ["CU", "IR", "KP", "SY", "RU"].contains(&country.as_str()) {
                return Err(invalid(
                    "enum",
                    json!(["body", key, "country"]),
                    "This country is not supported.",
                    json!(country),
                ));
            }
            let mut state = field("state");
            if matches!(country.as_str(), "US" | "CA") {
                state = state.map(|s| {
                    if s.contains('-') {
                        s.to_ascii_uppercase()
                    } else {
                        format!("{country}-{}", s.to_ascii_uppercase())
                    }
                });
            }
            Ok(Some(Address {
                line1: field("line1"),
                line2: field("line2"),
                postal_code: field("postal_code"),
                city: field("city"),
                state,
                country,
            }))
        }
        Some(other) => {
            Err(invalid("model_type", json!(["body", key]), "Input should be a valid dictionary", other.clone()))
        }
    }
}

fn uuid_path(id: &str) -> Result<(), Response> {
    uuid::Uuid::parse_str(id)
        .map(|_| ())
        .map_err(|_| invalid("uuid_parsing", json!(["path", "id"]), "Input should be a valid UUID", json!(id)))
}

fn page_params(q: &[(String, String)]) -> Result<(usize, usize), Response> {
    let page = match query_values(q, "page").next() {
        None => 1,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => {
                return Err(invalid(
                    "greater_than_equal",
                    json!(["query", "page"]),
                    "Input should be greater than or equal to 1",
                    json!(v),
                ))
            }
        },
    };
    let limit = match query_values(q, "limit").next() {
        None => 10,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => {
                return Err(invalid(
                    "less_than_equal",
                    json!(["query", "limit"]),
                    "Input should be between 1 and 100",
                    json!(v),
                ))
            }
        },
    };
    Ok((page, limit))
}

/// A `ListResource` page of `items` (already filtered and sorted).
fn list_page(items: Vec<Value>, q: &[(String, String)]) -> Response {
    let (page, limit) = match page_params(q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let total = items.len();
    let max_page = total.div_ceil(limit).max(1);
    let items: Vec<Value> = items.into_iter().skip((page - 1) * limit).take(limit).collect();
    Json(json!({ "items": items, "pagination": { "total_count": total, "max_page": max_page } })).into_response()
}

fn query_values<'a>(q: &'a [(String, String)], key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    q.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Newest first unless `sorting=created_at`.
fn sort_newest_first(q: &[(String, String)]) -> bool {
    !query_values(q, "sorting").any(|v| v == "created_at")
}
