//! Polar's HTTP API under `/v1`, for the operations Tally uses: same paths (collection paths
//! end in `/`), status codes, bodies and error shapes (POLAR.md §1.3, §2).

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

pub fn routes(s: StandIn) -> Router {
    Router::new()
        .route("/v1/checkouts/", post(create_checkout).get(list_checkouts))
        .route("/v1/checkouts/{id}", get(get_checkout))
        .route("/v1/customer-sessions/", post(create_session))
        .route("/v1/customers/", post(create_customer).get(list_customers))
        .route("/v1/customers/external/{external_id}", get(get_customer).patch(update_customer).delete(delete_customer))
        .route("/v1/customers/external/{external_id}/state", get(customer_state))
        .route("/v1/orders/", get(list_orders))
        .route("/v1/orders/{id}", get(get_order).patch(update_order))
        .route("/v1/orders/{id}/invoice", post(generate_invoice).get(get_invoice))
        .route("/v1/subscriptions/", get(list_subscriptions))
        .route("/v1/subscriptions/{id}", get(get_subscription).patch(update_subscription).delete(revoke_subscription))
        .route("/v1/products/", get(list_products))
        .route("/v1/products/{id}", get(get_product))
        .route("/v1/events/ingest", post(ingest_events))
        .route("/v1/customer-meters/", get(list_customer_meters))
        .route("/v1/refunds/", post(create_refund))
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

// ---- checkouts ----

async fn create_checkout(State(s): State<StandIn>, body: Bytes) -> Response {
    let b = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let products: Vec<String> = match b.get("products") {
        None | Some(Value::Null) => {
            return invalid("missing", json!(["body", "products"]), "Field required", Value::Object(b.clone()))
        }
        Some(Value::Array(a)) if a.is_empty() => {
            return invalid(
                "too_short",
                json!(["body", "products"]),
                "List should have at least 1 item after validation, not 0",
                json!([]),
            )
        }
        Some(Value::Array(a)) => {
            let mut ids = vec![];
            for (i, v) in a.iter().enumerate() {
                match v.as_str().filter(|id| uuid::Uuid::parse_str(id).is_ok()) {
                    Some(id) => ids.push(id.to_string()),
                    None => {
                        return invalid(
                            "uuid_parsing",
                            json!(["body", "products", i]),
                            "Input should be a valid UUID",
                            v.clone(),
                        )
                    }
                }
            }
            ids
        }
        Some(other) => {
            return invalid("list_type", json!(["body", "products"]), "Input should be a valid list", other.clone())
        }
    };
    let fields = (|| -> Result<_, Response> {
        let external = match opt_str(&b, "external_customer_id")? {
            Some(x) => Some(x),
            None => opt_str(&b, "customer_external_id")?,
        };
        let success_url = opt_str(&b, "success_url")?;
        if let Some(u) = &success_url {
            if url::Url::parse(u).is_err() || u.len() > 2083 {
                return Err(invalid(
                    "url_parsing",
                    json!(["body", "success_url"]),
                    "Input should be a valid URL",
                    json!(u),
                ));
            }
        }
        let email = opt_str(&b, "customer_email")?;
        if let Some(e) = &email {
            if Email::parse(e).is_err() {
                return Err(invalid(
                    "value_error",
                    json!(["body", "customer_email"]),
                    "value is not a valid email address",
                    json!(e),
                ));
            }
        }
        Ok((
            external,
            success_url,
            opt_str(&b, "return_url")?,
            email,
            opt_str(&b, "customer_name")?,
            opt_str(&b, "customer_id")?,
            metadata(&b, "metadata")?,
            metadata(&b, "customer_metadata")?,
            opt_bool(&b, "allow_discount_codes", true)?,
            opt_bool(&b, "require_billing_address", false)?,
            opt_bool(&b, "is_business_customer", false)?,
            opt_bool(&b, "allow_trial", true)?,
            opt_str(&b, "customer_billing_name")?,
            address(&b, "customer_billing_address")?,
            opt_str(&b, "customer_tax_id")?,
        ))
    })();
    let (
        external,
        success_url,
        return_url,
        email,
        name,
        customer_id,
        meta,
        customer_meta,
        discounts,
        require_address,
        business,
        trial,
        billing_name,
        billing_address,
        tax_id,
    ) = match fields {
        Ok(f) => f,
        Err(r) => return r,
    };
    s.mutate(|w, now, _ev| {
        for (i, p) in products.iter().enumerate() {
            if w.product(p).is_none() {
                return invalid("value_error", json!(["body", "products", i]), "Product does not exist.", json!(p));
            }
        }
        if let Some(cid) = &customer_id {
            if w.customer(cid).is_none_or(|c| c.deleted_at.is_some()) {
                return invalid("value_error", json!(["body", "customer_id"]), "Customer does not exist.", json!(cid));
            }
        }
        let id = new_id();
        let linked = external
            .as_deref()
            .and_then(|x| w.customer_by_external(x))
            .or_else(|| customer_id.as_deref().and_then(|c| w.customer(c)))
            .cloned();
        let checkout = super::world::Checkout {
            id: id.clone(),
            client_secret: format!("polar_c_{}", crate::server::util::random_token(30).replace(['-', '_'], "x")),
            status: "open".into(),
            product_id: products[0].clone(),
            product_ids: products.clone(),
            external_customer_id: external.clone(),
            customer_id: linked.as_ref().map(|c| c.id.clone()),
            customer_email: email.or_else(|| linked.as_ref().map(|c| c.email.clone())),
            customer_name: name.or_else(|| linked.as_ref().and_then(|c| c.name.clone())),
            customer_billing_name: billing_name.or_else(|| linked.as_ref().and_then(|c| c.billing_name.clone())),
            customer_billing_address: billing_address
                .clone()
                .or_else(|| linked.as_ref().and_then(|c| c.billing_address.clone())),
            customer_tax_id: tax_id.or_else(|| linked.as_ref().and_then(|c| c.tax_id.as_ref().map(|t| t.0.clone()))),
            success_url: success_url.map(|u| u.replace("{CHECKOUT_ID}", &id)),
            return_url,
            metadata: meta,
            customer_metadata: customer_meta,
            allow_discount_codes: discounts,
            require_billing_address: require_address || billing_address.is_some(),
            is_business_customer: business,
            allow_trial: trial,
            created_at: now,
            modified_at: None,
            expires_at: now + Duration::hours(24),
            last_error: None,
            subscription_id: None,
            order_id: None,
        };
        w.checkouts.push(checkout);
        let json = w.checkout_json(w.checkouts.last().expect("just pushed"));
        _ev.0.push(super::ops::Event { event_type: "checkout.created".into(), timestamp: now, data: json.clone() });
        (StatusCode::CREATED, Json(json)).into_response()
    })
}

async fn list_checkouts(State(s): State<StandIn>, Query(q): Query<Vec<(String, String)>>) -> Response {
    s.mutate(|w, _, _| {
        let customers: Vec<&str> = query_values(&q, "customer_id").collect();
        let statuses: Vec<&str> = query_values(&q, "status").collect();
        let mut items: Vec<Value> = w
            .checkouts
            .iter()
            .filter(|c| customers.is_empty() || c.customer_id.as_deref().is_some_and(|id| customers.contains(&id)))
            .filter(|c| statuses.is_empty() || statuses.contains(&c.status.as_str()))
            .map(|c| w.checkout_json(c))
            .collect();
        if sort_newest_first(&q) {
            items.reverse();
        }
        list_page(items, &q)
    })
}

async fn get_checkout(State(s): State<StandIn>, Path(id): Path<String>) -> Response {
    if let Err(r) = uuid_path(&id) {
        return r;
    }
    s.mutate(|w, _, _| match w.checkouts.iter().find(|c| c.id == id) {
        Some(c) => Json(w.checkout_json(c)).into_response(),
        None => not_found(),
    })
}

// ---- customer sessions ----

async fn create_session(State(s): State<StandIn>, body: Bytes) -> Response {
    let b = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (customer_id, external, return_url) = match (|| {
        Ok::<_, Response>((
            opt_str(&b, "customer_id")?,
            opt_str(&b, "external_customer_id")?.or(opt_str(&b, "customer_external_id")?),
            opt_str(&b, "return_url")?,
        ))
    })() {
        Ok(v) => v,
        Err(r) => return r,
    };
    s.mutate(|w, now, _| {
        let (customer, loc, input) = match (&customer_id, &external) {
            (Some(id), _) => (w.customer(id).filter(|c| c.deleted_at.is_none()).cloned(), "customer_id", id.clone()),
            (None, Some(x)) => (w.customer_by_external(x).cloned(), "external_customer_id", x.clone()),
            (None, None) => {
                return invalid("missing", json!(["body", "customer_id"]), "Field required", Value::Object(b.clone()))
            }
        };
        let Some(customer) = customer else {
            return invalid("value_error", json!(["body", loc]), "Customer does not exist.", json!(input));
        };
        let session = Session {
            id: new_id(),
            token: format!("polar_cst_{}", crate::server::util::random_token(30).replace(['-', '_'], "x")),
            customer_id: customer.id,
            return_url,
            created_at: now,
            expires_at: now + Duration::hours(1),
        };
        w.sessions.push(session);
        (StatusCode::CREATED, Json(w.session_json(w.sessions.last().expect("just pushed")))).into_response()
    })
}

// ---- customers ----

/// Checks a tax id against the billing country, as Polar does on create and update.
fn tax_id_for(tax_id: &str, country: Option<&str>) -> Result<(String, String), Response> {
    let Some(country) = country else {
        return Err(invalid(
            "value_error",
            json!(["body", "billing_address"]),
            "Country is required to validate tax ID.",
            Value::Null,
        ));
    };
    crate::domain::tax_id::validate(country, tax_id)
        .map(|t| (t.value, t.kind.to_string()))
        .map_err(|_| invalid("value_error", json!(["body", "tax_id"]), "Invalid tax ID.", json!(tax_id)))
}

async fn create_customer(State(s): State<StandIn>, body: Bytes) -> Response {
    let b = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let parsed = (|| -> Result<_, Response> {
        let email = match opt_str(&b, "email")? {
            Some(e) if Email::parse(&e).is_ok() => e,
            Some(e) => {
                return Err(invalid(
                    "value_error",
                    json!(["body", "email"]),
                    "value is not a valid email address",
                    json!(e),
                ))
            }
            None => {
                return Err(invalid("missing", json!(["body", "email"]), "Field required", Value::Object(b.clone())))
            }
        };
        let billing = address(&b, "billing_address")?;
        let tax = match opt_str(&b, "tax_id")? {
            Some(t) => Some(tax_id_for(&t, billing.as_ref().map(|a| a.country.as_str()))?),
            None => None,
        };
        let name = opt_str(&b, "name")?;
        if name.as_ref().is_some_and(|n| n.chars().count() > 256) {
            return Err(invalid(
                "string_too_long",
                json!(["body", "name"]),
                "String should have at most 256 characters",
                json!(name),
            ));
        }
        Ok((email, opt_str(&b, "external_id")?, name, billing, tax, metadata(&b, "metadata")?))
    })();
    let (email, external_id, name, billing, tax, meta) = match parsed {
        Ok(p) => p,
        Err(r) => return r,
    };
    s.mutate(|w, now, ev| {
        let id = match w.create_customer(&email, external_id, name, meta, now, ev) {
            Ok(id) => id,
            Err((field, msg)) => {
                return invalid(
                    "value_error",
                    json!(["body", field]),
                    &msg,
                    b.get(field).cloned().unwrap_or(Value::Null),
                )
            }
        };
        let c = w.customer_mut(&id).expect("just created");
        c.billing_address = billing;
        c.tax_id = tax;
        (StatusCode::CREATED, Json(w.customer_json(w.customer(&id).expect("exists")))).into_response()
    })
}

async fn list_customers(State(s): State<StandIn>, Query(q): Query<Vec<(String, String)>>) -> Response {
    s.read(|w, _| {
        let email = query_values(&q, "email").next().map(str::to_string);
        let mut items: Vec<&Customer> = w
            .customers
            .iter()
            .filter(|c| c.deleted_at.is_none())
            .filter(|c| email.as_ref().is_none_or(|e| c.email.eq_ignore_ascii_case(e)))
            .collect();
        if sort_newest_first(&q) {
            items.reverse();
        }
        list_page(items.into_iter().map(|c| w.customer_json(c)).collect(), &q)
    })
}

async fn get_customer(State(s): State<StandIn>, Path(external_id): Path<String>) -> Response {
    s.read(|w, _| match w.customer_by_external(&external_id) {
        Some(c) => Json(w.customer_json(c)).into_response(),
        None => not_found(),
    })
}

async fn update_customer(State(s): State<StandIn>, Path(external_id): Path<String>, body: Bytes) -> Response {
    let b = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    s.mutate(|w, now, ev| {
        let Some(existing) = w.customer_by_external(&external_id).cloned() else { return not_found() };
        let apply = (|| -> Result<Customer, Response> {
            let mut c = existing.clone();
            if let Some(e) = opt_str(&b, "email")? {
                if Email::parse(&e).is_err() {
                    return Err(invalid(
                        "value_error",
                        json!(["body", "email"]),
                        "value is not a valid email address",
                        json!(e),
                    ));
                }
                if w.customer_by_email(&e).is_some_and(|o| o.id != c.id) {
                    return Err(invalid(
                        "value_error",
                        json!(["body", "email"]),
                        "A customer with this email address already exists.",
                        json!(e),
                    ));
                }
                c.email = e;
            }
            if b.contains_key("name") {
                c.name = opt_str(&b, "name")?;
            }
            if b.contains_key("billing_name") {
                c.billing_name = opt_str(&b, "billing_name")?;
            }
            if b.contains_key("billing_address") {
                match address(&b, "billing_address")? {
                    Some(a) => c.billing_address = Some(a),
                    None if c.billing_address.is_some() => {
                        return Err(invalid(
                            "value_error",
                            json!(["body", "billing_address"]),
                            "Customer billing address cannot be reset to null once set.",
                            Value::Null,
                        ))
                    }
                    None => {}
                }
            }
            if b.contains_key("tax_id") {
                c.tax_id = match opt_str(&b, "tax_id")? {
                    Some(t) => Some(tax_id_for(&t, c.billing_address.as_ref().map(|a| a.country.as_str()))?),
                    None => None,
                };
            }
            if b.contains_key("metadata") {
                c.metadata = metadata(&b, "metadata")?;
            }
            Ok(c)
        })();
        let updated = match apply {
            Ok(c) => c,
            Err(r) => return r,
        };
        let id = updated.id.clone();
        *w.customer_mut(&id).expect("exists") = updated;
        w.customer_updated(&id, now, ev);
        Json(w.customer_json(w.customer(&id).expect("exists"))).into_response()
    })
}

async fn delete_customer(
    State(s): State<StandIn>,
    Path(external_id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    let anonymize = query_values(&q, "anonymize").any(|v| v == "true");
    s.mutate(|w, now, ev| {
        let Some(c) = w.customer_by_external(&external_id).cloned() else { return not_found() };
        w.delete_customer(&c.id, anonymize, now, ev);
        StatusCode::NO_CONTENT.into_response()
    })
}

async fn customer_state(State(s): State<StandIn>, Path(external_id): Path<String>) -> Response {
    let lag = Duration::from_std(s.inner.config.state_lag).unwrap_or_default();
    s.read(|w, now| match w.customer_by_external(&external_id) {
        Some(c) => Json(w.customer_state_json(c, now, lag)).into_response(),
        None => not_found(),
    })
}

// ---- orders and invoices ----

fn customer_filter<'a>(w: &'a World, q: &[(String, String)]) -> Option<Vec<&'a str>> {
    let mut ids: Vec<&str> =
        query_values(q, "customer_id").filter_map(|id| w.customer(id).map(|c| c.id.as_str())).collect();
    let externals: Vec<&str> = query_values(q, "external_customer_id").collect();
    for x in &externals {
        if let Some(c) = w.customer_by_external(x) {
            ids.push(c.id.as_str());
        }
    }
    if query_values(q, "customer_id").next().is_none() && externals.is_empty() {
        None
    } else {
        Some(ids)
    }
}

