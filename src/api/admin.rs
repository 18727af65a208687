//! Server functions of the operator console (`/admin`). Every one answers 404 to anyone who is
//! not an operator (as if the console did not exist), and an action needs a sign-in of the last
//! 15 minutes: past that, the operator signs in again first.

use crate::error::AppError;
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

/// How recent an operator's sign-in must be to act.
pub const FRESH_SIGN_IN_MINUTES: i64 = 15;

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerView {
    pub id: String,
    pub email: String,
    pub created: String,
    pub polar_customer_id: Option<String>,
    pub total: i64,
    /// (source, credits) for every source holding credits.
    pub buckets: Vec<(String, i64)>,
    pub entries: Vec<EntryLine>,
    pub api_keys: Vec<KeyLine>,
    pub webhooks: Vec<WebhookLine>,
    pub usage: Vec<UsageLine>,
    pub audit: Vec<AuditLine>,
    /// A fresh key for the action forms: a repeated submit of one form applies once.
    pub form_key: String,
    /// Whether the operator's sign-in is recent enough to act.
    pub fresh: bool,
}

#[cfg(feature = "ssr")]
fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// The signed-in operator, or 404 for anyone else.
#[cfg(feature = "ssr")]
async fn require_operator(state: &crate::server::state::AppState) -> Result<crate::server::admin::Operator, AppError> {
    let user = crate::server::auth::session::current_user().await?.ok_or(AppError::NotFound)?;
    crate::server::admin::operator(&state.pool, user.id).await?.ok_or(AppError::NotFound)
}

/// Whether the operator's session was signed in within [`FRESH_SIGN_IN_MINUTES`].
#[cfg(feature = "ssr")]
async fn signed_in_recently(state: &crate::server::state::AppState) -> Result<bool, AppError> {
    let headers = super::request_headers();
    let at = crate::server::auth::session::signed_in_at(&state.pool, &state.config, &headers).await?;
    Ok(at.is_some_and(|at| chrono::Utc::now() - at < chrono::Duration::minutes(FRESH_SIGN_IN_MINUTES)))
}

#[server(prefix = "/api", endpoint = "admin/search")]
pub async fn admin_search(q: String) -> Result<Vec<FoundView>, AppError> {
    super::with_status(
        async {
            let state = super::state()?;
            require_operator(&state).await?;
            let found = crate::server::admin::find(&state.pool, &q).await?;
            Ok(found
                .into_iter()
                .map(|f| FoundView {
                    id: f.id.to_string(),
                    email: f.email,
                    created: when(f.created_at),
                    polar_customer_id: f.polar_customer_id,
                })
                .collect())
        }
        .await,
    )
}

#[server(prefix = "/api", endpoint = "admin/customer")]
pub async fn admin_customer(id: String) -> Result<CustomerView, AppError> {
    super::with_status(
        async {
            let state = super::state()?;
            require_operator(&state).await?;
            let id = uuid::Uuid::parse_str(&id).map_err(|_| AppError::NotFound)?;
            let o =
                crate::server::admin::overview(&state.pool, id, chrono::Utc::now()).await?.ok_or(AppError::NotFound)?;
            let b = &o.balance;
            let buckets = [
                ("Allotment", b.allotment),
                ("Purchased", b.purchased),
                ("Free", b.free),
                ("Adjustment", b.adjustment),
                ("Allotment still to come", b.pending_allotment),
            ]
            .into_iter()
            .filter(|(_, n)| *n != 0)
            .map(|(s, n)| (s.to_string(), n))
            .collect();
            Ok(CustomerView {
                id: o.id.to_string(),
                email: o.email,
                created: when(o.created_at),
                polar_customer_id: o.polar_customer_id,
                total: b.total,
                buckets,
                entries: o
                    .entries
                    .into_iter()
                    .map(|(at, kind, what, amount)| EntryLine {
                        when: when(at),
                        kind,
                        what,
                        credits: crate::server::ledger::history::signed(amount),
                    })
                    .collect(),
                api_keys: o
                    .api_keys
                    .into_iter()
                    .map(|(prefix, name, created, revoked)| KeyLine {
                        prefix,
                        name,
                        created: when(created),
                        revoked: revoked.map(when),
                    })
                    .collect(),
                webhooks: o
                    .webhooks
                    .into_iter()
                    .map(|e| WebhookLine {
                        retryable: e.status == "failed" && e.has_payload,
                        status: if e.status == "failed" { "parked".into() } else { e.status },
                        id: e.webhook_id,
                        kind: e.event_type,
                        received: when(e.received_at),
                        attempts: e.attempts,
                        error: e.last_error,
                    })
                    .collect(),
                usage: o
                    .usage
                    .into_iter()
                    .map(|u| UsageLine {
                        id: u.id,
                        external_id: u.external_id,
                        event: u.event,
                        units: u.units,
                        occurred: when(u.occurred_at),
                        status: if u.status == "failed" { "parked".into() } else { "queued".into() },
                        attempts: u.attempts,
                        error: u.last_error,
                    })
                    .collect(),
                audit: o.audit.into_iter().map(audit_line).collect(),
                form_key: crate::server::util::random_token(16),
                fresh: signed_in_recently(&state).await?,
            })
        }
        .await,
    )
}

