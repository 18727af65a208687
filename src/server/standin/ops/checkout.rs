//! The hosted checkout's outcomes (paid, declined, expired) and the benefit grants a purchase makes.

use super::*;
use chrono::{DateTime, Utc};

impl World {
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

    pub(super) fn grant_benefits(
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
    pub(super) fn credit_meter(&mut self, customer_id: &str, m: &MeterCredit, cycle: bool, at: DateTime<Utc>) {
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

    pub(super) fn revoke_grants(&mut self, subscription_id: &str, now: DateTime<Utc>, ev: &mut Events) {
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
}