async fn list_orders(State(s): State<StandIn>, Query(q): Query<Vec<(String, String)>>) -> Response {
    s.read(|w, now| {
        let customers = customer_filter(w, &q);
        let products: Vec<&str> = query_values(&q, "product_id").collect();
        let billing_type = query_values(&q, "product_billing_type").next();
        let mut items: Vec<Value> = w
            .orders
            .iter()
            .filter(|o| customers.as_ref().is_none_or(|c| c.contains(&o.customer_id.as_str())))
            .filter(|o| products.is_empty() || products.contains(&o.product_id.as_str()))
            .filter(|o| query_values(&q, "checkout_id").all(|c| o.checkout_id.as_deref() == Some(c)))
            .filter(|o| query_values(&q, "subscription_id").all(|c| o.subscription_id.as_deref() == Some(c)))
            .filter(|o| match billing_type {
                Some("one_time") => o.subscription_id.is_none(),
                Some("recurring") => o.subscription_id.is_some(),
                _ => true,
            })
            .map(|o| w.order_json(o, now))
            .collect();
        if sort_newest_first(&q) {
            items.reverse();
        }
        list_page(items, &q)
    })
}

async fn get_order(State(s): State<StandIn>, Path(id): Path<String>) -> Response {
    if let Err(r) = uuid_path(&id) {
        return r;
    }
    s.read(|w, now| match w.orders.iter().find(|o| o.id == id) {
        Some(o) => Json(w.order_json(o, now)).into_response(),
        None => not_found(),
    })
}

