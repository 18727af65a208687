//! The stand-in's data: one organization's catalogue, customers, checkouts, orders,
//! subscriptions and benefit grants, and how each is written on the wire. The JSON follows
//! Polar's 2026-04 schemas as docs/polar-contract.md §7 asks: every required key present (nullable ones as
//! `null`), the newer optional keys (`units`, item timestamps) as `null`, times in UTC with `Z`,
//! integer cents, and non-null `invoice_number`/`avatar_url` so the 0.47.x SDK parses them.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use uuid::Uuid;

mod meters;
mod wire;

pub use meters::*;

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
}
