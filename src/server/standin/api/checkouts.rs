//! `/v1/checkouts/` and `/v1/customer-sessions/`: hosted checkouts and portal sessions.

use super::*;

pub(super) async fn create_checkout(State(s): State<StandIn>, body: Bytes) -> Response {
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
        let checkout = crate::server::standin::world::Checkout {
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
        _ev.0.push(crate::server::standin::ops::Event {
            event_type: "checkout.created".into(),
            timestamp: now,
            data: json.clone(),
        });
        (StatusCode::CREATED, Json(json)).into_response()
    })
}

pub(super) async fn list_checkouts(State(s): State<StandIn>, Query(q): Query<Vec<(String, String)>>) -> Response {
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

pub(super) async fn get_checkout(State(s): State<StandIn>, Path(id): Path<String>) -> Response {
    if let Err(r) = uuid_path(&id) {
        return r;
    }
    s.mutate(|w, _, _| match w.checkouts.iter().find(|c| c.id == id) {
        Some(c) => Json(w.checkout_json(c)).into_response(),
        None => not_found(),
    })
}

// ---- customer sessions ----

pub(super) async fn create_session(State(s): State<StandIn>, body: Bytes) -> Response {
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