/// `PATCH /v1/orders/{id}`: billing name and address, before an invoice is generated.
async fn update_order(State(s): State<StandIn>, Path(id): Path<String>, body: Bytes) -> Response {
    if let Err(r) = uuid_path(&id) {
        return r;
    }
    let b = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (name, addr) = match (|| Ok::<_, Response>((opt_str(&b, "billing_name")?, address(&b, "billing_address")?)))() {
        Ok(v) => v,
        Err(r) => return r,
    };
    s.mutate(|w, now, ev| {
        let Some(o) = w.order_mut(&id) else { return not_found() };
        if o.invoice_ready_at.is_some() {
            return polar_error(
                409,
                "InvoiceAlreadyExists",
                "An invoice already exists for this order; it cannot be changed.",
            );
        }
        if b.contains_key("billing_name") {
            o.billing_name = name;
        }
        if addr.is_some() {
            o.billing_address = addr;
        }
        o.modified_at = Some(now);
        let json = w.order_json(w.orders.iter().find(|o| o.id == id).expect("exists"), now);
        ev.0.push(super::ops::Event { event_type: "order.updated".into(), timestamp: now, data: json.clone() });
        Json(json).into_response()
    })
}

async fn generate_invoice(State(s): State<StandIn>, Path(id): Path<String>) -> Response {
    if let Err(r) = uuid_path(&id) {
        return r;
    }
    let delay = s.inner.config.invoice_delay;
    let result = s.mutate(|w, now, _| {
        let Some(o) = w.order_mut(&id) else { return Err(not_found()) };
        if matches!(o.status.as_str(), "draft" | "void" | "pending") {
            return Err(polar_error(
                409,
                "OrderNotEligibleForInvoice",
                &format!("Order {id} is not eligible for an invoice."),
            ));
        }
        if o.billing_name.is_none() || o.billing_address.is_none() {
            return Err(polar_error(
                422,
                "MissingInvoiceBillingDetails",
                "Billing name and address are required to generate an invoice.",
            ));
        }
        if o.invoice_ready_at.is_none() {
            o.invoice_ready_at = Some(now + Duration::from_std(delay).unwrap_or_default());
            return Ok(true);
        }
        Ok(false)
    });
    match result {
        Err(r) => r,
        Ok(scheduled) => {
            if scheduled {
                s.announce_invoice_when_ready(id);
            }
            (StatusCode::ACCEPTED, Json(Value::Null)).into_response()
        }
    }
}

