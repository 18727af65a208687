//! Orders: a new one billed to the customer as they are now, and refunds.

use super::*;
use chrono::{DateTime, Utc};

impl World {
    /// A pending order billed to the customer's billing name and address as they are now.
    pub(super) fn new_order(&mut self, o: NewOrder<'_>, now: DateTime<Utc>) -> String {
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
        let tax_amount =
            crate::server::standin::tax::tax_on(amount, country.as_deref(), buyer.and_then(|c| c.tax_id.as_ref()));
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
        let tax_amount = crate::server::standin::tax::tax_refunded_with(
            amount,
            o.amount,
            o.refunded_amount,
            o.tax_amount,
            o.refunded_tax_amount,
        );
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
