//! `/v1/events/ingest` and `/v1/customer-meters/`: usage events and meters.

use super::*;

pub(super) async fn ingest_events(State(s): State<StandIn>, body: Bytes) -> Response {
    let b = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(events) = b.get("events").and_then(Value::as_array).cloned() else {
        return invalid("missing", json!(["body", "events"]), "Field required", Value::Object(b.clone()));
    };
    let refused = lock(&s.inner.controls).refuse_events.clone();
    s.mutate(|w, now, _| {
        // All or nothing: check every event first.
        let mut parsed = vec![];
        for (i, e) in events.iter().enumerate() {
            let Some(name) = e.get("name").and_then(Value::as_str).filter(|n| !n.is_empty() && n.len() <= 128) else {
                return invalid("missing", json!(["body", "events", i, "name"]), "Field required", e.clone());
            };
            if let Some(x) = e.get("external_id").and_then(Value::as_str).filter(|x| refused.iter().any(|r| r == x)) {
                return invalid("value_error", json!(["body", "events", i, "external_id"]), "Event refused.", json!(x));
            }
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
            parsed.push(crate::server::standin::world::IngestedEvent {
                name: name.into(),
                external_id: e.get("external_id").and_then(Value::as_str).map(str::to_string),
                external_customer_id: external,
                customer_id,
                timestamp,
                received_at: now,
                metadata: e.get("metadata").and_then(Value::as_object).cloned().unwrap_or_default(),
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

/// Each customer's meters (the stand-in has one, `credits_meter_id`), computed from the
/// events ingested for them, recomputed `POLAR_STANDIN_STATE_LAG_MS` behind as Polar's are.
pub(super) async fn list_customer_meters(State(s): State<StandIn>, Query(q): Query<Vec<(String, String)>>) -> Response {
    let lag = Duration::from_std(s.inner.config.state_lag).unwrap_or_default();
    let external: Vec<&str> = query_values(&q, "external_customer_id").collect();
    let customers: Vec<&str> = query_values(&q, "customer_id").collect();
    let meters: Vec<&str> = query_values(&q, "meter_id").collect();
    let items = s.read(|w, now| {
        w.customers
            .iter()
            .filter(|c| c.deleted_at.is_none())
            .filter(|c| external.is_empty() || c.external_id.as_deref().is_some_and(|x| external.contains(&x)))
            .filter(|c| customers.is_empty() || customers.contains(&c.id.as_str()))
            .filter(|_| {
                meters.is_empty() || meters.contains(&crate::server::standin::world::credits_meter_id().as_str())
            })
            .map(|c| w.customer_meter_json(c, now, lag))
            .collect::<Vec<_>>()
    });
    list_page(items, &q)
}
