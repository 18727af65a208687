//! Polar's wire types (API version 2026-04), as far as Tally reads them. Field names and
//! shapes follow the OpenAPI document: snake_case, integer cents, RFC 3339 times, and keys that
//! are required but nullable are `Option` without `skip_serializing_if`, so what we serialize
//! (the stand-in) carries the key with `null` as Polar does. Unknown fields are ignored; enums
//! keep values they do not know (`Unknown`) instead of failing, because Polar adds values.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// A string enum that keeps unknown values.
macro_rules! open_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant,)+
            /// A value this version of Tally does not know.
            Unknown(String),
        }

        impl $name {
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $wire,)+
                    $name::Unknown(s) => s,
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $($wire => $name::$variant,)+
                    other => $name::Unknown(other.to_string()),
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Ok($name::from(String::deserialize(d)?.as_str()))
            }
        }
    };
}

open_enum!(
    /// `CheckoutStatus`.
    CheckoutStatus { Open = "open", Expired = "expired", Confirmed = "confirmed", Succeeded = "succeeded", Failed = "failed" }
);
open_enum!(
    /// `SubscriptionStatus`.
    SubscriptionStatus {
        Incomplete = "incomplete", IncompleteExpired = "incomplete_expired", Trialing = "trialing", Active = "active",
        PastDue = "past_due", Canceled = "canceled", Unpaid = "unpaid", Paused = "paused",
    }
);
open_enum!(
    /// `OrderStatus`.
    OrderStatus { Draft = "draft", Pending = "pending", Paid = "paid", Refunded = "refunded", PartiallyRefunded = "partially_refunded", Void = "void" }
);
open_enum!(
    /// `OrderBillingReason`.
    OrderBillingReason {
        Purchase = "purchase", SubscriptionCreate = "subscription_create", SubscriptionCycle = "subscription_cycle",
        SubscriptionUpdate = "subscription_update", SubscriptionMeterCycle = "subscription_meter_cycle",
    }
);

mod orders;
mod subscriptions;

pub use orders::*;
pub use subscriptions::*;

/// The default of a required time an older payload may lack.
fn epoch() -> DateTime<Utc> {
    DateTime::UNIX_EPOCH
}

/// `Checkout` (the fields Tally uses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkout {
    pub id: String,
    pub created_at: DateTime<Utc>,
    pub modified_at: Option<DateTime<Utc>>,
    pub status: CheckoutStatus,
    pub client_secret: String,
    pub url: String,
    pub expires_at: DateTime<Utc>,
    pub success_url: String,
    pub return_url: Option<String>,
    pub amount: i64,
    pub total_amount: i64,
    pub currency: String,
    pub product_id: Option<String>,
    pub customer_id: Option<String>,
    pub external_customer_id: Option<String>,
    pub customer_email: Option<String>,
    pub subscription_id: Option<String>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// `CustomerState`: who the customer is and what they have right now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerState {
    pub id: String,
    pub created_at: DateTime<Utc>,
    pub modified_at: Option<DateTime<Utc>>,
    pub external_id: Option<String>,
    pub email: String,
    pub name: Option<String>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub active_subscriptions: Vec<CustomerStateSubscription>,
    pub granted_benefits: Vec<CustomerStateBenefitGrant>,
    pub active_meters: Vec<CustomerStateMeter>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerStateSubscription {
    pub id: String,
    pub status: SubscriptionStatus,
    pub amount: i64,
    pub currency: String,
    pub current_period_start: DateTime<Utc>,
    pub current_period_end: DateTime<Utc>,
    pub cancel_at_period_end: bool,
    pub canceled_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub product_id: String,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerStateBenefitGrant {
    pub id: String,
    pub granted_at: DateTime<Utc>,
    pub benefit_id: String,
    pub benefit_type: String,
    #[serde(default)]
    pub benefit_metadata: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerStateMeter {
    pub id: String,
    pub meter_id: String,
    pub consumed_units: f64,
    pub credited_units: f64,
    pub balance: f64,
}

impl CustomerState {
    /// Whether a benefit whose metadata has `key = value` is granted (for example
    /// `slug = pro`): access follows granted benefits, not "has a subscription".
    pub fn has_benefit(&self, key: &str, value: &str) -> bool {
        self.granted_benefits.iter().any(|g| g.benefit_metadata.get(key).and_then(Value::as_str) == Some(value))
    }
}

/// `Address` (billing address; `country` is ISO 3166-1 alpha-2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub line1: Option<String>,
    pub line2: Option<String>,
    pub postal_code: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub country: String,
}

/// `Customer` (individual or team).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub id: String,
    #[serde(default = "epoch")]
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub modified_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub billing_name: Option<String>,
    #[serde(default)]
    pub billing_address: Option<Address>,
    /// `[value, format]`, e.g. `["FR61954506077", "eu_vat"]`.
    #[serde(default)]
    pub tax_id: Option<(String, String)>,
    #[serde(default)]
    pub deleted_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// `CustomerSession`: a short-lived token and the portal URL for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerSession {
    pub id: String,
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub customer_portal_url: String,
    pub customer_id: String,
}

