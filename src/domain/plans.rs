//! The plans Tally sells and the credit packs it offers. The server maps each one to a Polar
//! product (see `server::config::PlanMap`); the browser only ever names a plan by its slug.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A plan a user can be on. `Enterprise` is sold by talking to a person, never by checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanId {
    Free,
    Pro,
    Business,
    Enterprise,
}

impl PlanId {
    pub const ALL: [PlanId; 4] = [PlanId::Free, PlanId::Pro, PlanId::Business, PlanId::Enterprise];

    pub fn slug(self) -> &'static str {
        match self {
            PlanId::Free => "free",
            PlanId::Pro => "pro",
            PlanId::Business => "business",
            PlanId::Enterprise => "enterprise",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PlanId::Free => "Free",
            PlanId::Pro => "Pro",
            PlanId::Business => "Business",
            PlanId::Enterprise => "Enterprise",
        }
    }

    /// Whether the plan is bought through a Polar checkout.
    pub fn is_self_serve_paid(self) -> bool {
        matches!(self, PlanId::Pro | PlanId::Business)
    }
}

impl fmt::Display for PlanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PlanId {
    type Err = UnknownPlan;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PlanId::ALL.into_iter().find(|p| p.slug() == s).ok_or_else(|| UnknownPlan(s.to_string()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown plan `{0}` (expected one of: free, pro, business, enterprise)")]
pub struct UnknownPlan(pub String);

/// How a plan is billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    Month,
    Year,
}

/// The terms of a paid plan: written here once, read by the pricing page, the credit
/// allotments, the stand-in's catalogue and the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanTerms {
    pub plan: PlanId,
    pub monthly_price_cents: i64,
    /// A year billed yearly (ten months' price).
    pub yearly_price_cents: i64,
    pub monthly_credits: i64,
    /// The metered price of credits past the allotment on the monthly product (the stand-in's
    /// catalogue; with real Polar, the product's own `metered_unit` price decides).
    pub overage: Option<crate::domain::usage::OverageTerms>,
}

pub const PRO: PlanTerms = PlanTerms {
    plan: PlanId::Pro,
    monthly_price_cents: 1900,
    yearly_price_cents: 19000,
    monthly_credits: 5000,
    overage: Some(crate::domain::usage::OverageTerms { unit_cents: 1, cap_cents: Some(5000) }),
};
pub const BUSINESS: PlanTerms = PlanTerms {
    plan: PlanId::Business,
    monthly_price_cents: 4900,
    yearly_price_cents: 49000,
    monthly_credits: 15000,
    overage: Some(crate::domain::usage::OverageTerms { unit_cents: 1, cap_cents: Some(15000) }),
};

impl PlanTerms {
    /// The terms of a self-serve paid plan.
    pub fn of(plan: PlanId) -> Option<PlanTerms> {
        match plan {
            PlanId::Pro => Some(PRO),
            PlanId::Business => Some(BUSINESS),
            _ => None,
        }
    }
}

/// The one-time credit packs: credits and price in cents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackTerms {
    pub credits: i64,
    pub price_cents: i64,
}

pub const PACKS: [PackTerms; 2] =
    [PackTerms { credits: 50, price_cents: 500 }, PackTerms { credits: 100, price_cents: 900 }];

/// What can be bought: a plan billed by month or year, or a pack of credits. The browser names
/// an item by its slug (`pro`, `business_yearly`, `pack_50`); only the server maps it to a Polar
/// product (`server::catalog`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Item {
    Plan { plan: PlanId, interval: Interval },
    Pack { credits: i64 },
}

impl Item {
    /// Everything sold by checkout.
    pub fn all() -> Vec<Item> {
        let mut items = vec![];
        for plan in [PlanId::Pro, PlanId::Business] {
            for interval in [Interval::Month, Interval::Year] {
                items.push(Item::Plan { plan, interval });
            }
        }
        items.extend(PACKS.iter().map(|p| Item::Pack { credits: p.credits }));
        items
    }

    pub fn slug(self) -> String {
        match self {
            Item::Plan { plan, interval: Interval::Month } => plan.slug().to_string(),
            Item::Plan { plan, interval: Interval::Year } => format!("{}_yearly", plan.slug()),
            Item::Pack { credits } => format!("pack_{credits}"),
        }
    }

    /// The item of a slug, if it is one sold by checkout.
    pub fn from_slug(slug: &str) -> Option<Item> {
        Item::all().into_iter().find(|i| i.slug() == slug)
    }

    pub fn is_plan(self) -> bool {
        matches!(self, Item::Plan { .. })
    }
}

/// The benefits (matched by their metadata `slug`) that make an account "paid": each lifts the
/// Free limits below. Checked on the server by `server::billing::require_any_benefit`.
pub const PAID_BENEFITS: [&str; 2] = ["pro", "business"];
/// The longest text one metered call takes without a paid benefit.
pub const FREE_MAX_CHARS: usize = 10_000;
/// Live API keys without a paid benefit, and with one.
pub const FREE_MAX_API_KEYS: i64 = 2;
pub const PAID_MAX_API_KEYS: i64 = 20;

