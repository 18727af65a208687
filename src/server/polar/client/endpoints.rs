//! Polar's endpoints Tally calls, by resource.

use super::*;

impl PolarClient {
    pub async fn create_checkout(&self, body: &CheckoutCreate) -> Result<Checkout, PolarError> {
        let body = serde_json::to_value(body).expect("serializable");
        self.call(Method::POST, "/v1/checkouts/", &[], Some(&body), Idempotency::Once).await
    }

    pub async fn get_checkout(&self, id: &str) -> Result<Checkout, PolarError> {
        self.call(Method::GET, &format!("/v1/checkouts/{}", path_segment(id)), &[], None, Idempotency::Safe).await
    }

    // ---- customers ----

    /// A customer portal session for the customer with this external id.
    pub async fn create_customer_session(
        &self,
        external_customer_id: &str,
        return_url: Option<&str>,
    ) -> Result<CustomerSession, PolarError> {
        let body = json!({ "external_customer_id": external_customer_id, "return_url": return_url });
        self.call(Method::POST, "/v1/customer-sessions/", &[], Some(&body), Idempotency::Once).await
    }

    pub async fn create_customer(
        &self,
        email: &str,
        external_id: &str,
        name: Option<&str>,
    ) -> Result<Customer, PolarError> {
        let body = json!({ "email": email, "external_id": external_id, "name": name });
        self.call(Method::POST, "/v1/customers/", &[], Some(&body), Idempotency::Once).await
    }

    pub async fn get_customer(&self, external_id: &str) -> Result<Customer, PolarError> {
        self.call(
            Method::GET,
            &format!("/v1/customers/external/{}", path_segment(external_id)),
            &[],
            None,
            Idempotency::Safe,
        )
        .await
    }

    pub async fn update_customer(&self, external_id: &str, update: &CustomerUpdate) -> Result<Customer, PolarError> {
        let body = serde_json::to_value(update).expect("serializable");
        // Setting fields to given values: repeating it changes nothing more.
        self.call(
            Method::PATCH,
            &format!("/v1/customers/external/{}", path_segment(external_id)),
            &[],
            Some(&body),
            Idempotency::Safe,
        )
        .await
    }

    /// Deletes the customer (204); `anonymize` also scrubs personal data at Polar.
    pub async fn delete_customer(&self, external_id: &str, anonymize: bool) -> Result<(), PolarError> {
        self.send(
            Method::DELETE,
            &format!("/v1/customers/external/{}", path_segment(external_id)),
            &[("anonymize", anonymize.to_string())],
            None,
            Idempotency::Safe,
        )
        .await
        .map(|_| ())
    }

    pub async fn customer_state(&self, external_id: &str) -> Result<CustomerState, PolarError> {
        self.call(
            Method::GET,
            &format!("/v1/customers/external/{}/state", path_segment(external_id)),
            &[],
            None,
            Idempotency::Safe,
        )
        .await
    }

    // ---- orders and invoices ----

    /// One page of a customer's orders, newest first.
    pub async fn list_orders(
        &self,
        external_customer_id: &str,
        page: u32,
        limit: u32,
    ) -> Result<ListResource<Order>, PolarError> {
        let q = [
            ("external_customer_id", external_customer_id.to_string()),
            ("page", page.to_string()),
            ("limit", limit.to_string()),
            ("sorting", "-created_at".into()),
        ];
        self.call(Method::GET, "/v1/orders/", &q, None, Idempotency::Safe).await
    }

    /// Every order of a customer, following pagination to `max_page`.
    pub async fn all_orders(&self, external_customer_id: &str) -> Result<Vec<Order>, PolarError> {
        let mut out = vec![];
        let mut page = 1;
        loop {
            let p = self.list_orders(external_customer_id, page, 100).await?;
            let n = p.items.len();
            out.extend(p.items);
            if page as i64 >= p.pagination.max_page || n < 100 {
                return Ok(out);
            }
            page += 1;
        }
    }

    pub async fn get_order(&self, id: &str) -> Result<Order, PolarError> {
        self.call(Method::GET, &format!("/v1/orders/{}", path_segment(id)), &[], None, Idempotency::Safe).await
    }

    /// Sets an order's billing name and address (needed before its invoice is generated).
    pub async fn update_order_billing(
        &self,
        id: &str,
        billing_name: &str,
        address: &Address,
    ) -> Result<Order, PolarError> {
        let body = json!({ "billing_name": billing_name, "billing_address": address });
        self.call(Method::PATCH, &format!("/v1/orders/{}", path_segment(id)), &[], Some(&body), Idempotency::Safe).await
    }