/// A product price. Only fixed prices carry `price_amount`; other kinds keep their type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductPrice {
    pub id: String,
    pub amount_type: String,
    #[serde(default)]
    pub price_amount: Option<i64>,
    pub price_currency: String,
    #[serde(default)]
    pub is_archived: bool,
    /// A metered price's cents per unit, as Polar sends it: a decimal string.
    #[serde(default)]
    pub unit_amount: Option<String>,
    /// A metered price's most per period, in cents.
    #[serde(default)]
    pub cap_amount: Option<i64>,
    #[serde(default)]
    pub meter_id: Option<String>,
}

impl ProductPrice {
    /// The overage terms of a live `metered_unit` price in whole cents (see `domain::usage`).
    pub fn overage_terms(&self) -> Option<crate::domain::usage::OverageTerms> {
        if self.amount_type != "metered_unit" || self.is_archived {
            return None;
        }
        let unit = self.unit_amount.as_deref()?;
        let Some(unit_cents) = crate::domain::usage::whole_cents(unit) else {
            tracing::error!(price_id = %self.id, unit_amount = unit, "metered price is not a whole number of cents per unit; Tally offers no overage on it");
            return None;
        };
        Some(crate::domain::usage::OverageTerms { unit_cents, cap_cents: self.cap_amount.map(|c| c.max(0)) })
    }
}

/// A benefit on a product (any type); Tally matches benefits by their metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Benefit {
    pub id: String,
    #[serde(rename = "type")]
    pub benefit_type: String,
    pub description: String,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// `Product`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub recurring_interval: Option<String>,
    pub is_recurring: bool,
    pub is_archived: bool,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    pub prices: Vec<ProductPrice>,
    pub benefits: Vec<Benefit>,
}

/// `CustomerMeter` (usage meters with credits).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerMeter {
    pub id: String,
    pub customer_id: String,
    pub meter_id: String,
    pub consumed_units: f64,
    pub credited_units: f64,
    pub balance: f64,
    /// The meter itself (`Meter`): its filter says which events it counts.
    #[serde(default)]
    pub meter: Option<Value>,
}

impl CustomerMeter {
    /// Whether the meter counts events named `event` (a filter clause `name eq <event>`).
    pub fn counts_event(&self, event: &str) -> bool {
        let clauses = self.meter.as_ref().and_then(|m| m["filter"]["clauses"].as_array().cloned()).unwrap_or_default();
        clauses.iter().any(|c| c["property"] == "name" && c["operator"] == "eq" && c["value"] == event)
    }
}

/// The answer of `POST /v1/events/ingest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestResult {
    pub inserted: i64,
    pub duplicates: i64,
}

/// The answer of `GET /v1/orders/{id}/invoice`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceUrl {
    pub url: String,
}

/// `Pagination` and a `ListResource_X_` page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pagination {
    pub total_count: i64,
    pub max_page: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListResource<T> {
    pub items: Vec<T>,
    pub pagination: Pagination,
}

/// The webhook envelope: `{"type", "timestamp", "data"}` (and `api_version` on newer endpoints).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookEnvelope<T> {
    #[serde(rename = "type")]
    pub event_type: String,
    pub timestamp: DateTime<Utc>,
    pub data: T,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdk_accepted_fixtures_parse() {
        let c: Checkout = serde_json::from_str(include_str!("../fixtures/checkout.json")).unwrap();
        assert_eq!(c.status, CheckoutStatus::Open);
        assert_eq!(c.external_customer_id.as_deref(), Some("user_42"));
        assert!(c.success_url.contains("checkout_id="));

        let s: CustomerState = serde_json::from_str(include_str!("../fixtures/customer_state.json")).unwrap();
        assert_eq!(s.active_subscriptions[0].status, SubscriptionStatus::Active);
        assert!(s.has_benefit("tier", "pro"));
        assert!(!s.has_benefit("tier", "business"));
        assert_eq!(s.active_meters[0].balance, 87.5);

        for f in [include_str!("../fixtures/order_paid.json"), include_str!("../fixtures/order_paid_superset.json")] {
            let e: WebhookEnvelope<Order> = serde_json::from_str(f).unwrap();
            assert_eq!(e.event_type, "order.paid");
            assert_eq!(e.data.status, OrderStatus::Paid);
        }
    }

    #[test]
    fn unknown_enum_values_are_kept_not_rejected() {
        let s: SubscriptionStatus = serde_json::from_str("\"migrating\"").unwrap();
        assert_eq!(s, SubscriptionStatus::Unknown("migrating".into()));
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"migrating\"");
        assert_eq!(serde_json::to_string(&SubscriptionStatus::PastDue).unwrap(), "\"past_due\"");
    }

    #[test]
    fn required_nullable_keys_are_serialized_as_null() {
        let c: Checkout = serde_json::from_str(include_str!("../fixtures/checkout.json")).unwrap();
        let v = serde_json::to_value(Checkout { customer_id: None, subscription_id: None, ..c }).unwrap();
        assert!(v.as_object().unwrap().contains_key("customer_id"));
        assert_eq!(v["customer_id"], Value::Null);
    }
}
