//! The operator console's service (issue 28): who is an operator, finding a customer, and the
//! actions an operator takes, each written to the append-only `operator_audit` in the same
//! transaction as its effect (`migrations/…_operators.sql`). Operators are made and unmade only
//! from the server's command line (`tally operator add|remove|list`).

mod account;
pub mod audit;
mod billing;
mod events;

pub use account::{resend_verification, Resent};
pub use billing::{ask_polar, billing_copy, resync, usage_at_polar, BillingCopy, Resynced};
pub use events::{retry_usage_event, retry_webhook, Requeued};

use crate::server::ledger::{self, AdjustError};
use crate::server::mail::{self, SentMail};
use crate::server::usage::shipper::{self, Waiting};
use crate::server::webhooks::inbox::{self, StoredEvent};
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// A signed-in operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    pub id: Uuid,
    pub email: String,
}

/// The operator with this account id, if the account is one.
pub async fn operator(pool: &PgPool, user_id: Uuid) -> Result<Option<Operator>, sqlx::Error> {
    let row: Option<(Uuid, String)> =
        sqlx::query_as("SELECT u.id, u.email FROM operators o JOIN users u ON u.id = o.user_id WHERE o.user_id = $1")
            .bind(user_id)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(id, email)| Operator { id, email }))
}

/// Makes the account with `email` an operator; false when it already was one.
pub async fn add(pool: &PgPool, email: &str) -> Result<bool, String> {
    let user = user_by_email(pool, email).await?;
    let added = sqlx::query("INSERT INTO operators (user_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(user)
        .execute(pool)
        .await
        .map_err(|e| e.to_string())?;
    Ok(added.rows_affected() == 1)
}

/// Takes the role from the account with `email`; false when it did not have it.
pub async fn remove(pool: &PgPool, email: &str) -> Result<bool, String> {
    let user = user_by_email(pool, email).await?;
    let removed = sqlx::query("DELETE FROM operators WHERE user_id = $1")
        .bind(user)
        .execute(pool)
        .await
        .map_err(|e| e.to_string())?;
    Ok(removed.rows_affected() == 1)
}

/// Every operator: email and since when.
pub async fn list(pool: &PgPool) -> Result<Vec<(String, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as("SELECT u.email, o.granted_at FROM operators o JOIN users u ON u.id = o.user_id ORDER BY u.email")
        .fetch_all(pool)
        .await
}

async fn user_by_email(pool: &PgPool, email: &str) -> Result<Uuid, String> {
    sqlx::query_scalar("SELECT id FROM users WHERE lower(email) = lower($1)")
        .bind(email.trim())
        .fetch_optional(pool)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no account with email {}", email.trim()))
}

/// A customer found by [`find`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub id: Uuid,
    pub email: String,
    pub created_at: DateTime<Utc>,
    pub polar_customer_id: Option<String>,
}

/// Customers matching `query`: an email (whole, any case), a Tally user id, a Polar customer id,
/// or the visible prefix of an API key (`tly_…`). At most 20, newest first.
pub async fn find(pool: &PgPool, query: &str) -> Result<Vec<Found>, sqlx::Error> {
    let q = query.trim();
    if q.is_empty() || q.len() > 320 {
        return Ok(vec![]);
    }
    let as_id = Uuid::parse_str(q).ok();
    let rows: Vec<(Uuid, String, DateTime<Utc>, Option<String>)> = sqlx::query_as(
        "SELECT u.id, u.email, u.created_at, pc.polar_customer_id
           FROM users u LEFT JOIN polar_customers pc ON pc.user_id = u.id
          WHERE lower(u.email) = lower($1)
             OR u.id = $2
             OR pc.polar_customer_id = $1
             OR u.id IN (SELECT k.user_id FROM api_keys k WHERE k.prefix = $1)
          ORDER BY u.created_at DESC
          LIMIT 20",
    )
    .bind(q)
    .bind(as_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, email, created_at, polar_customer_id)| Found { id, email, created_at, polar_customer_id })
        .collect())
}

