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
    let (res, touched) = s.mutate(|w, now, _| {
        // All or nothing: check every event first.
        let mut parsed = vec![];
        for (i, e) in events.iter().enumerate() {
            let Some(name) = e.get("name").and_then(Value::as_str).filter(|n| !n.is_empty() && n.len() <= 128) else {
                return (invalid("missing", json!(["body", "events", i, "name"]), "Field required", e.clone()), vec![]);
            };
            if let Some(x) = e.get("external_id").and_then(Value::as_str).filter(|x| refused.iter().any(|r| r == x)) {
                return (
                    invalid("value_error", json!(["body", "events", i, "external_id"]), "Event refused.", json!(x)),
                    vec![],
                );
            }
            let customer_id = e.get("customer_id").and_then(Value::as_str).map(str::to_string);
            let external = e.get("external_customer_id").and_then(Value::as_str).map(str::to_string);
            match (&customer_id, &external) {
                (Some(c), _) if w.customer(c).is_none() => {
                    let r = invalid(
                        "value_error",
                        json!(["body", "events", i, "customer_id"]),
                        "Customer does not exist.",
                        json!(c),
                    );
                    return (r, vec![]);
                }
                (None, None) => {
                    let r = invalid(
                        "missing",
                        json!(["body", "events", i, "external_customer_id"]),
                        "Field required",
                        e.clone(),
                    );
                    return (r, vec![]);
                }
                _ => {}
            }
            // Polar's rule: a timestamp is optional (default now), must parse, and must not
            // be in the future.
            let timestamp = match e.get("timestamp") {
                None | Some(Value::Null) => now,
                Some(t) => match t.as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok()) {
                    Some(t) if t.with_timezone(&Utc) <= now => t.with_timezone(&Utc),
                    Some(_) => {
                        let r = invalid(
                            "value_error",
                            json!(["body", "events", i, "timestamp"]),
                            "Value error, Timestamp must be in the past.",
                            t.clone(),
                        );
                        return (r, vec![]);
                    }
                    None => {
                        let r = invalid(
                            "datetime_from_date_parsing",
                            json!(["body", "events", i, "timestamp"]),
                            "Input should be a valid datetime or date",
                            t.clone(),
                        );
                        return (r, vec![]);
                    }
                },
            };
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
        // Dedupe on external_id is permanent, as Polar's unique index is (and as cheap).
        if w.event_ids.is_empty() && !w.events.is_empty() {
            w.event_ids = w.events.iter().filter_map(|e| e.external_id.clone()).collect();
        }
        let (mut inserted, mut duplicates) = (0, 0);
        let mut touched = std::collections::BTreeSet::new();
        for e in parsed {
            if let Some(id) = &e.external_id {
                if !w.event_ids.insert(id.clone()) {
                    duplicates += 1;
                    continue;
                }
            }
            let customer = e.customer_id.clone().or_else(|| {
                e.external_customer_id.as_deref().and_then(|x| w.customer_by_external(x)).map(|c| c.id.clone())
            });
            touched.extend(customer);
            w.events.push(e);
            inserted += 1;
        }
        (Json(json!({ "inserted": inserted, "duplicates": duplicates })).into_response(), touched.into_iter().collect())
    });
    s.recompute_meters_later(touched);
    res
}

/// Each customer's meters (`world::meters`), computed from the events ingested for them,
/// recomputed `POLAR_STANDIN_STATE_LAG_MS` behind as Polar's are; a meter is listed for a
/// customer once an event of theirs counts in it.
pub(super) async fn list_customer_meters(State(s): State<StandIn>, Query(q): Query<Vec<(String, String)>>) -> Response {
    let lag = Duration::from_std(s.inner.config.state_lag).unwrap_or_default();
    let external: Vec<&str> = query_values(&q, "external_customer_id").collect();
    let customers: Vec<&str> = query_values(&q, "customer_id").collect();
    let meter_ids: Vec<&str> = query_values(&q, "meter_id").collect();
    let meters: Vec<_> = crate::server::standin::world::meters()
        .into_iter()
        .filter(|m| meter_ids.is_empty() || meter_ids.contains(&m.id.as_str()))
        .collect();
    let items = s.read(|w, now| {
        w.customers
            .iter()
            .filter(|c| c.deleted_at.is_none())
            .filter(|c| external.is_empty() || c.external_id.as_deref().is_some_and(|x| external.contains(&x)))
            .filter(|c| customers.is_empty() || customers.contains(&c.id.as_str()))
            .flat_map(|c| meters.iter().map(move |m| (c, m)))
            // Polar lists a customer's meter once it has counted something for them.
            .filter(|(c, m)| w.meter_counted(c, m))
            .map(|(c, m)| w.customer_meter_json(c, m, now - lag))
            .collect::<Vec<_>>()
    });
    list_page(items, &q)
}
