//! What happens in "Polar" when something is done: each operation changes the world and
//! returns the webhook events Polar sends for it, in Polar's documented order (docs/polar-contract.md §3.2).

mod checkout;
mod orders;
mod subscriptions;

use super::world::*;
use chrono::{DateTime, Duration, Months, Utc};
use serde_json::{Map, Value};

/// One webhook event: its type and payload (`data`), captured when it happened.
#[derive(Debug, Clone)]
pub struct Event {
    pub event_type: String,
    pub timestamp: DateTime<Utc>,
    pub data: Value,
}

#[derive(Default)]
pub struct Events(pub Vec<Event>);

impl Events {
    fn push(&mut self, event_type: &str, now: DateTime<Utc>, data: Value) {
        self.0.push(Event { event_type: event_type.to_string(), timestamp: now, data });
    }
}

/// A business-rule refusal, in Polar's terms: HTTP status, error name, message.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub status: u16,
    pub error: &'static str,
    pub detail: String,
}

fn refuse(status: u16, error: &'static str, detail: impl Into<String>) -> Refusal {
    Refusal { status, error, detail: detail.into() }
}

pub fn add_month(t: DateTime<Utc>) -> DateTime<Utc> {
    t.checked_add_months(Months::new(1)).unwrap_or(t + Duration::days(30))
}

/// One billing period after `t` for a product's `recurring_interval` (`month` or `year`).
pub fn add_period(t: DateTime<Utc>, interval: Option<&str>) -> DateTime<Utc> {
    match interval {
        Some("year") => t.checked_add_months(Months::new(12)).unwrap_or(t + Duration::days(365)),
        _ => add_month(t),
    }
}

/// Billing details entered on the hosted checkout page.
#[derive(Debug, Clone, Default)]
pub struct PaymentDetails {
    pub email: String,
    pub name: Option<String>,
    pub billing_name: Option<String>,
    pub address: Option<Address>,
    pub tax_id: Option<(String, String)>,
}

impl World {
    fn customer_events(&self, ev: &mut Events, kind: &str, customer_id: &str, now: DateTime<Utc>) {
        let c = self.customer(customer_id).expect("customer exists");
        ev.push(kind, now, self.customer_json(c));
        ev.push("customer.state_changed", now, self.customer_state_json(c, now, Duration::zero()));
    }

    pub(in crate::server::standin) fn state_changed(&self, ev: &mut Events, customer_id: &str, now: DateTime<Utc>) {
        if let Some(c) = self.customer(customer_id) {
            ev.push("customer.state_changed", now, self.customer_state_json(c, now, Duration::zero()));
        }
    }

    fn sub_events(&self, ev: &mut Events, kinds: &[&str], sub_id: &str, now: DateTime<Utc>) {
        let s = self.subscriptions.iter().find(|s| s.id == sub_id).expect("subscription exists");
        let json = self.subscription_json(s);
        for k in kinds {
            ev.push(k, now, json.clone());
        }
    }

    fn order_events(&self, ev: &mut Events, kinds: &[&str], order_id: &str, now: DateTime<Utc>) {
        let o = self.orders.iter().find(|o| o.id == order_id).expect("order exists");
        let json = self.order_json(o, now);
        for k in kinds {
            ev.push(k, now, json.clone());
        }
    }

    /// Creates a customer; refuses a duplicate email or external id as Polar does (422).
    pub fn create_customer(
        &mut self,
        email: &str,
        external_id: Option<String>,
        name: Option<String>,
        metadata: Map<String, Value>,
        now: DateTime<Utc>,
        ev: &mut Events,
    ) -> Result<String, (&'static str, String)> {
        if self.customer_by_email(email).is_some() {
            return Err(("email", "A customer with this email address already exists.".into()));
        }
        if let Some(x) = &external_id {
            if self.customer_by_external(x).is_some() {
                return Err(("external_id", "A customer with this external ID already exists.".into()));
            }
        }
        let id = new_id();
        self.customers.push(Customer {
            id: id.clone(),
            external_id,
            email: email.to_string(),
            name,
            billing_name: None,
            billing_address: None,
            tax_id: None,
            metadata,
            created_at: now,
            modified_at: None,
            deleted_at: None,
            saved_external_id: None,
        });
        self.customer_events(ev, "customer.created", &id, now);
        Ok(id)
    }

    pub fn customer_updated(&mut self, id: &str, now: DateTime<Utc>, ev: &mut Events) {
        if let Some(c) = self.customer_mut(id) {
            c.modified_at = Some(now);
        }
        self.customer_events(ev, "customer.updated", id, now);
    }

    /// Deletes a customer: subscriptions end now, benefits are revoked, the external id is
    /// freed, and with `anonymize` personal data is scrubbed.
    pub fn delete_customer(&mut self, id: &str, anonymize: bool, now: DateTime<Utc>, ev: &mut Events) {
        let subs: Vec<String> = self
            .subscriptions
            .iter()
            .filter(|s| s.customer_id == id && s.ended_at.is_none())
            .map(|s| s.id.clone())
            .collect();
        for s in subs {
            let _ = self.revoke_subscription(&s, now, ev);
        }
        let Some(c) = self.customer_mut(id) else { return };
        c.saved_external_id = c.external_id.take();
        c.deleted_at = Some(now);
        c.modified_at = Some(now);
        if anonymize {
            c.email = format!("{}@anonymized.invalid", &c.id[..8]);
            c.name = None;
            c.billing_address = None;
        }
        let json = self.customer_json(self.customer(id).expect("just updated"));
        ev.push("customer.deleted", now, json);
        self.state_changed(ev, id, now);
    }
}

/// What an order is for; whom it bills comes from the customer (`World::new_order`).
struct NewOrder<'a> {
    customer_id: &'a str,
    product: &'a Product,
    subscription_id: Option<String>,
    checkout_id: Option<String>,
    billing_reason: &'static str,
    amount: i64,
    proration: bool,
    metadata: Map<String, Value>,
}
