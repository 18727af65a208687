//! What the operator console's server functions answer: plain data the pages render.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoundView {
    pub id: String,
    pub email: String,
    pub created: String,
    pub polar_customer_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryLine {
    pub when: String,
    pub kind: String,
    pub what: String,
    pub credits: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyLine {
    pub prefix: String,
    pub name: String,
    pub created: String,
    pub revoked: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditLine {
    pub when: String,
    pub operator: String,
    pub action: String,
    /// The customer acted on: their Tally user id.
    pub customer: Option<String>,
    pub reason: String,
    pub change: String,
}

/// A page of the whole audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditView {
    pub rows: Vec<AuditLine>,
    /// Where the next, older page starts (`before`), when there is one.
    pub older: Option<i64>,
    /// Every action the log records, for the filter.
    pub actions: Vec<String>,
}

/// What the console's health page shows: the queues, the run of refused webhook deliveries
/// and Polar's circuit breakers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthView {
    pub webhooks_pending: i64,
    pub webhooks_oldest: String,
    pub webhooks_retrying: i64,
    pub webhooks_parked: i64,
    pub webhooks_failed_last_hour: i64,
    /// Deliveries refused in a row, since when, and why the last one was.
    pub refused: i64,
    pub refused_since: Option<String>,
    pub refused_error: Option<String>,
    pub last_accepted: Option<String>,
    /// Whether Polar may disable the endpoint soon (or has).
    pub at_risk: bool,
    /// Polar disables the endpoint after this many failures in a row.
    pub disables_after: i64,
    pub usage_pending: i64,
    pub usage_oldest: String,
    pub usage_parked: i64,
    /// Credits and accounts the last `tally polar reconcile` found drifting.
    pub drift_credits: i64,
    pub drift_accounts: i64,
    pub mail_pending: i64,
    pub mail_oldest: String,
    /// `closed`, `open` or `half_open`, for the pages' Polar client and the background one.
    pub polar_circuit: String,
    pub polar_background_circuit: String,
    /// Tally's shares of Polar's API quota, counted across every instance.
    pub quota: Vec<QuotaLine>,
}

/// One share of Polar's API quota: requests counted this minute and the one before, against
/// what it may take a minute (a count above it is requests Tally refused itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaLine {
    pub what: String,
    pub per_minute: i64,
    pub this_minute: i64,
    pub last_minute: i64,
}

/// Rows a page of the audit log shows.
pub const AUDIT_PAGE: i64 = 50;

/// A webhook event about the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookLine {
    pub id: String,
    pub kind: String,
    pub received: String,
    /// `pending`, `done`, `skipped` or `parked`.
    pub status: String,
    pub attempts: i32,
    pub error: Option<String>,
    /// Parked with a body that can be processed again.
    pub retryable: bool,
}

/// A usage event of the customer not sent to Polar yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageLine {
    pub id: i64,
    pub external_id: String,
    pub event: String,
    pub units: i64,
    pub occurred: String,
    /// `queued` or `parked`.
    pub status: String,
    pub attempts: i32,
    pub error: Option<String>,
}

/// A mail sent (or to be sent) to the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailLine {
    pub when: String,
    pub subject: String,
    /// `queued`, `sent` or `failed`, with when it was sent or the last error.
    pub status: String,
}

/// A page of the customer's ledger, with the filter that chose it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerLines {
    pub entries: Vec<EntryLine>,
    /// The filter as the form shows it back: a kind, days as `YYYY-MM-DD` (empty: any).
    pub kind: String,
    pub from: String,
    pub until: String,
    /// Every kind of entry, for the filter.
    pub kinds: Vec<String>,
    /// Where the next, older page starts (`before`), when there is one.
    pub older: Option<String>,
    /// Whether this is a later page (a link leads back to the newest).
    pub paged: bool,
    /// What of the filter was not understood and left out.
    pub notice: Option<String>,
}

/// A subscription as Tally last applied it, or as Polar has it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionLine {
    pub id: String,
    /// The plan's name, or what Polar charges for it.
    pub what: String,
    pub status: String,
    /// "renews …", "ends …" or "ended …".
    pub period: String,
}

/// A Customer State: the plan its granted benefits stand for, and what it lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateLines {
    pub plan: String,
    /// When it was read from Polar.
    pub read: String,
    /// Out of date: marked stale by a change since, or (asked now) Polar could not be reached
    /// and this is the last known state.
    pub stale: bool,
    /// The granted benefits: their slug, else their type.
    pub benefits: Vec<String>,
    pub subscriptions: Vec<SubscriptionLine>,
    /// Polar's meters: name or id, consumed, credited, balance.
    pub meters: Vec<String>,
}

/// The customer's billing: Tally's copy, this period, and Polar's answer when asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingLines {
    /// Live or not, newest first.
    pub subscriptions: Vec<SubscriptionLine>,
    /// The Customer State as last stored (`None`: Polar was never asked about them).
    pub stored: Option<StateLines>,
    /// This billing period as the customer's own billing page shows it.
    pub period: Option<crate::api::usage::PeriodView>,
    /// Polar's Customer State read now, when the operator asked: or why it could not be read.
    pub polar: Option<Result<StateLines, String>>,
    /// With it, the usage events the ledger has against what Polar's meters counted (one line
    /// per event name), or why they could not be compared.
    pub polar_usage: Option<Result<Vec<String>, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerView {
    pub id: String,
    pub email: String,
    pub created: String,
    pub polar_customer_id: Option<String>,
    pub total: i64,
    /// (source, credits) for every source holding credits.
    pub buckets: Vec<(String, i64)>,
    pub billing: BillingLines,
    pub ledger: LedgerLines,
    pub api_keys: Vec<KeyLine>,
    pub webhooks: Vec<WebhookLine>,
    pub usage: Vec<UsageLine>,
    /// When the customer confirmed their address (`None`: not confirmed).
    pub confirmed: Option<String>,
    pub mail: Vec<MailLine>,
    pub audit: Vec<AuditLine>,
    /// A fresh key for the action forms: a repeated submit of one form applies once.
    pub form_key: String,
    /// Whether the operator's sign-in is recent enough to act.
    pub fresh: bool,
}
