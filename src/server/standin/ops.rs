//! What happens in "Polar" when something is done: each operation changes the world and
//! returns the webhook events Polar sends for it, in Polar's documented order (docs/polar-contract.md §3.2).

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

    /// The hosted page's "pay" after the processing delay: the customer (found or created for
    /// the external id), the order, the subscription and the benefit grants, then `succeeded`.
    pub fn complete_checkout(
        &mut self,
        checkout_id: &str,
        details: &PaymentDetails,
        now: DateTime<Utc>,
        ev: &mut Events,
    ) -> Result<(), Refusal> {
        let c = self
            .checkouts
            .iter()
            .find(|c| c.id == checkout_id)
            .cloned()
            .ok_or_else(|| refuse(404, "ResourceNotFound", "Not found"))?;
        if c.status == "succeeded" {
            return Ok(());
        }
        let product = self.product(&c.product_id).cloned().expect("catalogue product");
        // The customer: the one linked by external id, else the checkout's, else by email, else new.
        let existing = c
            .external_customer_id
            .as_deref()
            .and_then(|x| self.customer_by_external(x))
            .or_else(|| c.customer_id.as_deref().and_then(|id| self.customer(id)))
            .or_else(|| self.customer_by_email(&details.email))
            .map(|c| c.id.clone());
        let customer_id = match existing {
            Some(id) => id,
            None => self
                .create_customer(
                    &details.email,
                    c.external_customer_id.clone(),
                    details.name.clone(),
                    c.customer_metadata.clone(),
                    now,
                    ev,
                )
                .map_err(|(_, m)| refuse(422, "PolarRequestValidationError", m))?,
        };
        {
            let cust = self.customer_mut(&customer_id).expect("customer exists");
            let mut changed = false;
            if details.billing_name.is_some() && cust.billing_name != details.billing_name {
                cust.billing_name = details.billing_name.clone();
                changed = true;
            }
            if details.address.is_some() && cust.billing_address != details.address {
                cust.billing_address = details.address.clone();
                changed = true;
            }
            if details.tax_id.is_some() && cust.tax_id != details.tax_id {
                cust.tax_id = details.tax_id.clone();
                changed = true;
            }
            if changed {
                self.customer_updated(&customer_id, now, ev);
            }
        }
        let mut subscription_id = None;
        if product.recurring_interval.is_some() {
            let id = new_id();
            let trial_end = product.trial_days.filter(|_| c.allow_trial).map(|d| now + Duration::days(d));
            self.subscriptions.push(Subscription {
                id: id.clone(),
                customer_id: customer_id.clone(),
                product_id: product.id.clone(),
                status: if trial_end.is_some() { "trialing".into() } else { "active".into() },
                amount: product.price_amount,
                currency: product.currency.clone(),
                current_period_start: now,
                current_period_end: trial_end.unwrap_or_else(|| add_period(now, product.recurring_interval.as_deref())),
                trial_start: trial_end.map(|_| now),
                trial_end,
                cancel_at_period_end: false,
                canceled_at: None,
                started_at: Some(now),
                ends_at: None,
                ended_at: None,
                past_due_at: None,
                checkout_id: Some(c.id.clone()),
                customer_cancellation_reason: None,
                customer_cancellation_comment: None,
                pending_update: None,
                metadata: c.metadata.clone(),
                created_at: now,
                modified_at: None,
            });
            self.sub_events(ev, &["subscription.created"], &id, now);
            subscription_id = Some(id);
        }
        let order_id = self.new_order(
            NewOrder {
                customer_id: &customer_id,
                product: &product,
                subscription_id: subscription_id.clone(),
                checkout_id: Some(c.id.clone()),
                billing_reason: if subscription_id.is_some() { "subscription_create" } else { "purchase" },
                amount: product.price_amount,
                proration: false,
                metadata: c.metadata.clone(),
            },
            now,
        );
        self.order_events(ev, &["order.created"], &order_id, now);
        {
            let o = self.order_mut(&order_id).expect("order exists");
            o.status = "paid".into();
            o.modified_at = Some(now);
        }
        {
            let ck = self.checkout_mut(checkout_id).expect("checkout exists");
            ck.status = "succeeded".into();
            ck.customer_id = Some(customer_id.clone());
            ck.subscription_id = subscription_id.clone();
            ck.order_id = Some(order_id.clone());
            ck.last_error = None;
            ck.modified_at = Some(now);
        }
        let ck = self.checkouts.iter().find(|c| c.id == checkout_id).cloned().expect("checkout exists");
        ev.push("checkout.updated", now, self.checkout_json(&ck));
        if let Some(s) = &subscription_id {
            let status = self.subscriptions.iter().find(|x| &x.id == s).map(|x| x.status.clone()).unwrap_or_default();
            if status == "active" {
                self.sub_events(ev, &["subscription.active"], s, now);
            }
        }
        self.grant_benefits(&customer_id, &product, subscription_id.as_deref(), Some(&order_id), now, ev);
        self.order_events(ev, &["order.updated", "order.paid"], &order_id, now);
        self.state_changed(ev, &customer_id, now);
        Ok(())
    }

    /// A pending order billed to the customer's billing name and address as they are now.
    fn new_order(&mut self, o: NewOrder<'_>, now: DateTime<Utc>) -> String {
        let NewOrder {
            customer_id,
            product,
            subscription_id,
            checkout_id,
            billing_reason,
            amount,
            proration,
            metadata,
        } = o;
        let (billing_name, billing_address) = self
            .customer(customer_id)
            .map(|c| (c.billing_name.clone().or(c.name.clone()), c.billing_address.clone()))
            .unwrap_or_default();
        self.invoice_counter += 1;
        let id = new_id();
        // Tax by the buyer's billing country as it is now (reverse charge for a valid VAT id).
        let buyer = self.customer(customer_id);
        let country = buyer.and_then(|c| c.billing_address.as_ref()).map(|a| a.country.clone());
        let tax_amount = super::tax::tax_on(amount, country.as_deref(), buyer.and_then(|c| c.tax_id.as_ref()));
        let prefix: String =
            self.org().slug.to_ascii_uppercase().chars().filter(|c| c.is_ascii_alphanumeric()).take(8).collect();
        self.orders.push(Order {
            id: id.clone(),
            status: "pending".into(),
            customer_id: customer_id.to_string(),
            product_id: product.id.clone(),
            subscription_id,
            checkout_id,
            billing_reason: billing_reason.into(),
            amount,
            tax_amount,
            currency: product.currency.clone(),
            refunded_amount: 0,
            refunded_tax_amount: 0,
            billing_name,
            billing_address,
            invoice_number: format!("{prefix}-{:04}", self.invoice_counter),
            invoice_ready_at: None,
            description: product.name.clone(),
            proration,
            metadata,
            created_at: now,
            modified_at: None,
        });
        id
    }

    fn grant_benefits(
        &mut self,
        customer_id: &str,
        product: &Product,
        subscription_id: Option<&str>,
        order_id: Option<&str>,
        now: DateTime<Utc>,
        ev: &mut Events,
    ) {
        for b in &product.benefits {
            let id = new_id();
            self.grants.push(Grant {
                id: id.clone(),
                customer_id: customer_id.to_string(),
                benefit_id: b.id.clone(),
                subscription_id: subscription_id.map(str::to_string),
                order_id: order_id.map(str::to_string),
                granted_at: now,
                revoked_at: None,
                created_at: now,
                modified_at: None,
            });
            let g = self.grants.last().expect("just pushed");
            ev.push("benefit_grant.created", now, self.grant_json(g));
            if let Some(m) = &b.meter_credit {
                self.credit_meter(customer_id, m, false, now);
            }
        }
    }

    /// A `meter_credit` grant's effect at its start or a cycle: the meter reset (at a cycle,
    /// unless it rolls over), then its units credited, both as Polar's system events.
    fn credit_meter(&mut self, customer_id: &str, m: &MeterCredit, cycle: bool, at: DateTime<Utc>) {
        let system = |name: &str, metadata: Map<String, Value>| IngestedEvent {
            name: name.into(),
            external_id: None,
            external_customer_id: None,
            customer_id: Some(customer_id.to_string()),
            timestamp: at,
            received_at: at,
            metadata,
        };
        let mut meta = Map::new();
        meta.insert("meter_id".into(), Value::String(m.meter_id.clone()));
        if cycle && !m.rollover {
            self.events.push(system("meter.reset", meta.clone()));
        }
        meta.insert("units".into(), Value::from(m.units));
        meta.insert("rollover".into(), Value::Bool(m.rollover));
        self.events.push(system("meter.credited", meta));
    }

    fn revoke_grants(&mut self, subscription_id: &str, now: DateTime<Utc>, ev: &mut Events) {
        let ids: Vec<String> = self
            .grants
            .iter()
            .filter(|g| g.subscription_id.as_deref() == Some(subscription_id) && g.revoked_at.is_none())
            .map(|g| g.id.clone())
            .collect();
        for id in ids {
            if let Some(g) = self.grants.iter_mut().find(|g| g.id == id) {
                g.revoked_at = Some(now);
                g.modified_at = Some(now);
            }
            let g = self.grants.iter().find(|g| g.id == id).expect("grant exists");
            ev.push("benefit_grant.revoked", now, self.grant_json(g));
        }
    }

    /// A failed payment attempt on the hosted page: the checkout goes back to `open`.
    pub fn decline_checkout(&mut self, checkout_id: &str, now: DateTime<Utc>, ev: &mut Events) {
        if let Some(c) = self.checkout_mut(checkout_id) {
            c.status = "open".into();
            c.last_error = Some("Your card was declined.".into());
            c.modified_at = Some(now);
        }
        let c = self.checkouts.iter().find(|c| c.id == checkout_id).cloned().expect("checkout exists");
        ev.push("checkout.updated", now, self.checkout_json(&c));
    }

    /// Expires open checkouts past `expires_at`.
    pub fn expire_checkouts(&mut self, now: DateTime<Utc>, ev: &mut Events) {
        let due: Vec<String> =
            self.checkouts.iter().filter(|c| c.status == "open" && c.expires_at <= now).map(|c| c.id.clone()).collect();
        for id in due {
            if let Some(c) = self.checkout_mut(&id) {
                c.status = "expired".into();
                c.modified_at = Some(now);
            }
            let c = self.checkouts.iter().find(|c| c.id == id).cloned().expect("checkout exists");
            ev.push("checkout.updated", now, self.checkout_json(&c));
            ev.push("checkout.expired", now, self.checkout_json(&c));
        }
    }

    fn active_subscription(&self, id: &str) -> Result<&Subscription, Refusal> {
        let s = self
            .subscriptions
            .iter()
            .find(|s| s.id == id)
            .ok_or_else(|| refuse(404, "ResourceNotFound", "Not found"))?;
        if s.ended_at.is_some() || s.status == "canceled" {
            return Err(refuse(403, "AlreadyCanceledSubscription", "This subscription is already canceled."));
        }
        Ok(s)
    }

    pub fn cancel_at_period_end(
        &mut self,
        id: &str,
        cancel: bool,
        reason: Option<String>,
        comment: Option<String>,
        now: DateTime<Utc>,
        ev: &mut Events,
    ) -> Result<(), Refusal> {
        let s = self.active_subscription(id)?;
        if s.cancel_at_period_end == cancel {
            return Ok(());
        }
        let customer_id = s.customer_id.clone();
        let s = self.subscription_mut(id).expect("exists");
        s.cancel_at_period_end = cancel;
        s.modified_at = Some(now);
        if cancel {
            s.canceled_at = Some(now);
            s.ends_at = Some(s.current_period_end);
            s.customer_cancellation_reason = reason;
            s.customer_cancellation_comment = comment;
            self.sub_events(ev, &["subscription.updated", "subscription.canceled"], id, now);
        } else {
            s.canceled_at = None;
            s.ends_at = None;
            s.customer_cancellation_reason = None;
            s.customer_cancellation_comment = None;
            self.sub_events(ev, &["subscription.updated", "subscription.uncanceled"], id, now);
        }
        self.state_changed(ev, &customer_id, now);
        Ok(())
    }

    /// Ends a subscription now (`DELETE /v1/subscriptions/{id}` or `{"revoke": true}`).
    pub fn revoke_subscription(&mut self, id: &str, now: DateTime<Utc>, ev: &mut Events) -> Result<(), Refusal> {
        let s = self.active_subscription(id)?;
        let customer_id = s.customer_id.clone();
        let s = self.subscription_mut(id).expect("exists");
        s.status = "canceled".into();
        s.canceled_at.get_or_insert(now);
        s.ends_at = Some(now);
        s.ended_at = Some(now);
        s.cancel_at_period_end = false;
        s.modified_at = Some(now);
        self.sub_events(ev, &["subscription.updated", "subscription.canceled", "subscription.revoked"], id, now);
        self.revoke_grants(id, now, ev);
        self.state_changed(ev, &customer_id, now);
        Ok(())
    }

    /// Switches the product. `invoice`/`prorate`: now, with a prorated order for an upgrade
    /// (`invoice` charges it at once); `next_period`: a pending update applied at renewal.
    pub fn change_product(
        &mut self,
        id: &str,
        product_id: &str,
        proration: &str,
        now: DateTime<Utc>,
        ev: &mut Events,
    ) -> Result<(), Refusal> {
        let s = self.active_subscription(id)?.clone();
        let new = self
            .product(product_id)
            .cloned()
            .ok_or_else(|| refuse(422, "PolarRequestValidationError", "Product does not exist."))?;
        if new.recurring_interval.is_none() {
            return Err(refuse(422, "PolarRequestValidationError", "Can't update to a one-time product."));
        }
        if s.product_id == product_id {
            return Err(refuse(422, "PolarRequestValidationError", "The subscription is already on this product."));
        }
        if proration == "next_period" {
            let sm = self.subscription_mut(id).expect("exists");
            sm.pending_update = Some(PendingUpdate {
                id: new_id(),
                product_id: product_id.into(),
                applies_at: s.current_period_end,
                created_at: now,
            });
            sm.modified_at = Some(now);
            self.sub_events(ev, &["subscription.updated"], id, now);
            return Ok(());
        }
        let old = self.product(&s.product_id).cloned().expect("catalogue product");
        let period = (s.current_period_end - s.current_period_start).num_seconds().max(1);
        let left = (s.current_period_end - now).num_seconds().clamp(0, period);
        let prorated = (new.price_amount - old.price_amount) * left / period;
        {
            let sm = self.subscription_mut(id).expect("exists");
            sm.product_id = new.id.clone();
            sm.amount = new.price_amount;
            sm.pending_update = None;
            sm.modified_at = Some(now);
        }
        self.sub_events(ev, &["subscription.updated"], id, now);
        self.revoke_grants(id, now, ev);
        self.grant_benefits(&s.customer_id, &new, Some(id), None, now, ev);
        if prorated > 0 && proration == "invoice" {
            let order_id = self.new_order(
                NewOrder {
                    customer_id: &s.customer_id,
                    product: &new,
                    subscription_id: Some(id.into()),
                    checkout_id: None,
                    billing_reason: "subscription_update",
                    amount: prorated,
                    proration: true,
                    metadata: s.metadata.clone(),
                },
                now,
            );
            self.order_events(ev, &["order.created"], &order_id, now);
            self.order_mut(&order_id).expect("exists").status = "paid".into();
            self.order_events(ev, &["order.updated", "order.paid"], &order_id, now);
        }
        self.state_changed(ev, &s.customer_id, now);
        Ok(())
    }

    /// Renews or ends every subscription whose period is over at `now`: cancel-at-period-end
    /// ones are revoked; others cycle, with the renewal order paid (or, when `fail_payment`
    /// says so for that subscription, left pending and the subscription `past_due`).
    pub fn run_renewals(&mut self, now: DateTime<Utc>, fail_payment: &mut dyn FnMut(&str) -> bool, ev: &mut Events) {
        loop {
            let due = self
                .subscriptions
                .iter()
                .find(|s| matches!(s.status.as_str(), "active" | "trialing") && s.current_period_end <= now)
                .map(|s| s.id.clone());
            let Some(id) = due else { break };
            let s = self.subscriptions.iter().find(|s| s.id == id).cloned().expect("exists");
            let at = s.current_period_end;
            // The period's overage first, as its own order (Polar's metered price bills the
            // meter at the cycle end, canceling or not).
            self.bill_overage(&s, at, ev);
            if s.cancel_at_period_end {
                let sm = self.subscription_mut(&id).expect("exists");
                sm.status = "canceled".into();
                sm.ended_at = Some(at);
                sm.modified_at = Some(at);
                self.sub_events(ev, &["subscription.updated", "subscription.revoked"], &id, at);
                self.revoke_grants(&id, at, ev);
                self.state_changed(ev, &s.customer_id, at);
                continue;
            }
            let mut product = self.product(&s.product_id).cloned().expect("catalogue product");
            let pending = s.pending_update.clone();
            if let Some(p) = &pending {
                product = self.product(&p.product_id).cloned().unwrap_or(product);
            }
            let failed = fail_payment(&id);
            {
                let sm = self.subscription_mut(&id).expect("exists");
                sm.current_period_start = at;
                sm.current_period_end = add_period(at, product.recurring_interval.as_deref());
                sm.product_id = product.id.clone();
                sm.amount = product.price_amount;
                sm.pending_update = None;
                sm.trial_start = None;
                sm.trial_end = None;
                sm.modified_at = Some(at);
                if failed {
                    sm.status = "past_due".into();
                    sm.past_due_at = Some(at);
                } else {
                    sm.status = "active".into();
                }
            }
            self.sub_events(ev, &["subscription.cycled", "subscription.updated"], &id, at);
            if pending.is_some() {
                self.revoke_grants(&id, at, ev);
                self.grant_benefits(&s.customer_id, &product, Some(&id), None, at, ev);
            }
            let order_id = self.new_order(
                NewOrder {
                    customer_id: &s.customer_id,
                    product: &product,
                    subscription_id: Some(id.clone()),
                    checkout_id: None,
                    billing_reason: "subscription_cycle",
                    amount: product.price_amount,
                    proration: false,
                    metadata: s.metadata.clone(),
                },
                at,
            );
            self.order_events(ev, &["order.created"], &order_id, at);
            if failed {
                self.sub_events(ev, &["subscription.past_due"], &id, at);
            } else {
                self.order_mut(&order_id).expect("exists").status = "paid".into();
                self.order_events(ev, &["order.updated", "order.paid"], &order_id, at);
                let grants: Vec<Grant> = self
                    .grants
                    .iter()
                    .filter(|g| g.subscription_id.as_deref() == Some(id.as_str()) && g.revoked_at.is_none())
                    .cloned()
                    .collect();
                for g in grants {
                    ev.push("benefit_grant.cycled", at, self.grant_json(&g));
                    if let Some(m) = self.benefit(&g.benefit_id).and_then(|b| b.meter_credit.clone()) {
                        self.credit_meter(&s.customer_id, &m, true, at);
                    }
                }
            }
            self.state_changed(ev, &s.customer_id, at);
        }
    }

    /// Bills the negative balance of the metered price's meter for `s`'s customer over the
    /// period ending at `at` (units consumed past those credited: with Tally's catalogue, the
    /// overage meter, which is never credited): `min(units × unit_amount, cap_amount)`, as a
    /// paid order with `billing_reason = subscription_meter_cycle`. Nothing without a metered
    /// price or a negative balance. Events received after `at` count in the next period
    /// (Polar never bills retroactively).
    fn bill_overage(&mut self, s: &Subscription, at: DateTime<Utc>, ev: &mut Events) {
        let Some(product) = self.product(&s.product_id).cloned() else { return };
        let Some(terms) = product.overage else { return };
        let Some(customer) = self.customer(&s.customer_id).cloned() else { return };
        let Some(meter) = meters().into_iter().find(|m| m.id == product.metered_meter_id) else { return };
        let consumed = self.event_units(&customer, meter.event, s.current_period_start, at);
        let credited = self.credited_units(&customer, &meter.id, s.current_period_start, at);
        let units = (consumed - credited).max(0);
        let amount = terms.charge_cents(units);
        if amount <= 0 {
            return;
        }
        let order_id = self.new_order(
            NewOrder {
                customer_id: &s.customer_id,
                product: &product,
                subscription_id: Some(s.id.clone()),
                checkout_id: None,
                billing_reason: "subscription_meter_cycle",
                amount,
                proration: false,
                metadata: s.metadata.clone(),
            },
            at,
        );
        let om = self.order_mut(&order_id).expect("exists");
        om.description = format!("{} overage: {units} credits", product.name);
        om.status = "paid".into();
        self.order_events(ev, &["order.created", "order.updated", "order.paid"], &order_id, at);
    }

    /// Refunds `amount` net cents (default: what is left) of an order; the tax charged on
    /// them goes back with them (`standin::tax::tax_refunded_with`).
    pub fn refund_order(
        &mut self,
        order_id: &str,
        amount: Option<i64>,
        reason: &str,
        now: DateTime<Utc>,
        ev: &mut Events,
    ) -> Result<String, Refusal> {
        let o = self
            .orders
            .iter()
            .find(|o| o.id == order_id)
            .cloned()
            .ok_or_else(|| refuse(404, "ResourceNotFound", "Not found"))?;
        let left = o.amount - o.refunded_amount;
        if !matches!(o.status.as_str(), "paid" | "partially_refunded") || left <= 0 {
            return Err(refuse(403, "RefundedAlready", "Order is already fully refunded."));
        }
        let amount = amount.unwrap_or(left);
        if amount <= 0 || amount > left {
            return Err(refuse(
                422,
                "PolarRequestValidationError",
                format!("Refund amount must be between 1 and {left}."),
            ));
        }
        let tax_amount =
            super::tax::tax_refunded_with(amount, o.amount, o.refunded_amount, o.tax_amount, o.refunded_tax_amount);
        let refund_id = new_id();
        self.refunds.push(Refund {
            id: refund_id.clone(),
            order_id: order_id.into(),
            amount,
            tax_amount,
            reason: reason.into(),
            created_at: now,
        });
        let om = self.order_mut(order_id).expect("exists");
        om.refunded_amount += amount;
        om.refunded_tax_amount += tax_amount;
        om.status = if om.refunded_amount >= om.amount { "refunded".into() } else { "partially_refunded".into() };
        om.modified_at = Some(now);
        let r = self.refunds.last().expect("just pushed");
        ev.push("refund.created", now, self.refund_json(r));
        ev.push("refund.updated", now, self.refund_json(r));
        self.order_events(ev, &["order.updated", "order.refunded"], order_id, now);
        Ok(refund_id)
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