/// Why an operator's action did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("say why, in 3 to 500 characters")]
    Reason,
    #[error("this form has expired; open the customer's page again")]
    FormKey,
    #[error("no such customer")]
    NoCustomer,
    #[error("this address is confirmed already")]
    AlreadyConfirmed,
    #[error(transparent)]
    Ledger(#[from] AdjustError),
    /// Polar refused, could not be reached, or what it sent could not be applied.
    #[error(transparent)]
    Billing(#[from] crate::server::billing::Error),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// What an action did: applied now, or found already done (a form sent twice, a webhook
/// retried another way), so nothing changed.
pub trait Outcome {
    fn already(&self) -> bool;
}

impl Outcome for Adjusted {
    fn already(&self) -> bool {
        matches!(self, Adjusted::AlreadyApplied)
    }
}

impl Outcome for Revoked {
    fn already(&self) -> bool {
        matches!(self, Revoked::Already)
    }
}

impl Outcome for Requeued {
    fn already(&self) -> bool {
        matches!(self, Requeued::Already)
    }
}

impl Outcome for Resent {
    fn already(&self) -> bool {
        matches!(self, Resent::Already)
    }
}

impl Outcome for Resynced {
    fn already(&self) -> bool {
        matches!(self, Resynced::Already)
    }
}

/// What a credit adjustment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adjusted {
    /// Applied now: the balance before and after.
    Applied { before: i64, after: i64 },
    /// This form was submitted before (a double click, a reload): nothing more was done.
    AlreadyApplied,
}

/// Grants (`delta` > 0) or takes (`delta` < 0) credits from `customer` as `op`, with `reason`:
/// an `adjustment` entry of the ledger keyed by the form's `form_key` (a repeated submit
/// applies once) and its audit row, in one transaction.
pub async fn adjust_credits(
    pool: &PgPool,
    op: &Operator,
    customer: Uuid,
    delta: i64,
    reason: &str,
    form_key: &str,
    now: DateTime<Utc>,
) -> Result<Adjusted, ActionError> {
    let reason = checked(reason, form_key)?;
    let mut tx = pool.begin().await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)")
        .bind(customer)
        .fetch_one(&mut *tx)
        .await?;
    if !exists {
        return Err(ActionError::NoCustomer);
    }
    let key = format!("operator:{form_key}");
    let before = ledger::balance(&mut *tx, customer, now).await?.total;
    let after = ledger::adjust(&mut tx, customer, delta, reason, &key, now).await?;
    let action = if delta > 0 { "grant_credits" } else { "take_credits" };
    let recorded = record(
        &mut tx,
        op,
        action,
        customer,
        reason,
        json!({ "balance": before }),
        json!({ "balance": after, "delta": delta }),
        &key,
    )
    .await?;
    if !recorded {
        // The ledger already had this key (its adjustment changed nothing now).
        tx.rollback().await?;
        return Ok(Adjusted::AlreadyApplied);
    }
    tx.commit().await?;
    tracing::info!(operator = %op.id, %customer, delta, "operator adjusted credits");
    Ok(Adjusted::Applied { before, after })
}

/// One row of the audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub operator_email: String,
    pub action: String,
    pub target_user: Option<Uuid>,
    pub reason: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// The newest `limit` audit rows, of one customer or of all.
pub async fn audit(pool: &PgPool, customer: Option<Uuid>, limit: i64) -> Result<Vec<AuditRow>, sqlx::Error> {
    audit::page(pool, &audit::AuditFilter { customer, ..Default::default() }, None, limit).await
}

/// An API key as an operator sees it: visible prefix, name, created, revoked.
pub type KeyRow = (String, String, DateTime<Utc>, Option<DateTime<Utc>>);

/// What an operator's customer page shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Overview {
    pub id: Uuid,
    pub email: String,
    pub created_at: DateTime<Utc>,
    pub polar_customer_id: Option<String>,
    pub balance: ledger::Balance,
    pub api_keys: Vec<KeyRow>,
    /// The newest webhook events about the customer.
    pub webhooks: Vec<StoredEvent>,
    /// Their usage events not sent yet: queued or parked.
    pub usage: Vec<Waiting>,
    /// When they confirmed their address (`None`: not yet).
    pub email_verified_at: Option<DateTime<Utc>>,
    /// The newest mails to them.
    pub mail: Vec<SentMail>,
    pub audit: Vec<AuditRow>,
}

