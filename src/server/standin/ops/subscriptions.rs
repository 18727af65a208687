//! Subscriptions: cancel and uncancel, revoke, product changes, renewals and the cycle's overage order.

use super::*;
use chrono::{DateTime, Utc};

impl World {
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
}