/// What the pricing page shows for a plan. Prices are integer cents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanOffer {
    pub plan: PlanId,
    /// Monthly price in cents; `None` for "talk to us".
    pub monthly_price_cents: Option<i64>,
    /// Price of a year billed yearly, when the plan is also sold that way.
    #[serde(default)]
    pub yearly_price_cents: Option<i64>,
    pub currency: String,
    /// Credits granted per month (Free: once, at sign-up).
    pub monthly_credits: Option<i64>,
    pub tagline: String,
    pub features: Vec<String>,
}

/// A one-time credit pack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreditPackOffer {
    /// Stable slug, e.g. `pack_50`.
    pub slug: String,
    pub credits: i64,
    pub price_cents: i64,
    pub currency: String,
}

/// The default catalogue. Amounts are overridable through configuration and, once Polar is
/// connected, come from the products' metadata.
pub fn default_offers(free_credits: i64) -> Vec<PlanOffer> {
    vec![
        PlanOffer {
            plan: PlanId::Free,
            monthly_price_cents: Some(0),
            yearly_price_cents: None,
            currency: "usd".into(),
            monthly_credits: Some(free_credits),
            tagline: "Try the API with a one-time credit grant.".into(),
            features: vec![
                format!(
                    "{} credits once, never expiring",
                    crate::domain::money::group_thousands(free_credits.max(0) as u64)
                ),
                "Buy credit packs any time".into(),
                "Texts up to 10,000 characters a call, 2 API keys".into(),
                "Community support".into(),
            ],
        },
        PlanOffer {
            plan: PlanId::Pro,
            monthly_price_cents: Some(PRO.monthly_price_cents),
            yearly_price_cents: Some(PRO.yearly_price_cents),
            currency: "usd".into(),
            monthly_credits: Some(PRO.monthly_credits),
            tagline: "For individuals shipping real work.".into(),
            features: vec![
                format!(
                    "{} credits a month, accrued daily",
                    crate::domain::money::group_thousands(PRO.monthly_credits as u64)
                ),
                "Texts up to 100,000 characters a call, 20 API keys".into(),
                "Credit packs that never expire".into(),
                "Invoices with your VAT id".into(),
            ],
        },
        PlanOffer {
            plan: PlanId::Business,
            monthly_price_cents: Some(BUSINESS.monthly_price_cents),
            yearly_price_cents: Some(BUSINESS.yearly_price_cents),
            currency: "usd".into(),
            monthly_credits: Some(BUSINESS.monthly_credits),
            tagline: "For heavy use and priority help.".into(),
            features: vec![
                format!(
                    "{} credits a month, accrued daily",
                    crate::domain::money::group_thousands(BUSINESS.monthly_credits as u64)
                ),
                "Texts up to 100,000 characters a call, 20 API keys".into(),
                "Credit packs that never expire".into(),
                "Priority email support".into(),
            ],
        },
        PlanOffer {
            plan: PlanId::Enterprise,
            monthly_price_cents: None,
            yearly_price_cents: None,
            currency: "usd".into(),
            monthly_credits: None,
            tagline: "Volume pricing, SSO and a contract.".into(),
            features: vec!["Custom credit volume".into(), "Annual invoicing".into(), "A named contact".into()],
        },
    ]
}

/// The credit packs on offer ([`PACKS`]).
pub fn default_packs() -> Vec<CreditPackOffer> {
    PACKS
        .iter()
        .map(|p| CreditPackOffer {
            slug: Item::Pack { credits: p.credits }.slug(),
            credits: p.credits,
            price_cents: p.price_cents,
            currency: "usd".into(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_slugs_round_trip() {
        for p in PlanId::ALL {
            assert_eq!(p.slug().parse::<PlanId>().unwrap(), p);
        }
        assert!("gold".parse::<PlanId>().is_err());
    }

    #[test]
    fn only_pro_and_business_are_sold_by_checkout() {
        let paid: Vec<_> = PlanId::ALL.into_iter().filter(|p| p.is_self_serve_paid()).collect();
        assert_eq!(paid, vec![PlanId::Pro, PlanId::Business]);
    }

    #[test]
    fn items_round_trip_through_their_slugs() {
        for i in Item::all() {
            assert_eq!(Item::from_slug(&i.slug()), Some(i));
        }
        assert_eq!(
            Item::from_slug("business_yearly"),
            Some(Item::Plan { plan: PlanId::Business, interval: Interval::Year })
        );
        assert_eq!(Item::from_slug("pack_50"), Some(Item::Pack { credits: 50 }));
        assert_eq!(Item::from_slug("enterprise"), None);
        assert_eq!(Item::from_slug("pack_7"), None);
    }

    #[test]
    fn default_catalogue_lists_every_plan_once() {
        let offers = default_offers(1000);
        let plans: Vec<_> = offers.iter().map(|o| o.plan).collect();
        assert_eq!(plans, PlanId::ALL.to_vec());
        assert_eq!(offers[0].features[0], "1,000 credits once, never expiring");
    }
}
