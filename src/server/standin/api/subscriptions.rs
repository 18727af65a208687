//! `/v1/subscriptions/`: listing, plan changes (with proration), cancel at period end and undo, revocation.

use super::orders::customer_filter;
use super::*;

pub(super) async fn list_subscriptions(State(s): State<StandIn>, Query(q): Query<Vec<(String, String)>>) -> Response {
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

pub(super) async fn get_subscription(State(s): State<StandIn>, Path(id): Path<String>) -> Response {
    if let Err(r) = uuid_path(&id) {
        return r;
    }
    s.mutate(|w, _, _| match w.subscriptions.iter().find(|x| x.id == id) {
        Some(x) => Json(w.subscription_json(x)).into_response(),
        None => not_found(),
    })
}

pub(super) async fn update_subscription(State(s): State<StandIn>, Path(id): Path<String>, body: Bytes) -> Response {
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

pub(super) async fn revoke_subscription(State(s): State<StandIn>, Path(id): Path<String>) -> Response {
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
