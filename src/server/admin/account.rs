//! An operator sends a customer's address confirmation again, with a reason: the mail queued
//! and its audit row in one transaction, a repeated form applied once.

use super::{checked, record, ActionError, Operator};
use crate::server::auth::{self, Accounts};
use serde_json::json;
use uuid::Uuid;

/// What resending did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resent {
    /// A new confirmation mail is queued.
    Now,
    /// This form was sent before: nothing more was queued.
    Already,
}

/// Queues a new confirmation link to `customer`'s address as `op`. Refused when the address
/// is confirmed already.
pub async fn resend_verification(
    accounts: Accounts<'_>,
    op: &Operator,
    customer: Uuid,
    reason: &str,
    form_key: &str,
) -> Result<Resent, ActionError> {
    let reason = checked(reason, form_key)?;
    let mut tx = accounts.pool.begin().await?;
    let row: Option<(String, Option<chrono::DateTime<chrono::Utc>>)> =
        sqlx::query_as("SELECT email, email_verified_at FROM users WHERE id = $1 AND deleted_at IS NULL FOR UPDATE")
            .bind(customer)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((email, verified)) = row else { return Err(ActionError::NoCustomer) };
    if verified.is_some() {
        return Err(ActionError::AlreadyConfirmed);
    }
    auth::recovery::queue_verification(&mut tx, accounts, customer, &email).await?;
    let recorded = record(
        &mut tx,
        op,
        "resend_verification",
        customer,
        reason,
        json!({ "email": email, "confirmed": false }),
        json!({ "email": email, "mail": "queued" }),
        &format!("operator:{form_key}:resend-verification"),
    )
    .await?;
    if !recorded {
        tx.rollback().await?;
        return Ok(Resent::Already);
    }
    tx.commit().await?;
    accounts.mailer.wake();
    tracing::info!(operator = %op.id, %customer, "operator sent the address confirmation again");
    Ok(Resent::Now)
}
