//! Ingested events and the meters that sum them, as Polar computes them for a customer.

use super::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IngestedEvent {
    pub name: String,
    pub external_id: Option<String>,
    pub external_customer_id: Option<String>,
    pub customer_id: Option<String>,
    pub timestamp: DateTime<Utc>,
    /// When the stand-in received it: customer meters count it once they are recomputed.
    #[serde(default = "Utc::now")]
    pub received_at: DateTime<Utc>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// The stand-in's meters: Tally's usage events and its overage events, each summed by their
/// `metadata.credits` (filter `name eq <event>`, aggregation `sum`).
pub fn credits_meter_id() -> String {
    crate::server::catalog::stable_uuid("meter:credits")
}

/// The meter the plans' metered prices bill: `credits.overage` events.
pub fn overage_meter_id() -> String {
    crate::server::catalog::standin_overage_meter_id()
}

/// A meter: which events it sums.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meter {
    pub id: String,
    pub name: &'static str,
    /// The event name its filter matches.
    pub event: &'static str,
}

/// Every meter the stand-in has.
pub fn meters() -> [Meter; 2] {
    [
        Meter { id: credits_meter_id(), name: "API credits", event: crate::server::usage::EVENT_NAME },
        Meter { id: overage_meter_id(), name: "API credits overage", event: crate::server::usage::OVERAGE_EVENT_NAME },
    ]
}

impl World {
    /// Units credited to `meter_id` for `c` (`meter.credited` system events) received in
    /// `[from, to)`.
    pub fn credited_units(&self, c: &Customer, meter_id: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
        self.system_events(c, "meter.credited", meter_id)
            .filter(|e| e.received_at >= from && e.received_at < to)
            .filter_map(|e| e.metadata.get("units").and_then(Value::as_i64))
            .sum()
    }

    /// Where `c`'s meter `meter_id` counts from at `at`: its last `meter.reset`, else always.
    pub fn meter_window_start(&self, c: &Customer, meter_id: &str, at: DateTime<Utc>) -> DateTime<Utc> {
        self.system_events(c, "meter.reset", meter_id)
            .filter(|e| e.received_at <= at)
            .map(|e| e.received_at)
            .max()
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    fn system_events<'a>(
        &'a self,
        c: &'a Customer,
        name: &'a str,
        meter_id: &'a str,
    ) -> impl Iterator<Item = &'a IngestedEvent> {
        self.events.iter().filter(move |e| {
            e.name == name
                && e.customer_id.as_deref() == Some(c.id.as_str())
                && e.metadata.get("meter_id").and_then(Value::as_str) == Some(meter_id)
        })
    }

    /// `(consumed, credited)` of `c`'s meter as recomputed at `at`: since its last reset.
    pub fn meter_totals(&self, c: &Customer, meter: &Meter, at: DateTime<Utc>) -> (i64, i64) {
        let from = self.meter_window_start(c, &meter.id, at);
        // `at` itself included: what was received at the recompute instant counts.
        let to = at + Duration::microseconds(1);
        (self.event_units(c, meter.event, from, to), self.credited_units(c, &meter.id, from, to))
    }

    /// The units of `event` events of customer `c` Polar received in `[from, to)`.
    pub fn event_units(&self, c: &Customer, event: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
        self.events
            .iter()
            .filter(|e| e.received_at >= from && e.received_at < to && e.name == event)
            .filter(|e| {
                e.customer_id.as_deref() == Some(c.id.as_str())
                    || (e.external_customer_id.is_some() && e.external_customer_id == c.external_id)
            })
            .filter_map(|e| e.metadata.get(crate::server::usage::UNITS_PROPERTY).and_then(Value::as_i64))
            .sum()
    }

    /// Whether Polar lists meter `m` for `c`: once something was counted or credited in it.
    pub fn meter_counted(&self, c: &Customer, m: &Meter) -> bool {
        self.event_units(c, m.event, DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC) != 0
            || self.system_events(c, "meter.credited", &m.id).next().is_some()
    }

    pub fn meter_json(&self, m: &Meter, created_at: DateTime<Utc>) -> Value {
        json!({
            "id": m.id,
            "created_at": ts(created_at),
            "modified_at": null,
            "name": m.name,
            "unit": "scalar",
            "filter": { "conjunction": "and", "clauses": [{ "property": "name", "operator": "eq", "value": m.event }] },
            "aggregation": { "func": "sum", "property": format!("metadata.{}", crate::server::usage::UNITS_PROPERTY) },
            "organization_id": self.org.as_ref().map(|o| o.id.clone()),
            "metadata": {},
            "archived_at": null,
        })
    }

    /// A customer's meter state as Polar computes it from the events it received, recomputed
    /// as of `at` (Polar debounces recomputation; callers pass now − lag): Customer State's
    /// `active_meters` item, which `customer_meter_json` extends.
    pub fn meter_state_json(&self, c: &Customer, m: &Meter, at: DateTime<Utc>) -> Value {
        let (consumed, credited) = self.meter_totals(c, m, at);
        json!({
            "id": crate::server::catalog::stable_uuid(&format!("customer-meter:{}:{}", c.id, m.id)),
            "created_at": ts(c.created_at), "modified_at": null, "meter_id": m.id,
            "consumed_units": consumed as f64, "credited_units": credited, "balance": (credited - consumed) as f64,
        })
    }

    /// `CustomerMeter`: the meter state with its customer and meter.
    pub fn customer_meter_json(&self, c: &Customer, m: &Meter, at: DateTime<Utc>) -> Value {
        let mut v = self.meter_state_json(c, m, at);
        v["customer_id"] = json!(c.id);
        v["customer"] = self.customer_json(c);
        v["meter"] = self.meter_json(m, c.created_at);
        v
    }
}