/// Grants (`direction` = `grant`) or takes (`take`) `credits` from the customer, with a reason.
#[server(prefix = "/api", endpoint = "admin/adjust")]
pub async fn admin_adjust(
    customer: String,
    direction: String,
    credits: String,
    reason: String,
    form_key: String,
) -> Result<String, AppError> {
    super::with_status(
        async {
            use crate::server::admin;
            let state = super::state()?;
            let op = require_operator(&state).await?;
            let id = uuid::Uuid::parse_str(&customer).map_err(|_| AppError::NotFound)?;
            if !signed_in_recently(&state).await? {
                return Err(stale_sign_in());
            }
            let invalid =
                |field: &str, message: &str| AppError::Validation { field: field.into(), message: message.into() };
            let amount: i64 = credits
                .trim()
                .parse()
                .ok()
                .filter(|n| (1..=1_000_000_000).contains(n))
                .ok_or_else(|| invalid("credits", "Enter a whole number of credits from 1 to 1,000,000,000."))?;
            let delta = match direction.as_str() {
                "grant" => amount,
                "take" => -amount,
                _ => return Err(invalid("direction", "Choose to grant or to take credits.")),
            };
            match admin::adjust_credits(&state.pool, &op, id, delta, &reason, &form_key, chrono::Utc::now()).await {
                Ok(_) => Ok(super::go(&format!("/admin/customers/{id}?done=adjusted"))),
                Err(e) => Err(action_error(e)),
            }
        }
        .await,
    )
}

/// Revokes the customer's API key with visible `prefix`, with a reason.
#[server(prefix = "/api", endpoint = "admin/revoke-key")]
pub async fn admin_revoke_key(
    customer: String,
    prefix: String,
    reason: String,
    form_key: String,
) -> Result<String, AppError> {
    super::with_status(
        async {
            use crate::server::admin;
            let state = super::state()?;
            let op = require_operator(&state).await?;
            let id = uuid::Uuid::parse_str(&customer).map_err(|_| AppError::NotFound)?;
            if !signed_in_recently(&state).await? {
                return Err(stale_sign_in());
            }
            match admin::revoke_key(&state.pool, &op, id, &prefix, &reason, &form_key).await {
                Ok(_) => Ok(super::go(&format!("/admin/customers/{id}?done=revoked"))),
                Err(e) => Err(action_error(e)),
            }
        }
        .await,
    )
}

/// Puts the customer's parked webhook event `webhook_id` back in the queue, with a reason.
#[server(prefix = "/api", endpoint = "admin/retry-webhook")]
pub async fn admin_retry_webhook(
    customer: String,
    webhook_id: String,
    reason: String,
    form_key: String,
) -> Result<String, AppError> {
    super::with_status(
        async {
            let state = super::state()?;
            let op = require_operator(&state).await?;
            let id = uuid::Uuid::parse_str(&customer).map_err(|_| AppError::NotFound)?;
            if !signed_in_recently(&state).await? {
                return Err(stale_sign_in());
            }
            match crate::server::admin::retry_webhook(&state.pool, &op, id, &webhook_id, &reason, &form_key).await {
                Ok(_) => Ok(super::go(&format!("/admin/customers/{id}?done=requeued"))),
                Err(e) => Err(action_error(e)),
            }
        }
        .await,
    )
}

