//! The stand-in's data: one organization's catalogue, customers, checkouts, orders,
//! subscriptions and benefit grants, and how each is written on the wire. The JSON follows
//! Polar's 2026-04 schemas as docs/polar-contract.md §7 asks: every required key present (nullable ones as
//! `null`), the newer optional keys (`units`, item timestamps) as `null`, times in UTC with `Z`,
//! integer cents, and non-null `invoice_number`/`avatar_url` so the 0.47.x SDK parses them.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use uuid::Uuid;

pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn opt_ts(t: Option<DateTime<Utc>>) -> Value {
    t.map(|t| Value::String(ts(t))).unwrap_or(Value::Null)
}

pub fn new_id() -> String {
    Uuid::new_v4().to_string()
}

pub use crate::server::catalog::stable_uuid as stable_id;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Org {
    pub id: String,
    pub name: String,
    pub slug: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Benefit {
    pub id: String,
    pub description: String,
    pub metadata: Map<String, Value>,
    pub created_at: DateTime<Utc>,
    /// A `meter_credit` benefit: `units` credited to `meter_id` at the grant and at every
    /// cycle (the meter reset first unless `rollover`). `None`: a `custom` benefit.
    #[serde(default)]
    pub meter_credit: Option<MeterCredit>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterCredit {
    pub units: i64,
    pub rollover: bool,
    pub meter_id: String,
}

impl Benefit {
    pub fn kind(&self) -> &'static str {
        if self.meter_credit.is_some() {
            "meter_credit"
        } else {
            "custom"
        }
    }

    pub fn properties(&self) -> Value {
        match &self.meter_credit {
            Some(m) => json!({ "units": m.units, "rollover": m.rollover, "meter_id": m.meter_id }),
            None => json!({ "note": null }),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Product {
    pub id: String,
    pub price_id: String,
    pub name: String,
    pub description: Option<String>,
    /// `Some("month")` for subscriptions, `None` for one-time products.
    pub recurring_interval: Option<String>,
    pub price_amount: i64,
    pub currency: String,
    pub metadata: Map<String, Value>,
    pub benefits: Vec<Benefit>,
    pub trial_days: Option<i64>,
    pub created_at: DateTime<Utc>,
    /// A second, `metered_unit` price on the overage meter ([`overage_meter_id`]): cents per
    /// credit and the cap per period. Billed at each cycle end (`run_renewals`).
    #[serde(default)]
    pub overage: Option<crate::domain::usage::OverageTerms>,
    /// The meter the metered price bills: the overage meter (Tally's catalogue), or the
    /// credits meter when the plan credits units to it (`StandinConfig::meter_credits`).
    #[serde(default = "overage_meter_id")]
    pub metered_meter_id: String,
}

impl Product {
    /// The id of the product's metered price.
    pub fn metered_price_id(&self) -> String {
        crate::server::catalog::stable_uuid(&format!("metered-price/{}", self.id))
    }
}

/// Polar's `Address`: the client's wire type, which serializes every key (`null` included).
pub use crate::server::polar::models::Address;

fn address_json(a: &Address) -> Value {
    serde_json::to_value(a).expect("serializable")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Customer {
    pub id: String,
    pub external_id: Option<String>,
    pub email: String,
    pub name: Option<String>,
    pub billing_name: Option<String>,
    pub billing_address: Option<Address>,
    /// `(value, format)`, e.g. `("FR61954506077", "eu_vat")`.
    pub tax_id: Option<(String, String)>,
    pub metadata: Map<String, Value>,
    pub created_at: DateTime<Utc>,
    pub modified_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
    /// The external id a deleted customer had (Polar keeps it internally and shows it on
    /// `customer.deleted`).
    pub saved_external_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkout {
    pub id: String,
    pub client_secret: String,
    pub status: String,
    pub product_ids: Vec<String>,
    pub product_id: String,
    pub external_customer_id: Option<String>,
    pub customer_id: Option<String>,
    pub customer_email: Option<String>,
    pub customer_name: Option<String>,
    pub customer_billing_name: Option<String>,
    pub customer_billing_address: Option<Address>,
    pub customer_tax_id: Option<String>,
    pub success_url: Option<String>,
    pub return_url: Option<String>,
    pub metadata: Map<String, Value>,
    pub customer_metadata: Map<String, Value>,
    pub allow_discount_codes: bool,
    pub require_billing_address: bool,
    pub is_business_customer: bool,
    pub allow_trial: bool,
    pub created_at: DateTime<Utc>,
    pub modified_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    /// What the hosted page shows after a failed payment attempt.
    pub last_error: Option<String>,
    pub subscription_id: Option<String>,
    pub order_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub status: String,
    pub customer_id: String,
    pub product_id: String,
    pub subscription_id: Option<String>,
    pub checkout_id: Option<String>,
    pub billing_reason: String,
    /// Net amount (before tax; no discounts here).
    pub amount: i64,
    /// Sales tax charged on top of `amount` (see `standin::tax`).
    #[serde(default)]
    pub tax_amount: i64,
    pub currency: String,
    /// Net amount refunded so far, and the tax refunded with it.
    pub refunded_amount: i64,
    #[serde(default)]
    pub refunded_tax_amount: i64,
    pub billing_name: Option<String>,
    pub billing_address: Option<Address>,
    pub invoice_number: String,
    /// Set when generation was asked for; the invoice exists from this time on.
    pub invoice_ready_at: Option<DateTime<Utc>>,
    pub description: String,
    pub proration: bool,
    pub metadata: Map<String, Value>,
    pub created_at: DateTime<Utc>,
    pub modified_at: Option<DateTime<Utc>>,
}

impl Order {
    pub fn invoice_generated(&self, now: DateTime<Utc>) -> bool {
        self.invoice_ready_at.is_some_and(|t| t <= now)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingUpdate {
    pub id: String,
    pub product_id: String,
    pub applies_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub customer_id: String,
    pub product_id: String,
    pub status: String,
    pub amount: i64,
    pub currency: String,
    pub current_period_start: DateTime<Utc>,
    pub current_period_end: DateTime<Utc>,
    pub trial_start: Option<DateTime<Utc>>,
    pub trial_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub canceled_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub past_due_at: Option<DateTime<Utc>>,
    pub checkout_id: Option<String>,
    pub customer_cancellation_reason: Option<String>,
    pub customer_cancellation_comment: Option<String>,
    pub pending_update: Option<PendingUpdate>,
    pub metadata: Map<String, Value>,
    pub created_at: DateTime<Utc>,
    pub modified_at: Option<DateTime<Utc>>,
}

impl Subscription {
    pub fn is_active(&self) -> bool {
        matches!(self.status.as_str(), "active" | "trialing")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Grant {
    pub id: String,
    pub customer_id: String,
    pub benefit_id: String,
    pub subscription_id: Option<String>,
    pub order_id: Option<String>,
    pub granted_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub modified_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub token: String,
    pub customer_id: String,
    pub return_url: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refund {
    pub id: String,
    pub order_id: String,
    /// Net amount refunded, and the tax refunded with it.
    pub amount: i64,
    #[serde(default)]
    pub tax_amount: i64,
    pub reason: String,
    pub created_at: DateTime<Utc>,
}

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

/// Everything the stand-in knows. Lists keep creation order, which is the order Polar lists
/// in by default here (`-created_at` is applied when listing).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct World {
    pub org: Option<Org>,
    pub products: Vec<Product>,
    pub customers: Vec<Customer>,
    pub checkouts: Vec<Checkout>,
    pub orders: Vec<Order>,
    pub subscriptions: Vec<Subscription>,
    pub grants: Vec<Grant>,
    pub sessions: Vec<Session>,
    pub refunds: Vec<Refund>,
    pub events: Vec<IngestedEvent>,
    /// The `external_id`s of `events`, as Polar's unique index (rebuilt after a load).
    #[serde(skip)]
    pub event_ids: std::collections::HashSet<String>,
    pub invoice_counter: i64,
    /// Where the hosted pages live (checkout, portal), e.g. `http://127.0.0.1:3000/polar`.
    #[serde(skip)]
    pub frontend_url: String,
}

impl World {
    pub fn org(&self) -> &Org {
        self.org.as_ref().expect("the stand-in is seeded at start")
    }
    /// A subscription product's `recurring_interval` (`month` when unknown).
    pub fn interval_of(&self, product_id: &str) -> String {
        self.product(product_id).and_then(|p| p.recurring_interval.clone()).unwrap_or_else(|| "month".into())
    }

    pub fn product(&self, id: &str) -> Option<&Product> {
        self.products.iter().find(|p| p.id == id)
    }
    pub fn customer(&self, id: &str) -> Option<&Customer> {
        self.customers.iter().find(|c| c.id == id)
    }
    pub fn customer_mut(&mut self, id: &str) -> Option<&mut Customer> {
        self.customers.iter_mut().find(|c| c.id == id)
    }
    /// The live (not deleted) customer with this external id.
    pub fn customer_by_external(&self, external_id: &str) -> Option<&Customer> {
        self.customers.iter().find(|c| c.deleted_at.is_none() && c.external_id.as_deref() == Some(external_id))
    }
    pub fn customer_by_email(&self, email: &str) -> Option<&Customer> {
        self.customers.iter().find(|c| c.deleted_at.is_none() && c.email.eq_ignore_ascii_case(email))
    }
    pub fn checkout_mut(&mut self, id: &str) -> Option<&mut Checkout> {
        self.checkouts.iter_mut().find(|c| c.id == id)
    }
    pub fn order_mut(&mut self, id: &str) -> Option<&mut Order> {
        self.orders.iter_mut().find(|o| o.id == id)
    }
    pub fn subscription_mut(&mut self, id: &str) -> Option<&mut Subscription> {
        self.subscriptions.iter_mut().find(|s| s.id == id)
    }
    pub fn benefit(&self, id: &str) -> Option<&Benefit> {
        self.products.iter().flat_map(|p| &p.benefits).find(|b| b.id == id)
    }

    // ---- wire shapes ----

    pub fn customer_json(&self, c: &Customer) -> Value {
        let external_id =
            c.external_id.clone().or_else(|| if c.deleted_at.is_some() { c.saved_external_id.clone() } else { None });
        json!({
            "id": c.id, "created_at": ts(c.created_at), "modified_at": opt_ts(c.modified_at), "metadata": c.metadata,
            "external_id": external_id, "email": c.email, "email_verified": false, "type": "individual",
            "name": c.name, "billing_name": c.billing_name, "billing_address": c.billing_address.as_ref().map(address_json),
            "tax_id": c.tax_id.as_ref().map(|(v, f)| json!([v, f])), "locale": null, "organization_id": self.org().id,
            "default_payment_method_id": null, "deleted_at": opt_ts(c.deleted_at), "first_user_event_at": null,
            "avatar_url": format!("https://www.gravatar.com/avatar/{}?d=404", hex::encode(&c.id.as_bytes()[..16])),
        })
    }

    pub fn benefit_json(&self, b: &Benefit) -> Value {
        json!({
            "id": b.id, "created_at": ts(b.created_at), "modified_at": null, "type": b.kind(), "description": b.description,
            "selectable": true, "deletable": true, "is_deleted": false, "organization_id": self.org().id, "metadata": b.metadata,
            "visibility": "visible", "visibility_configurable": true, "properties": b.properties(),
        })
    }

    /// A product's prices: its fixed price, and its metered price when it bills overage.
    pub fn prices_json(&self, p: &Product) -> Value {
        let mut prices = vec![self.price_json(p)];
        if let Some(o) = p.overage {
            let meter = p.metered_meter_id.clone();
            let name = meters().into_iter().find(|m| m.id == meter).map_or("API credits overage", |m| m.name);
            prices.push(json!({
                "created_at": ts(p.created_at), "modified_at": null, "id": p.metered_price_id(), "source": "catalog",
                "amount_type": "metered_unit", "price_currency": p.currency, "tax_behavior": null, "is_archived": false,
                "product_id": p.id, "unit_amount": o.unit_cents.to_string(), "cap_amount": o.cap_cents,
                "meter_id": meter,
                "meter": { "id": meter, "name": name, "unit": "scalar", "custom_label": null, "custom_multiplier": null },
            }));
        }
        Value::Array(prices)
    }

    pub fn price_json(&self, p: &Product) -> Value {
        let mut price = json!({
            "created_at": ts(p.created_at), "modified_at": null, "id": p.price_id, "source": "catalog", "amount_type": "fixed",
            "price_currency": p.currency, "tax_behavior": null, "is_archived": false, "product_id": p.id, "price_amount": p.price_amount,
        });
        if let Some(interval) = &p.recurring_interval {
            price["type"] = json!("recurring");
            price["recurring_interval"] = json!(interval);
        } else {
            price["type"] = json!("one_time");
        }
        price
    }

    /// The product without prices and benefits (`OrderProduct`, `CheckoutProduct` base).
    fn product_base_json(&self, p: &Product) -> Value {
        json!({
            "metadata": p.metadata, "id": p.id, "created_at": ts(p.created_at), "modified_at": null,
            "trial_interval": p.trial_days.map(|_| "day"), "trial_interval_count": p.trial_days,
            "name": p.name, "description": p.description, "visibility": "public",
            "recurring_interval": p.recurring_interval, "recurring_interval_count": p.recurring_interval.as_ref().map(|_| 1),
            "meter_interval": null, "meter_interval_count": null, "is_recurring": p.recurring_interval.is_some(),
            "is_archived": false, "organization_id": self.org().id,
        })
    }

    pub fn product_json(&self, p: &Product) -> Value {
        let mut v = self.product_base_json(p);
        v["prices"] = self.prices_json(p);
        v["benefits"] = Value::Array(p.benefits.iter().map(|b| self.benefit_json(b)).collect());
        v["medias"] = json!([]);
        v["attached_custom_fields"] = json!([]);
        v
    }

    /// Subscription fields without the nested objects (`OrderSubscription`).
    fn subscription_base_json(&self, s: &Subscription) -> Value {
        json!({
            "metadata": s.metadata, "created_at": ts(s.created_at), "modified_at": opt_ts(s.modified_at), "id": s.id,
            "amount": s.amount, "currency": s.currency, "recurring_interval": self.interval_of(&s.product_id), "recurring_interval_count": 1,
            "status": s.status, "current_period_start": ts(s.current_period_start), "current_period_end": ts(s.current_period_end),
            "current_meter_period_start": null, "current_meter_period_end": null,
            "trial_start": opt_ts(s.trial_start), "trial_end": opt_ts(s.trial_end),
            "cancel_at_period_end": s.cancel_at_period_end, "canceled_at": opt_ts(s.canceled_at),
            "started_at": opt_ts(s.started_at), "ends_at": opt_ts(s.ends_at), "ended_at": opt_ts(s.ended_at),
            "past_due_at": opt_ts(s.past_due_at), "pause_at_period_end": false, "paused_at": null, "resumes_at": null,
            "customer_id": s.customer_id, "product_id": s.product_id, "discount_id": null, "checkout_id": s.checkout_id,
            "seats": null, "customer_cancellation_reason": s.customer_cancellation_reason,
            "customer_cancellation_comment": s.customer_cancellation_comment, "units": null,
        })
    }

    pub fn subscription_json(&self, s: &Subscription) -> Value {
        let mut v = self.subscription_base_json(s);
        let product = self.product(&s.product_id).expect("subscriptions point at catalogue products");
        v["custom_field_data"] = json!({});
        v["customer"] = self.customer(&s.customer_id).map(|c| self.customer_json(c)).unwrap_or(Value::Null);
        v["product"] = self.product_json(product);
        v["discount"] = Value::Null;
        v["prices"] = self.prices_json(product);
        v["meters"] = json!([]);
        v["pending_update"] = match &s.pending_update {
            Some(u) => {
                json!({ "created_at": ts(u.created_at), "modified_at": null, "id": u.id, "applies_at": ts(u.applies_at), "product_id": u.product_id, "seats": null })
            }
            None => Value::Null,
        };
        v
    }

    pub fn order_json(&self, o: &Order, now: DateTime<Utc>) -> Value {
        let product = self.product(&o.product_id).expect("orders point at catalogue products");
        let refundable = (o.amount - o.refunded_amount).max(0);
        let total = o.amount + o.tax_amount;
        json!({
            "id": o.id, "created_at": ts(o.created_at), "modified_at": opt_ts(o.modified_at), "status": o.status,
            "paid": matches!(o.status.as_str(), "paid" | "refunded" | "partially_refunded"),
            "subtotal_amount": o.amount, "discount_amount": 0, "net_amount": o.amount, "tax_amount": o.tax_amount, "total_amount": total,
            "applied_balance_amount": 0, "due_amount": if o.status == "pending" { total } else { 0 },
            "refunded_amount": o.refunded_amount, "refunded_tax_amount": o.refunded_tax_amount, "currency": o.currency,
            "billing_reason": o.billing_reason, "billing_name": o.billing_name,
            "billing_address": o.billing_address.as_ref().map(address_json),
            "invoice_number": o.invoice_number, "is_invoice_generated": o.invoice_generated(now), "receipt_number": null,
            "seats": null, "customer_id": o.customer_id, "product_id": o.product_id, "discount_id": null,
            "subscription_id": o.subscription_id, "checkout_id": o.checkout_id, "next_payment_attempt_at": null,
            "metadata": o.metadata, "custom_field_data": {}, "platform_fee_amount": 0, "platform_fee_currency": null,
            "customer": self.customer(&o.customer_id).map(|c| self.customer_json(c)).unwrap_or(Value::Null),
            "product": self.product_base_json(product), "discount": null,
            "subscription": o.subscription_id.as_deref().and_then(|id| self.subscriptions.iter().find(|s| s.id == id)).map(|s| self.subscription_base_json(s)),
            "items": [{
                "created_at": ts(o.created_at), "modified_at": null, "id": stable_id(&format!("item/{}", o.id)), "label": o.description,
                "amount": o.amount, "tax_amount": o.tax_amount, "proration": o.proration, "product_price_id": product.price_id,
                "start_timestamp": null, "end_timestamp": null,
            }],
            "description": o.description, "refundable_amount": refundable,
            "refundable_tax_amount": (o.tax_amount - o.refunded_tax_amount).max(0), "units": null,
        })
    }

    pub fn checkout_json(&self, c: &Checkout) -> Value {
        let frontend_url = &self.frontend_url;
        let product = self.product(&c.product_id).expect("checkouts point at catalogue products");
        let products: Vec<Value> =
            c.product_ids.iter().filter_map(|id| self.product(id)).map(|p| self.product_json(p)).collect();
        let prices: Map<String, Value> = c
            .product_ids
            .iter()
            .filter_map(|id| self.product(id))
            .map(|p| (p.id.clone(), json!([self.price_json(p)])))
            .collect();
        let amount = product.price_amount;
        // Tax is known once the buyer's country is (Polar: `null` until it can be computed).
        let customer = c.customer_id.as_deref().and_then(|id| self.customer(id));
        let country = c
            .customer_billing_address
            .as_ref()
            .map(|a| a.country.clone())
            .or_else(|| customer.and_then(|k| k.billing_address.as_ref()).map(|a| a.country.clone()));
        let tax_id = c
            .customer_tax_id
            .as_ref()
            .and_then(|t| country.as_deref().and_then(|k| crate::domain::tax_id::validate(k, t).ok()))
            .map(|t| (t.value, t.kind.to_string()));
        let tax = country.as_deref().map(|k| super::tax::tax_on(amount, Some(k), tax_id.as_ref()));
        let selected = products.iter().find(|p| p["id"] == json!(c.product_id)).cloned().unwrap_or(Value::Null);
        json!({
            "id": c.id, "created_at": ts(c.created_at), "modified_at": opt_ts(c.modified_at), "custom_field_data": {},
            "payment_processor": "stripe", "status": c.status, "client_secret": c.client_secret,
            "url": format!("{frontend_url}/checkout/{}", c.client_secret), "expires_at": ts(c.expires_at),
            "success_url": c.success_url.clone().unwrap_or_else(|| format!("{frontend_url}/checkout/{}/confirmation", c.client_secret)),
            "return_url": c.return_url, "embed_origin": null, "amount": amount, "seats": null, "min_seats": null, "max_seats": null,
            "units": null, "min_units": null, "max_units": null,
            "discount_amount": 0, "net_amount": amount, "tax_amount": tax, "tax_behavior": tax.map(|_| "exclusive"),
            "total_amount": amount + tax.unwrap_or(0),
            "currency": product.currency, "allow_trial": c.allow_trial, "active_trial_interval": null, "active_trial_interval_count": null,
            "trial_end": null, "organization_id": self.org().id, "product_id": c.product_id, "product_price_id": product.price_id,
            "discount_id": null, "allow_discount_codes": c.allow_discount_codes, "require_billing_address": c.require_billing_address,
            "is_discount_applicable": true, "is_free_product_price": amount == 0, "is_payment_required": amount > 0,
            "is_payment_setup_required": product.recurring_interval.is_some(), "is_payment_form_required": amount > 0,
            "customer_id": c.customer_id, "is_business_customer": c.is_business_customer, "customer_name": c.customer_name,
            "customer_email": c.customer_email, "customer_ip_address": null, "customer_billing_name": c.customer_billing_name,
            "customer_billing_address": c.customer_billing_address.as_ref().map(address_json), "customer_tax_id": c.customer_tax_id,
            "locale": null, "payment_method_type": null, "payment_processor_metadata": {},
            "billing_address_fields": {
                "country": "required",
                "state": if c.require_billing_address { "optional" } else { "disabled" },
                "city": if c.require_billing_address { "required" } else { "disabled" },
                "postal_code": if c.require_billing_address { "required" } else { "disabled" },
                "line1": if c.require_billing_address { "required" } else { "disabled" },
                "line2": if c.require_billing_address { "optional" } else { "disabled" },
            },
            "trial_interval": null, "trial_interval_count": null, "metadata": c.metadata,
            "external_customer_id": c.external_customer_id, "customer_external_id": c.external_customer_id,
            "products": products, "product": selected, "product_price": self.price_json(product), "prices": prices,
            "discount": null, "subscription_id": c.subscription_id, "attached_custom_fields": [], "customer_metadata": c.customer_metadata,
        })
    }

    pub fn grant_json(&self, g: &Grant) -> Value {
        let benefit = self.benefit(&g.benefit_id).expect("grants point at catalogue benefits");
        json!({
            "created_at": ts(g.created_at), "modified_at": opt_ts(g.modified_at), "id": g.id,
            "granted_at": if g.revoked_at.is_none() { Value::String(ts(g.granted_at)) } else { Value::Null },
            "is_granted": g.revoked_at.is_none(), "revoked_at": opt_ts(g.revoked_at), "is_revoked": g.revoked_at.is_some(),
            "subscription_id": g.subscription_id, "order_id": g.order_id, "customer_id": g.customer_id, "member_id": null,
            "benefit_id": g.benefit_id, "error": null,
            "customer": self.customer(&g.customer_id).map(|c| self.customer_json(c)).unwrap_or(Value::Null),
            "member": null, "benefit": self.benefit_json(benefit), "properties": {}, "previous_properties": null,
        })
    }

    /// `CustomerState`: the customer, active or trialing subscriptions, and granted benefits.
    /// Served as a cache `lag` old would serve it (Polar's state is cached): grants younger
    /// than `lag` are not visible yet, and grants revoked less than `lag` ago still are.
    pub fn customer_state_json(&self, c: &Customer, now: DateTime<Utc>, lag: Duration) -> Value {
        let mut v = self.customer_json(c);
        let visible_before = now - lag;
        let subs: Vec<Value> = self
            .subscriptions
            .iter()
            .filter(|s| s.customer_id == c.id && s.is_active() && s.created_at <= visible_before)
            .map(|s| {
                json!({
                    "id": s.id, "created_at": ts(s.created_at), "modified_at": opt_ts(s.modified_at), "custom_field_data": {},
                    "metadata": s.metadata, "status": s.status, "amount": s.amount, "currency": s.currency, "recurring_interval": self.interval_of(&s.product_id),
                    "current_period_start": ts(s.current_period_start), "current_period_end": ts(s.current_period_end),
                    "trial_start": opt_ts(s.trial_start), "trial_end": opt_ts(s.trial_end), "cancel_at_period_end": s.cancel_at_period_end,
                    "canceled_at": opt_ts(s.canceled_at), "started_at": opt_ts(s.started_at), "ends_at": opt_ts(s.ends_at),
                    "product_id": s.product_id, "discount_id": null, "meters": [],
                })
            })
            .collect();
        let grants: Vec<Value> = self
            .grants
            .iter()
            .filter(|g| g.customer_id == c.id && g.granted_at <= visible_before && g.revoked_at.is_none_or(|r| r > visible_before))
            .filter_map(|g| {
                let b = self.benefit(&g.benefit_id)?;
                Some(json!({
                    "id": g.id, "created_at": ts(g.created_at), "modified_at": opt_ts(g.modified_at), "granted_at": ts(g.granted_at),
                    "benefit_id": g.benefit_id, "benefit_type": b.kind(), "benefit_metadata": b.metadata, "properties": {},
                }))
            })
            .collect();
        v["active_subscriptions"] = Value::Array(subs);
        v["granted_benefits"] = Value::Array(grants);
        // The meters that counted something for the customer, as recomputed `lag` behind.
        let meters: Vec<Value> = meters()
            .iter()
            .filter(|m| self.meter_counted(c, m))
            .map(|m| self.meter_state_json(c, m, visible_before))
            .collect();
        v["active_meters"] = Value::Array(meters);
        v
    }

    pub fn session_json(&self, s: &Session) -> Value {
        let frontend_url = &self.frontend_url;
        let c = self.customer(&s.customer_id).expect("sessions point at customers");
        let portal = format!(
            "{frontend_url}/{}/portal?customer_session_token={}&email={}",
            self.org().slug,
            s.token,
            url::form_urlencoded::byte_serialize(c.email.as_bytes()).collect::<String>()
        );
        json!({
            "created_at": ts(s.created_at), "modified_at": null, "id": s.id, "token": s.token, "expires_at": ts(s.expires_at),
            "return_url": s.return_url, "customer_portal_url": portal, "customer_id": s.customer_id, "customer": self.customer_json(c),
        })
    }

    pub fn refund_json(&self, r: &Refund) -> Value {
        let o = self.orders.iter().find(|o| o.id == r.order_id).expect("refunds point at orders");
        json!({
            "created_at": ts(r.created_at), "modified_at": null, "id": r.id, "metadata": {}, "status": "succeeded",
            "reason": r.reason, "amount": r.amount, "tax_amount": r.tax_amount, "currency": o.currency, "organization_id": self.org().id,
            "order_id": o.id, "subscription_id": o.subscription_id, "customer_id": o.customer_id, "revoke_benefits": false, "dispute": null,
        })
    }
}
