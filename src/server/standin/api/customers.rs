//! `/v1/customers/`: customers by external id, their billing details and tax ids, and their Customer State.

use super::*;

/// Checks a tax id against the billing country, as Polar does on create and update.
pub(super) fn tax_id_for(tax_id: &str, country: Option<&str>) -> Result<(String, String), Response> {
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

pub(super) async fn create_customer(State(s): State<StandIn>, body: Bytes) -> Response {
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

pub(super) async fn list_customers(State(s): State<StandIn>, Query(q): Query<Vec<(String, String)>>) -> Response {
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

pub(super) async fn get_customer(State(s): State<StandIn>, Path(external_id): Path<String>) -> Response {
    s.read(|w, _| match w.customer_by_external(&external_id) {
        Some(c) => Json(w.customer_json(c)).into_response(),
        None => not_found(),
    })
}

pub(super) async fn update_customer(
    State(s): State<StandIn>,
    Path(external_id): Path<String>,
    body: Bytes,
) -> Response {
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

pub(super) async fn delete_customer(
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

pub(super) async fn customer_state(State(s): State<StandIn>, Path(external_id): Path<String>) -> Response {
    let lag = Duration::from_std(s.inner.config.state_lag).unwrap_or_default();
    s.read(|w, now| match w.customer_by_external(&external_id) {
        Some(c) => Json(w.customer_state_json(c, now, lag)).into_response(),
        None => not_found(),
    })
}