/// Puts the customer's parked usage event (outbox `event`) back in the queue, with a reason.
#[server(prefix = "/api", endpoint = "admin/retry-usage")]
pub async fn admin_retry_usage(
    customer: String,
    event: String,
    reason: String,
    form_key: String,
) -> Result<String, AppError> {
    super::with_status(
        async {
            let state = super::state()?;
            let op = require_operator(&state).await?;
            let id = uuid::Uuid::parse_str(&customer).map_err(|_| AppError::NotFound)?;
            let event: i64 = event.trim().parse().map_err(|_| AppError::NotFound)?;
            if !signed_in_recently(&state).await? {
                return Err(stale_sign_in());
            }
            match crate::server::admin::retry_usage_event(&state.pool, &op, id, event, &reason, &form_key).await {
                Ok(_) => Ok(super::go(&format!("/admin/customers/{id}?done=requeued"))),
                Err(e) => Err(action_error(e)),
            }
        }
        .await,
    )
}

/// The audit log, newest first, filtered by action, operator email and customer id (blank: all),
/// [`AUDIT_PAGE`] rows a page, older than row `before` when given.
#[server(prefix = "/api", endpoint = "admin/audit")]
pub async fn admin_audit(
    action: String,
    operator: String,
    customer: String,
    before: Option<i64>,
) -> Result<AuditView, AppError> {
    super::with_status(
        async {
            use crate::server::admin::audit::{self, AuditFilter, ACTIONS};
            let state = super::state()?;
            require_operator(&state).await?;
            let filter = AuditFilter::parse(&action, &operator, &customer)
                .map_err(|m| AppError::Validation { field: "filter".into(), message: m.into() })?;
            let mut rows = audit::page(&state.pool, &filter, before, AUDIT_PAGE + 1).await?;
            let older = (rows.len() as i64 > AUDIT_PAGE).then(|| {
                rows.truncate(AUDIT_PAGE as usize);
                rows.last().map(|r| r.id)
            });
            Ok(AuditView {
                rows: rows.into_iter().map(audit_line).collect(),
                older: older.flatten(),
                actions: ACTIONS.iter().map(|a| a.to_string()).collect(),
            })
        }
        .await,
    )
}

/// The operator's health page: what is waiting, what is parked, how Polar's deliveries and
/// Polar's API are doing.
#[server(prefix = "/api", endpoint = "admin/health")]
pub async fn admin_health() -> Result<HealthView, AppError> {
    super::with_status(
        async {
            use crate::server::webhooks::deliveries;
            let state = super::state()?;
            require_operator(&state).await?;
            let b = crate::server::health::backlogs(&state.pool).await?;
            let streak = deliveries::streak(&state.pool, &state.webhook_refusals).await?;
            let (usage_pending, usage_oldest, usage_parked) = crate::server::usage::backlog(&state.pool).await?;
            let (drift_credits, drift_accounts) = crate::server::usage::reconcile::last_drift(&state.pool).await?;
            let circuit = |c: Option<&crate::server::polar::client::PolarClient>| {
                c.map_or("closed", |p| p.breaker().state_name()).to_string()
            };
            Ok(HealthView {
                webhooks_pending: b.pending,
                webhooks_oldest: age(b.oldest),
                webhooks_retrying: b.retrying,
                webhooks_parked: b.failed,
                at_risk: streak.at_risk(),
                refused: streak.refused,
                refused_since: streak.first_refused_at.map(when),
                refused_error: streak.last_error,
                last_accepted: streak.last_accepted_at.map(when),
                disables_after: deliveries::POLAR_DISABLES_AFTER,
                usage_pending,
                usage_oldest: age(usage_oldest),
                usage_parked,
                drift_credits,
                drift_accounts,
                mail_pending: b.mail_pending,
                mail_oldest: age(b.mail_oldest),
                polar_circuit: circuit(state.billing.polar.as_ref()),
                polar_background_circuit: circuit(state.billing.polar_background.as_ref()),
            })
        }
        .await,
    )
}

/// An age in seconds in words: "—" for nothing waiting, else seconds, minutes or hours.
#[cfg(feature = "ssr")]
fn age(seconds: Option<f64>) -> String {
    match seconds {
        None => "—".into(),
        Some(s) if s < 120.0 => format!("{} s", s.max(0.0).round()),
        Some(s) if s < 7_200.0 => format!("{} min", (s / 60.0).round()),
        Some(s) => format!("{} h", (s / 3_600.0).round()),
    }
}

