//! Server functions of the operator console (`/admin`). Every one answers 404 to anyone who is
//! not an operator (as if the console did not exist), and an action needs a sign-in of the last
//! 15 minutes: past that, the operator signs in again first.

use crate::error::AppError;
use leptos::prelude::*;

/// How recent an operator's sign-in must be to act.
pub const FRESH_SIGN_IN_MINUTES: i64 = 15;

mod billing;
mod ledger;
mod views;
#[cfg(feature = "ssr")]
mod words;

pub use billing::*;
pub use ledger::LEDGER_PAGE;
pub use views::*;
#[cfg(feature = "ssr")]
use words::{age, audit_line, when};

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

/// The operator about to act on `customer` (a user id): anyone else gets 404, and a sign-in
/// older than [`FRESH_SIGN_IN_MINUTES`] is refused until the operator signs in again.
#[cfg(feature = "ssr")]
async fn acting_on(
    customer: &str,
) -> Result<(crate::server::state::AppState, crate::server::admin::Operator, uuid::Uuid), AppError> {
    let state = super::state()?;
    let op = require_operator(&state).await?;
    let id = uuid::Uuid::parse_str(customer).map_err(|_| AppError::NotFound)?;
    if !signed_in_recently(&state).await? {
        return Err(stale_sign_in());
    }
    Ok((state, op, id))
}

/// Where an action leads: back to the customer's page saying it is `done` (or `already`, when
/// it had been done before and nothing changed now), or its refusal.
#[cfg(feature = "ssr")]
fn done<T: crate::server::admin::Outcome>(
    customer: uuid::Uuid,
    done: &str,
    result: Result<T, crate::server::admin::ActionError>,
) -> Result<String, AppError> {
    result
        .map(|r| {
            let done = if r.already() { "already" } else { done };
            super::go(&format!("/admin/customers/{customer}?done={done}"))
        })
        .map_err(action_error)
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
/// The customer `id`'s page; with `polar` = `1`, Polar's Customer State is read now too. The
/// ledger shows entries of `kind` between the days `from` and `until`, from `before` on.
pub async fn admin_customer(
    id: String,
    polar: Option<String>,
    kind: Option<String>,
    from: Option<String>,
    until: Option<String>,
    before: Option<String>,
) -> Result<CustomerView, AppError> {
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
            let billing = billing::billing_lines(&state, id, polar.as_deref() == Some("1")).await?;
            let ledger = ledger::ledger_lines(&state, id, kind, from, until, before).await?;
            Ok(CustomerView {
                billing,
                id: o.id.to_string(),
                email: o.email,
                created: when(o.created_at),
                polar_customer_id: o.polar_customer_id,
                total: b.total,
                buckets,
                ledger,
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
                confirmed: o.email_verified_at.map(when),
                mail: o
                    .mail
                    .into_iter()
                    .map(|m| MailLine {
                        when: when(m.created_at),
                        subject: m.subject,
                        status: match (m.status.as_str(), m.sent_at, m.last_error) {
                            ("sent", Some(at), _) => format!("sent {}", when(at)),
                            ("failed", _, e) => {
                                format!("failed after {} attempts: {}", m.attempts, e.unwrap_or_default())
                            }
                            (_, _, Some(e)) => format!("queued, retrying ({e})"),
                            (s, _, None) => {
                                if s == "pending" {
                                    "queued".into()
                                } else {
                                    s.to_string()
                                }
                            }
                        },
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
            let (state, op, id) = acting_on(&customer).await?;
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
            done(
                id,
                "adjusted",
                admin::adjust_credits(&state.pool, &op, id, delta, &reason, &form_key, chrono::Utc::now()).await,
            )
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
            let (state, op, id) = acting_on(&customer).await?;
            done(id, "revoked", admin::revoke_key(&state.pool, &op, id, &prefix, &reason, &form_key).await)
        }
        .await,
    )
}

/// Sends the customer's address confirmation again, with a reason.
#[server(prefix = "/api", endpoint = "admin/resend-verification")]
pub async fn admin_resend_verification(customer: String, reason: String, form_key: String) -> Result<String, AppError> {
    super::with_status(
        async {
            let (state, op, id) = acting_on(&customer).await?;
            let accounts = crate::server::auth::Accounts {
                pool: &state.pool,
                passwords: &state.passwords,
                config: &state.config,
                mailer: &state.mailer,
            };
            done(id, "resent", crate::server::admin::resend_verification(accounts, &op, id, &reason, &form_key).await)
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
            let (state, op, id) = acting_on(&customer).await?;
            done(
                id,
                "requeued",
                crate::server::admin::retry_webhook(&state.pool, &op, id, &webhook_id, &reason, &form_key).await,
            )
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
            let (state, op, id) = acting_on(&customer).await?;
            let event: i64 = event.trim().parse().map_err(|_| AppError::NotFound)?;
            done(
                id,
                "requeued",
                crate::server::admin::retry_usage_event(&state.pool, &op, id, event, &reason, &form_key).await,
            )
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
            let now = chrono::Utc::now();
            let mut quota = Vec::new();
            let shares = [
                ("Pages (POLAR_PAGE_REQUESTS_PER_MINUTE)", crate::server::billing::pages_budget(&state.billing)),
                (
                    "Usage shipping (USAGE_INGEST_REQUESTS_PER_MINUTE)",
                    crate::server::usage::shipper::ingest_budget(state.config.usage_ingest_requests_per_minute),
                ),
            ];
            for (what, (budget, subject)) in shares {
                let (this_minute, last_minute) =
                    crate::server::throttle::counts(&state.pool, budget, subject, now).await?;
                quota.push(QuotaLine { what: what.into(), per_minute: budget.limit.into(), this_minute, last_minute });
            }
            let circuit = |c: Option<&crate::server::polar::client::PolarClient>| {
                c.map_or("closed", |p| p.breaker().state_name()).to_string()
            };
            Ok(HealthView {
                webhooks_pending: b.pending,
                webhooks_oldest: age(b.oldest),
                webhooks_retrying: b.retrying,
                webhooks_parked: b.failed,
                webhooks_failed_last_hour: b.failed_last_hour,
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
                quota,
            })
        }
        .await,
    )
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
        ActionError::AlreadyConfirmed => {
            AppError::Conflict { field: None, message: "This address is confirmed already: nothing to send.".into() }
        }
        ActionError::Ledger(e @ crate::server::ledger::AdjustError::Insufficient { .. }) => {
            invalid("credits", e.to_string())
        }
        ActionError::Ledger(e) => crate::server::errors::internal_msg(e),
        ActionError::Billing(e) => e.into(),
        ActionError::Db(e) => e.into(),
    }
}