/// The customer `id` as an operator sees them; `None` when there is no such account.
pub async fn overview(pool: &PgPool, id: Uuid, now: DateTime<Utc>) -> Result<Option<Overview>, sqlx::Error> {
    type Row = (String, DateTime<Utc>, Option<String>, Option<DateTime<Utc>>);
    let Some((email, created_at, polar_customer_id, email_verified_at)): Option<Row> = sqlx::query_as(
        "SELECT u.email, u.created_at, pc.polar_customer_id, u.email_verified_at FROM users u
               LEFT JOIN polar_customers pc ON pc.user_id = u.id WHERE u.id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let balance = ledger::balance(pool, id, now).await?;
    let api_keys = sqlx::query_as(
        "SELECT prefix, name, created_at, revoked_at FROM api_keys WHERE user_id = $1 ORDER BY created_at DESC LIMIT 50",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    let webhooks = inbox::of_customer(pool, id, 20).await?;
    let usage = shipper::waiting_of(pool, id, 20).await?;
    let mail = mail::of_customer(pool, id, 10).await?;
    let audit = audit(pool, Some(id), 20).await?;
    Ok(Some(Overview {
        id,
        email,
        created_at,
        polar_customer_id,
        balance,
        api_keys,
        webhooks,
        usage,
        email_verified_at,
        mail,
        audit,
    }))
}

/// A page of `customer`'s ledger for an operator: entries of `filter`, newest first, just
/// older than `before`; each with what it was in words.
pub async fn ledger_page(
    pool: &PgPool,
    customer: Uuid,
    now: DateTime<Utc>,
    filter: &ledger::history::Filter,
    before: Option<ledger::history::Cursor>,
    limit: i64,
) -> Result<ledger::history::Page, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    ledger::history::filtered_page(&mut conn, customer, now, filter, before, limit).await
}

/// What revoking a key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    Now,
    /// Already revoked (by the customer, or by this same form sent again): nothing changed.
    Already,
}

/// Revokes `customer`'s API key with visible `prefix` as `op`, with `reason`; the revocation and
/// its audit row in one transaction, a repeated form applied once.
pub async fn revoke_key(
    pool: &PgPool,
    op: &Operator,
    customer: Uuid,
    prefix: &str,
    reason: &str,
    form_key: &str,
) -> Result<Revoked, ActionError> {
    let reason = checked(reason, form_key)?;
    let mut tx = pool.begin().await?;
    let key: Option<(Uuid, Option<DateTime<Utc>>)> =
        sqlx::query_as("SELECT id, revoked_at FROM api_keys WHERE user_id = $1 AND prefix = $2 FOR UPDATE")
            .bind(customer)
            .bind(prefix)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((key_id, revoked_at)) = key else { return Err(ActionError::NoCustomer) };
    if revoked_at.is_some() {
        return Ok(Revoked::Already);
    }
    sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE id = $1").bind(key_id).execute(&mut *tx).await?;
    let recorded = record(
        &mut tx,
        op,
        "revoke_api_key",
        customer,
        reason,
        json!({ "key": prefix, "revoked": false }),
        json!({ "key": prefix, "revoked": true }),
        // One page's forms share its form key: the action and the key name this form.
        &format!("operator:{form_key}:revoke:{prefix}"),
    )
    .await?;
    if !recorded {
        tx.rollback().await?;
        return Ok(Revoked::Already);
    }
    tx.commit().await?;
    tracing::info!(operator = %op.id, %customer, key = %prefix, "operator revoked an API key");
    Ok(Revoked::Now)
}

/// The reason, trimmed, once it and the form key are acceptable.
fn checked<'a>(reason: &'a str, form_key: &str) -> Result<&'a str, ActionError> {
    let reason = reason.trim();
    if !(3..=500).contains(&reason.chars().count()) {
        return Err(ActionError::Reason);
    }
    if !(16..=64).contains(&form_key.len())
        || !form_key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ActionError::FormKey);
    }
    Ok(reason)
}

/// Writes an action's audit row in the action's transaction; false when this form's action was
/// already recorded.
#[allow(clippy::too_many_arguments)]
async fn record(
    tx: &mut sqlx::PgConnection,
    op: &Operator,
    action: &str,
    customer: Uuid,
    reason: &str,
    before: serde_json::Value,
    after: serde_json::Value,
    key: &str,
) -> Result<bool, sqlx::Error> {
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO operator_audit (operator_id, operator_email, action, target_user, reason, before, after, idempotency_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT ON CONSTRAINT operator_audit_key DO NOTHING
         RETURNING id",
    )
    .bind(op.id)
    .bind(&op.email)
    .bind(action)
    .bind(customer)
    .bind(reason)
    .bind(before)
    .bind(after)
    .bind(key)
    .fetch_optional(tx)
    .await?;
    Ok(id.is_some())
}
