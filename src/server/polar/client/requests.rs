//! The request bodies Tally sends (the fields it sets).

use crate::server::polar::models::Address;
use serde::Serialize;
use serde_json::{Map, Value};

/// Creating a checkout (`CheckoutProductsCreate`, the fields Tally sets).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckoutCreate {
    pub products: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_customer_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_billing_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_billing_address: Option<Address>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_tax_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_url: Option<String>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
}

/// Changing a customer (`CustomerUpdateExternalID`); `None` leaves a field as it is.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CustomerUpdate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billing_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billing_address: Option<Address>,
    /// `Some(None)` clears the tax id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tax_id: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

/// How a plan change is billed (`SubscriptionProrationBehavior`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Proration {
    /// Invoice the difference now.
    Invoice,
    /// Add the difference to the next invoice.
    Prorate,
    /// No proration; the new price applies from the next period.
    NextPeriod,
}

/// One usage event for `POST /v1/events/ingest`.
#[derive(Debug, Clone, Serialize)]
pub struct UsageEvent {
    pub name: String,
    pub external_customer_id: String,
    /// Your idempotency key: a repeat is counted in `duplicates`, not inserted.
    pub external_id: String,
    /// When it happened (Polar bills it in the period it is received, docs/polar-contract.md §2.8).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
}
