//! How each object is written on the wire (Polar's 2026-04 schemas).

use super::*;

impl World {
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
        let tax = country.as_deref().map(|k| crate::server::standin::tax::tax_on(amount, Some(k), tax_id.as_ref()));
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