async fn get_invoice(State(s): State<StandIn>, Path(id): Path<String>) -> Response {
    if let Err(r) = uuid_path(&id) {
        return r;
    }
    let ready = s.read(|w, now| w.orders.iter().find(|o| o.id == id).map(|o| o.invoice_generated(now)));
    match ready {
        None => not_found(),
        Some(false) => polar_error(404, "InvoiceDoesNotExist", &format!("No invoice exists for order {id}.")),
        Some(true) => {
            let url = format!("{}/_files/invoices/{id}.pdf?sig={}", s.inner.config.public_url, s.file_signature(&id));
            Json(json!({ "url": url })).into_response()
        }
    }
}

// ---- subscriptions ----

async fn list_subscriptions(State(s): State<StandIn>, Query(q): Query<Vec<(String, String)>>) -> Response {
    s.mutate(|w, _, _| {
        let customers = customer_filter(w, &q);
        let active = query_values(&q, "active").next();
        let mut items: Vec<Value> = w
            .subscriptions
            .iter()
            .filter(|x| customers.as_ref().is_none_or(|c| c.contains(&x.customer_id.as_str())))
            .filter(|x| match active {
                Some("true") => x.ended_at.is_none() && x.status != "canceled",
                Some("false") => x.ended_at.is_some() || x.status == "canceled",
                _ => true,
            })
            .map(|x| w.subscription_json(x))
            .collect();
        if sort_newest_first(&q) {
            items.reverse();
        }
        list_page(items, &q)
    })
}

