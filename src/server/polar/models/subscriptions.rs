//! `Subscription` and the change scheduled for its renewal.

use super::*;

/// `Subscription` (the fields Tally uses). Required: what the local view cannot do without
/// (`id`, `status`, the current period); the rest defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    #[serde(default = "epoch")]
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub modified_at: Option<DateTime<Utc>>,
    pub status: SubscriptionStatus,
    #[serde(default)]
    pub amount: i64,
    #[serde(default)]
    pub currency: String,
    #[serde(default)]
    pub recurring_interval: Option<String>,
    pub current_period_start: DateTime<Utc>,
    pub current_period_end: DateTime<Utc>,
    #[serde(default)]
    pub trial_end: Option<DateTime<Utc>>,
    #[serde(default)]
    pub cancel_at_period_end: bool,
    #[serde(default)]
    pub canceled_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub ended_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub customer_id: String,
    #[serde(default)]
    pub product_id: String,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(default)]
    pub customer: Option<CustomerRef>,
    #[serde(default)]
    pub product: Option<ProductRef>,
    #[serde(default)]
    pub pending_update: Option<PendingUpdate>,
    /// The subscription's prices: a `metered_unit` one bills overage at the cycle end.
    #[serde(default)]
    pub prices: Vec<ProductPrice>,
}

impl Subscription {
    /// The overage terms of the subscription's metered price on Tally's overage meter
    /// (`overage_meter`, `POLAR_OVERAGE_METER_ID`), if it has one. A metered price on any other
    /// meter bills something Tally does not count as overage: it is ignored, with a warning
    /// (and with no overage meter configured, every metered price is).
    pub fn overage_terms(&self, overage_meter: Option<&str>) -> Option<crate::domain::usage::OverageTerms> {
        let mut terms = None;
        for price in self.prices.iter().filter(|p| p.amount_type == "metered_unit" && !p.is_archived) {
            match overage_meter {
                Some(meter) if price.meter_id.as_deref() == Some(meter) => {
                    terms = terms.or_else(|| price.overage_terms());
                }
                _ => tracing::warn!(
                    subscription_id = %self.id,
                    price_id = %price.id,
                    meter_id = price.meter_id.as_deref().unwrap_or("none"),
                    "metered price is not on the overage meter (POLAR_OVERAGE_METER_ID): Tally offers no overage under it"
                ),
            }
        }
        terms
    }

    /// The product's id: `product_id`, else the embedded product's.
    pub fn product_ref_id(&self) -> Option<&str> {
        Some(self.product_id.as_str()).filter(|p| !p.is_empty()).or(self.product.as_ref().map(|p| p.id.as_str()))
    }

    /// The customer's external id (a Tally user id for Tally's customers).
    pub fn external_customer_id(&self) -> Option<&str> {
        self.customer.as_ref().and_then(|c| c.external_id.as_deref())
    }

    /// When this state was current: `modified_at`, else `created_at`.
    pub fn as_of(&self) -> DateTime<Utc> {
        self.modified_at.unwrap_or(self.created_at)
    }
}

/// A change scheduled for the renewal (`next_period` proration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingUpdate {
    #[serde(default)]
    pub product_id: Option<String>,
    #[serde(default)]
    pub applies_at: Option<DateTime<Utc>>,
}