    /// Asks Polar to generate the invoice (202); it is ready when [`Self::invoice`] stops
    /// answering 404.
    pub async fn generate_invoice(&self, order_id: &str) -> Result<(), PolarError> {
        self.send(Method::POST, &format!("/v1/orders/{}/invoice", path_segment(order_id)), &[], None, Idempotency::Safe)
            .await
            .map(|_| ())
    }

    /// The invoice's download URL; `Ok(None)` while it is not generated yet.
    pub async fn invoice(&self, order_id: &str) -> Result<Option<InvoiceUrl>, PolarError> {
        match self
            .call(Method::GET, &format!("/v1/orders/{}/invoice", path_segment(order_id)), &[], None, Idempotency::Safe)
            .await
        {
            Ok(u) => Ok(Some(u)),
            Err(PolarError::NotFound { code, .. }) if code == "InvoiceDoesNotExist" => Ok(None),
            Err(e) => Err(e),
        }
    }

    // ---- products and subscriptions ----

    pub async fn list_products(&self) -> Result<Vec<Product>, PolarError> {
        let p: ListResource<Product> = self
            .call(
                Method::GET,
                "/v1/products/",
                &[("is_archived", "false".into()), ("limit", "100".into())],
                None,
                Idempotency::Safe,
            )
            .await?;
        Ok(p.items)
    }

    pub async fn get_product(&self, id: &str) -> Result<Product, PolarError> {
        self.call(Method::GET, &format!("/v1/products/{}", path_segment(id)), &[], None, Idempotency::Safe).await
    }

    pub async fn list_subscriptions(&self, external_customer_id: &str) -> Result<Vec<Subscription>, PolarError> {
        let q = [("external_customer_id", external_customer_id.to_string()), ("limit", "100".into())];
        let p: ListResource<Subscription> =
            self.call(Method::GET, "/v1/subscriptions/", &q, None, Idempotency::Safe).await?;
        Ok(p.items)
    }

    /// The orders a checkout produced.
    pub async fn orders_for_checkout(&self, checkout_id: &str) -> Result<Vec<Order>, PolarError> {
        let q = [("checkout_id", checkout_id.to_string()), ("limit", "10".into())];
        let p: ListResource<Order> = self.call(Method::GET, "/v1/orders/", &q, None, Idempotency::Safe).await?;
        Ok(p.items)
    }

    pub async fn get_subscription(&self, id: &str) -> Result<Subscription, PolarError> {
        self.call(Method::GET, &format!("/v1/subscriptions/{}", path_segment(id)), &[], None, Idempotency::Safe).await
    }

    async fn update_subscription(&self, id: &str, body: Value, idem: Idempotency) -> Result<Subscription, PolarError> {
        self.call(Method::PATCH, &format!("/v1/subscriptions/{}", path_segment(id)), &[], Some(&body), idem).await
    }

    /// Cancel at the end of the period (`true`) or undo that (`false`).
    pub async fn set_cancel_at_period_end(&self, id: &str, cancel: bool) -> Result<Subscription, PolarError> {
        self.update_subscription(id, json!({ "cancel_at_period_end": cancel }), Idempotency::Safe).await
    }

    /// Switches the subscription's product; may charge, so it is sent once.
    pub async fn change_product(
        &self,
        id: &str,
        product_id: &str,
        proration: Proration,
    ) -> Result<Subscription, PolarError> {
        self.update_subscription(
            id,
            json!({ "product_id": product_id, "proration_behavior": proration }),
            Idempotency::Once,
        )
        .await
    }

    /// Ends the subscription now.
    pub async fn revoke_subscription(&self, id: &str) -> Result<Subscription, PolarError> {
        self.call(Method::DELETE, &format!("/v1/subscriptions/{}", path_segment(id)), &[], None, Idempotency::Safe)
            .await
    }

    // ---- usage ----

    /// Ingests usage events; safe to repeat because each carries its `external_id`.
    pub async fn ingest_events(&self, events: &[UsageEvent]) -> Result<IngestResult, PolarError> {
        let body = json!({ "events": events });
        self.call(Method::POST, "/v1/events/ingest", &[], Some(&body), Idempotency::Safe).await
    }

    pub async fn list_customer_meters(&self, external_customer_id: &str) -> Result<Vec<CustomerMeter>, PolarError> {
        let p: ListResource<CustomerMeter> = self
            .call(
                Method::GET,
                "/v1/customer-meters/",
                &[("external_customer_id", external_customer_id.to_string())],
                None,
                Idempotency::Safe,
            )
            .await?;
        Ok(p.items)
    }
}