async fn get_subscription(State(s): State<StandIn>, Path(id): Path<String>) -> Response {
    if let Err(r) = uuid_path(&id) {
        return r;
    }
    s.mutate(|w, _, _| match w.subscriptions.iter().find(|x| x.id == id) {
        Some(x) => Json(w.subscription_json(x)).into_response(),
        None => not_found(),
    })
}

async fn update_subscription(State(s): State<StandIn>, Path(id): Path<String>, body: Bytes) -> Response {
    if let Err(r) = uuid_path(&id) {
        return r;
    }
    let b = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let reason = match opt_str(&b, "customer_cancellation_reason") {
        Ok(r) => r,
        Err(r) => return r,
    };
    const REASONS: [&str; 8] = [
        "customer_service",
        "low_quality",
        "missing_features",
        "switched_service",
        "too_complex",
        "too_expensive",
        "unused",
        "other",
    ];
    if let Some(r) = &reason {
        if !REASONS.contains(&r.as_str()) {
            return invalid("enum", json!(["body", "customer_cancellation_reason"]), "Input should be 'customer_service', 'low_quality', 'missing_features', 'switched_service', 'too_complex', 'too_expensive', 'unused' or 'other'", json!(r));
        }
    }
    let comment = b.get("customer_cancellation_comment").and_then(Value::as_str).map(str::to_string);
    s.mutate(|w, now, ev| {
        if !w.subscriptions.iter().any(|x| x.id == id) {
            return not_found();
        }
        let result = if b.get("revoke") == Some(&Value::Bool(true)) {
            w.revoke_subscription(&id, now, ev)
        } else if let Some(cancel) = b.get("cancel_at_period_end") {
            match cancel.as_bool() {
                Some(c) => w.cancel_at_period_end(&id, c, reason, comment, now, ev),
                None => {
                    return invalid(
                        "bool_type",
                        json!(["body", "cancel_at_period_end"]),
                        "Input should be a valid boolean",
                        cancel.clone(),
                    )
                }
            }
        } else if let Some(product) = b.get("product_id") {
            let Some(product) = product.as_str().filter(|p| uuid::Uuid::parse_str(p).is_ok()) else {
                return invalid(
                    "uuid_parsing",
                    json!(["body", "product_id"]),
                    "Input should be a valid UUID",
                    product.clone(),
                );
            };
            let proration = b.get("proration_behavior").and_then(Value::as_str).unwrap_or("prorate");
            if !["invoice", "prorate", "next_period", "reset"].contains(&proration) {
                return invalid(
                    "enum",
                    json!(["body", "proration_behavior"]),
                    "Input should be 'invoice', 'prorate', 'next_period' or 'reset'",
                    json!(proration),
                );
            }
            w.change_product(&id, product, if proration == "reset" { "invoice" } else { proration }, now, ev)
        } else if b.contains_key("pending_update") && b["pending_update"].is_null() {
            let sub = w.subscription_mut(&id).expect("exists");
            sub.pending_update = None;
            sub.modified_at = Some(now);
            Ok(())
        } else {
            return invalid(
                "missing",
                json!(["body"]),
                "Expected one of: product_id, cancel_at_period_end, revoke, pending_update",
                Value::Object(b.clone()),
            );
        };
        match result {
            Ok(()) => {
                Json(w.subscription_json(w.subscriptions.iter().find(|x| x.id == id).expect("exists"))).into_response()
            }
            Err(r) => refusal(r),
        }
    })
}

