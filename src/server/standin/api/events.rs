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
            parsed.push(crate::server::standin::world::IngestedEvent {
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
pub(super) async fn list_customer_meters(
    State(_s): State<StandIn>,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    list_page(vec![], &q)
}
