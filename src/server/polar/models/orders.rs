//! `Order` and what an order or a subscription embeds of its product and customer.

use super::*;

/// `Order` (the fields Tally uses). Only what Tally cannot do without is required (`id`,
/// `status`, `billing_reason`); the rest defaults, as an older or partial payload may lack it.
/// Amounts are cents: `net_amount` before tax, `tax_amount`, `total_amount` = net + tax;
/// `refunded_amount` is net of tax too, `refunded_tax_amount` the tax refunded with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    #[serde(default = "epoch")]
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub modified_at: Option<DateTime<Utc>>,
    pub status: OrderStatus,
    #[serde(default)]
    pub paid: bool,
    pub billing_reason: OrderBillingReason,
    #[serde(default)]
    pub subtotal_amount: i64,
    /// `None` from payloads older than the 2026-04 API: then `total_amount - tax_amount`.
    #[serde(default)]
    pub net_amount: Option<i64>,
    #[serde(default)]
    pub tax_amount: i64,
    #[serde(default)]
    pub total_amount: i64,
    #[serde(default)]
    pub refunded_amount: i64,
    #[serde(default)]
    pub refunded_tax_amount: i64,
    #[serde(default)]
    pub currency: String,
    #[serde(default)]
    pub customer_id: String,
    #[serde(default)]
    pub product_id: Option<String>,
    #[serde(default)]
    pub subscription_id: Option<String>,
    #[serde(default)]
    pub checkout_id: Option<String>,
    #[serde(default)]
    pub invoice_number: Option<String>,
    #[serde(default)]
    pub is_invoice_generated: bool,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub billing_name: Option<String>,
    #[serde(default)]
    pub billing_address: Option<Address>,
    #[serde(default)]
    pub customer: Option<CustomerRef>,
    #[serde(default)]
    pub product: Option<ProductRef>,
}

impl Order {
    /// The product's id: `product_id`, else the embedded product's.
    pub fn product_ref_id(&self) -> Option<&str> {
        self.product_id.as_deref().or(self.product.as_ref().map(|p| p.id.as_str()))
    }

    /// The customer's external id (a Tally user id for Tally's customers).
    pub fn external_customer_id(&self) -> Option<&str> {
        self.customer.as_ref().and_then(|c| c.external_id.as_deref())
    }
}

/// The product embedded in an order or a subscription: what Tally reads of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProductRef {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub recurring_interval: Option<String>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// The customer embedded in an order or a subscription: enough to tell whose it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerRef {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub external_id: Option<String>,
}