async fn revoke_subscription(State(s): State<StandIn>, Path(id): Path<String>) -> Response {
    if let Err(r) = uuid_path(&id) {
        return r;
    }
    s.mutate(|w, now, ev| match w.revoke_subscription(&id, now, ev) {
        Ok(()) => {
            Json(w.subscription_json(w.subscriptions.iter().find(|x| x.id == id).expect("exists"))).into_response()
        }
        Err(r) => refusal(r),
    })
}

// ---- products, events, meters, refunds ----

async fn list_products(State(s): State<StandIn>, Query(q): Query<Vec<(String, String)>>) -> Response {
    s.read(|w, _| {
        let recurring = query_values(&q, "is_recurring").next();
        let ids: Vec<&str> = query_values(&q, "id").collect();
        let items: Vec<Value> = w
            .products
            .iter()
            .filter(|p| match recurring {
                Some("true") => p.recurring_interval.is_some(),
                Some("false") => p.recurring_interval.is_none(),
                _ => true,
            })
            .filter(|p| ids.is_empty() || ids.contains(&p.id.as_str()))
            .map(|p| w.product_json(p))
            .collect();
        list_page(items, &q)
    })
}

async fn get_product(State(s): State<StandIn>, Path(id): Path<String>) -> Response {
    if let Err(r) = uuid_path(&id) {
        return r;
    }
    s.read(|w, _| match w.product(&id) {
        Some(p) => Json(w.product_json(p)).into_response(),
        None => not_found(),
    })
}

