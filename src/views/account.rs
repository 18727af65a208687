//! What the pricing, billing and account pages show.

use crate::domain::credits::Balance;
use crate::domain::plans::{CreditPackOffer, PlanId, PlanOffer};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PricingView {
    pub offers: Vec<PlanOffer>,
    pub packs: Vec<CreditPackOffer>,
    /// The visitor's plan, when signed in.
    pub current_plan: Option<PlanId>,
    pub enterprise_demo_url: Option<String>,
}

/// The paid subscription a page shows, as the last Polar webhook described it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionView {
    pub status: String,
    pub renews_or_ends_on: String,
    pub cancel_at_period_end: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountView {
    pub email: String,
    pub plan: PlanId,
    pub subscription: Option<SubscriptionView>,
    pub member_since: String,
    pub credits: Balance,
    /// When a credit day begins, e.g. "00:00 UTC" or "00:00 UTC+02:00".
    pub day_boundary: String,
    /// Set when the plan shown is the last known one (Polar unreachable).
    pub plan_notice: Option<String>,
    /// Whether the user has a Polar customer (so the portal can open).
    pub has_billing_account: bool,
    /// Whether the account's email address is confirmed (the free credits come with it).
    pub email_verified: bool,
    /// The free credits an account receives once confirmed.
    pub free_credits: i64,
}

/// One line of the credit history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerLine {
    pub when: String,
    pub what: String,
    /// Signed, e.g. `+50` or `-1`; a run's total.
    pub amount: String,
    pub is_debit: bool,
    /// A run of consecutive spends (one operation, API key and credit day) shown as one line:
    /// its first entries, newest first, to expand; empty for a single entry.
    pub parts: Vec<LedgerPart>,
    /// How many entries the line stands for (more than `parts` when the run is long).
    pub count: u64,
    /// For a run longer than `parts`: the CSV export of the UTC days it spans.
    pub export: Option<String>,
}

/// One entry of a run, as its expanded line lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerPart {
    pub when: String,
    pub amount: String,
}

/// A day of usage for the chart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageDay {
    /// `Nov 3`.
    pub label: String,
    pub credits: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityView {
    pub lines: Vec<LedgerLine>,
    /// Cursor of the page of newer entries (`?after=`), if there is one.
    pub newer: Option<String>,
    /// Cursor of the page of older entries (`?before=`), if there is one.
    pub older: Option<String>,
    /// The last 30 credit days, oldest first.
    pub usage: Vec<UsageDay>,
}

/// Lines per page of the credit history.
pub const LEDGER_PAGE_SIZE: i64 = 15;
