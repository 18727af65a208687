//! `/v1/orders/` and `/v1/refunds/`: orders, their billing details and invoices, and refunds.

use super::*;

pub(super) fn customer_filter<'a>(w: &'a World, q: &[(String, String)]) -> Option<Vec<&'a str>> {
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

pub(super) async fn list_orders(State(s): State<StandIn>, Query(q): Query<Vec<(String, String)>>) -> Response {
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

pub(super) async fn get_order(State(s): State<StandIn>, Path(id): Path<String>) -> Response {
    if let Err(r) = uuid_path(&id) {
        return r;
    }
    s.read(|w, now| match w.orders.iter().find(|o| o.id == id) {
        Some(o) => Json(w.order_json(o, now)).into_response(),
        None => not_found(),
    })
}

/// `PATCH /v1/orders/{id}`: billing name and address, before an invoice is generated.
pub(super) async fn update_order(State(s): State<StandIn>, Path(id): Path<String>, body: Bytes) -> Response {
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
        ev.0.push(crate::server::standin::ops::Event {
            event_type: "order.updated".into(),
            timestamp: now,
            data: json.clone(),
        });
        Json(json).into_response()
    })
}

pub(super) async fn generate_invoice(State(s): State<StandIn>, Path(id): Path<String>) -> Response {
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

pub(super) async fn get_invoice(State(s): State<StandIn>, Path(id): Path<String>) -> Response {
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

pub(super) async fn create_refund(State(s): State<StandIn>, body: Bytes) -> Response {
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