/// An audit row as the console shows it.
#[cfg(feature = "ssr")]
fn audit_line(a: crate::server::admin::AuditRow) -> AuditLine {
    AuditLine {
        when: when(a.at),
        operator: a.operator_email,
        action: a.action.replace('_', " "),
        customer: a.target_user.map(|u| u.to_string()),
        change: change(a.before.as_ref(), a.after.as_ref()),
        reason: a.reason,
    }
}

/// An audit row's change in words: a balance, or what the action's target went from and to.
#[cfg(feature = "ssr")]
fn change(before: Option<&serde_json::Value>, after: Option<&serde_json::Value>) -> String {
    let (Some(before), Some(after)) = (before, after) else { return String::new() };
    if let (Some(x), Some(y)) = (before["balance"].as_i64(), after["balance"].as_i64()) {
        return format!("balance {x} → {y}");
    }
    let target = ["webhook", "usage_event", "key"]
        .iter()
        .find_map(|k| after[*k].as_str().map(|v| format!("{} {v}", k.replace('_', " "))))
        .unwrap_or_default();
    match (before["status"].as_str(), after["status"].as_str(), after["revoked"].as_bool()) {
        (Some(x), Some(y), _) => format!("{target}: {} → {}", parked(x), parked(y)),
        (_, _, Some(true)) => format!("{target}: revoked"),
        _ => target,
    }
}

/// A stored status as the console words it.
#[cfg(feature = "ssr")]
fn parked(status: &str) -> &str {
    if status == "failed" {
        "parked"
    } else {
        status
    }
}

/// The refusal of an action on a sign-in older than [`FRESH_SIGN_IN_MINUTES`].
#[cfg(feature = "ssr")]
fn stale_sign_in() -> AppError {
    AppError::Validation {
        field: "password".into(),
        message: format!("Your sign-in is over {FRESH_SIGN_IN_MINUTES} minutes old: sign in again, then repeat this."),
    }
}

/// An operator action's refusal as the form shows it.
#[cfg(feature = "ssr")]
fn action_error(e: crate::server::admin::ActionError) -> AppError {
    use crate::server::admin::ActionError;
    let invalid = |field: &str, message: String| AppError::Validation { field: field.into(), message };
    match e {
        ActionError::Reason => invalid("reason", "Say why, in 3 to 500 characters.".into()),
        ActionError::FormKey => invalid("form_key", "This form has expired; open the page again.".into()),
        ActionError::NoCustomer => AppError::NotFound,
        ActionError::Ledger(e @ crate::server::ledger::AdjustError::Insufficient { .. }) => {
            invalid("credits", e.to_string())
        }
        ActionError::Ledger(e) => crate::server::errors::internal_msg(e),
        ActionError::Db(e) => e.into(),
    }
}

#[cfg(all(test, feature = "ssr"))]
mod tests {
    use super::change;
    use serde_json::json;

    #[test]
    fn a_waiting_age_reads_in_the_unit_that_fits() {
        use super::age;
        assert_eq!(age(None), "—");
        assert_eq!(age(Some(-0.2)), "0 s");
        assert_eq!(age(Some(42.4)), "42 s");
        assert_eq!(age(Some(600.0)), "10 min");
        assert_eq!(age(Some(36_000.0)), "10 h");
    }

    #[test]
    fn an_audit_rows_change_reads_as_what_moved() {
        let row = |b: serde_json::Value, a: serde_json::Value| change(Some(&b), Some(&a));
        assert_eq!(row(json!({ "balance": 50 }), json!({ "balance": 150, "delta": 100 })), "balance 50 → 150");
        assert_eq!(
            row(
                json!({ "webhook": "msg_1", "status": "failed", "attempts": 10 }),
                json!({ "webhook": "msg_1", "status": "pending" })
            ),
            "webhook msg_1: parked → pending"
        );
        assert_eq!(
            row(
                json!({ "usage_event": "api:k:1", "status": "failed" }),
                json!({ "usage_event": "api:k:1", "status": "pending" })
            ),
            "usage event api:k:1: parked → pending"
        );
        assert_eq!(
            row(json!({ "key": "tly_ab12", "revoked": false }), json!({ "key": "tly_ab12", "revoked": true })),
            "key tly_ab12: revoked"
        );
        assert_eq!(change(None, Some(&json!({ "balance": 1 }))), "");
        assert_eq!(row(json!({}), json!({})), "");
    }
}