async fn ingest_events(State(s): State<StandIn>, body: Bytes) -> Response {
    let b = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(events) = b.get("events").and_then(Value::as_array).cloned() else {
        return invalid("missing", json!(["body", "events"]), "Field required", Value::Object(b.clone()));
    };
    s.mutate(|w, now, _| {
        // All or nothing: check every event first.
        let mut parsed = vec![];
        for (i, e) in events.iter().enumerate() {
            let Some(name) = e.get("name").and_then(Value::as_str).filter(|n| !n.is_empty() && n.len() <= 128) else {
                return invalid("missing", json!(["body", "events", i, "name"]), "Field required", e.clone());
            };
            let customer_id = e.get("customer_id").and_then(Value::as_str).map(str::to_string);
            let external = e.get("external_customer_id").and_then(Value::as_str).map(str::to_string);
            match (&customer_id, &external) {
                (Some(c), _) if w.customer(c).is_none() => {
                    return invalid(
                        "value_error",
                        json!(["body", "events", i, "customer_id"]),
                        "Customer does not exist.",
                        json!(c),
                    )
                }
                (None, None) => {
                    return invalid(
                        "missing",
                        json!(["body", "events", i, "external_customer_id"]),
                        "Field required",
                        e.clone(),
                    )
                }
                _ => {}
            }
            let timestamp = e
                .get("timestamp")
                .and_then(Value::as_str)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or(now);
            parsed.push(super::world::IngestedEvent {
                name: name.into(),
                external_id: e.get("external_id").and_then(Value::as_str).map(str::to_string),
                external_customer_id: external,
                customer_id,
                timestamp,
            });
        }
        let (mut inserted, mut duplicates) = (0, 0);
        for e in parsed {
            if e.external_id.is_some() && w.events.iter().any(|x| x.external_id == e.external_id) {
                duplicates += 1;
            } else {
                w.events.push(e);
                inserted += 1;
            }
        }
        Json(json!({ "inserted": inserted, "duplicates": duplicates })).into_response()
    })
}

/// The catalogue has no meters (Tally meters credits itself), so every customer's list is empty.
async fn list_customer_meters(State(_s): State<StandIn>, Query(q): Query<Vec<(String, String)>>) -> Response {
    list_page(vec![], &q)
}

async fn create_refund(State(s): State<StandIn>, body: Bytes) -> Response {
    let b = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(order_id) = b.get("order_id").and_then(Value::as_str).map(str::to_string) else {
        return invalid("missing", json!(["body", "order_id"]), "Field required", Value::Object(b.clone()));
    };
    let reason = b.get("reason").and_then(Value::as_str).unwrap_or("customer_request").to_string();
    // Required, in net cents (before tax), like Polar's `RefundCreate.amount`.
    let Some(amount) = b.get("amount").and_then(Value::as_i64) else {
        return invalid("missing", json!(["body", "amount"]), "Field required", Value::Object(b.clone()));
    };
    if amount <= 0 {
        return invalid("greater_than", json!(["body", "amount"]), "Input should be greater than 0", json!(amount));
    }
    s.mutate(|w, now, ev| match w.refund_order(&order_id, Some(amount), &reason, now, ev) {
        Ok(id) => (StatusCode::CREATED, Json(w.refund_json(w.refunds.iter().find(|r| r.id == id).expect("exists"))))
            .into_response(),
        Err(r) => refusal(r),
    })
}
