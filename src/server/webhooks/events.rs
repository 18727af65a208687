//! Polar's webhook events, typed. Each event Tally acts on is parsed into its object
//! (`Order`, `Subscription`, `Customer`); every other type is kept as it came
//! ([`WebhookEvent::Unknown`]), stored and skipped. A known type whose object cannot be read
//! is an error (retried, then parked for a person), never silently skipped.

use crate::server::polar::models::{Customer, Order, Subscription};
use serde_json::Value;

/// What an order event says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderEvent {
    Paid,
    Refunded,
    /// `order.created`, `order.updated`: nothing to apply but whose order it is.
    Other,
}

/// What a customer event says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CustomerEvent {
    /// `customer.state_changed`, `customer.updated`: the cached Customer State is stale.
    Changed,
    Deleted,
}

#[derive(Debug, Clone, PartialEq)]
pub enum WebhookEvent {
    Order {
        event: OrderEvent,
        order: Box<Order>,
    },
    /// Every `subscription.*` event Tally applies carries the whole subscription.
    Subscription(Box<Subscription>),
    Customer {
        event: CustomerEvent,
        customer: Box<Customer>,
    },
    /// A type Tally does not act on, with its payload as it came.
    Unknown {
        event_type: String,
        payload: Value,
    },
}

/// The subscription events whose object Tally applies.
pub const SUBSCRIPTION_EVENTS: [&str; 8] = [
    "subscription.created",
    "subscription.active",
    "subscription.updated",
    "subscription.cycled",
    "subscription.canceled",
    "subscription.uncanceled",
    "subscription.revoked",
    "subscription.past_due",
];

impl WebhookEvent {
    /// The event of a stored delivery: its `type` and the whole payload (`{"type", "data", …}`).
    pub fn parse(event_type: &str, payload: &Value) -> Result<WebhookEvent, String> {
        let data = || payload.get("data").cloned().unwrap_or(Value::Null);
        let read = |what: &str, e: serde_json::Error| format!("{event_type}: the {what} cannot be read: {e}");
        Ok(match event_type {
            "order.paid" | "order.refunded" | "order.created" | "order.updated" => {
                let event = match event_type {
                    "order.paid" => OrderEvent::Paid,
                    "order.refunded" => OrderEvent::Refunded,
                    _ => OrderEvent::Other,
                };
                WebhookEvent::Order {
                    event,
                    order: Box::new(serde_json::from_value(data()).map_err(|e| read("order", e))?),
                }
            }
            t if SUBSCRIPTION_EVENTS.contains(&t) => WebhookEvent::Subscription(Box::new(
                serde_json::from_value(data()).map_err(|e| read("subscription", e))?,
            )),
            "customer.state_changed" | "customer.updated" | "customer.deleted" => {
                let event =
                    if event_type == "customer.deleted" { CustomerEvent::Deleted } else { CustomerEvent::Changed };
                WebhookEvent::Customer {
                    event,
                    customer: Box::new(serde_json::from_value(data()).map_err(|e| read("customer", e))?),
                }
            }
            other => WebhookEvent::Unknown { event_type: other.to_string(), payload: payload.clone() },
        })
    }

    /// The Tally user (by Polar's `external_id`) an event is about, if it names one. Not
    /// checked against the database.
    pub fn user_hint(event_type: &str, payload: &Value) -> Option<uuid::Uuid> {
        let data = &payload["data"];
        let customer = if event_type.starts_with("customer.") { data } else { &data["customer"] };
        // Checkouts name the customer by `external_customer_id` (they may have no customer yet).
        [&customer["external_id"], &data["external_customer_id"], &data["customer_external_id"]]
            .into_iter()
            .find_map(|v| v.as_str().and_then(|x| uuid::Uuid::parse_str(x).ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn known_events_become_their_objects_and_others_are_kept_as_they_came() {
        let sub = json!({ "type": "subscription.cycled", "data": { "id": "s", "status": "active", "current_period_start": "2026-11-01T00:00:00Z", "current_period_end": "2026-12-01T00:00:00Z" } });
        assert!(
            matches!(WebhookEvent::parse("subscription.cycled", &sub), Ok(WebhookEvent::Subscription(s)) if s.id == "s")
        );
        let order = json!({ "data": { "id": "o", "status": "paid", "billing_reason": "purchase" } });
        assert!(matches!(
            WebhookEvent::parse("order.paid", &order),
            Ok(WebhookEvent::Order { event: OrderEvent::Paid, .. })
        ));
        let other = json!({ "type": "benefit_grant.created", "data": { "x": 1 } });
        assert_eq!(
            WebhookEvent::parse("benefit_grant.created", &other),
            Ok(WebhookEvent::Unknown { event_type: "benefit_grant.created".into(), payload: other.clone() })
        );
        let broken = json!({ "data": { "id": "s" } });
        assert!(WebhookEvent::parse("subscription.updated", &broken)
            .unwrap_err()
            .contains("subscription cannot be read"));
    }
}
