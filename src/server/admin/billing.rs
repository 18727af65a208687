//! A customer's billing as an operator sees it: Tally's copy (the subscriptions as last
//! applied, the Customer State as last stored), Polar's Customer State read on request, and the
//! resync from Polar, audited like every action.

use super::{checked, record, ActionError, Operator};
use crate::server::billing::{self, customer_state, subscriptions::LiveSubscription, Billing};
use serde_json::{json, Value};
use sqlx::PgConnection;
use uuid::Uuid;

/// Subscriptions shown (newest first).
const SUBSCRIPTIONS: i64 = 10;

/// What Tally holds of the customer's billing.
#[derive(Debug, Clone)]
pub struct BillingCopy {
    /// Live or not, newest first.
    pub subscriptions: Vec<LiveSubscription>,
    /// The Customer State as last stored (`None`: Polar was never asked about them).
    pub state: Option<customer_state::StateRead>,
}

/// Tally's copy of `customer`'s billing.
pub async fn billing_copy(conn: &mut PgConnection, customer: Uuid) -> Result<BillingCopy, billing::Error> {
    let subscriptions = billing::subscriptions::of_user(&mut *conn, customer, SUBSCRIPTIONS).await?;
    let state = customer_state::stored(&mut *conn, customer).await?.and_then(|s| s.read());
    Ok(BillingCopy { subscriptions, state })
}

/// Polar's Customer State for `customer`, read now (and stored, as any read of it is). Through
/// the background client, like `tally polar reconcile`: an operator's look is not counted in
/// the customer's own budget. When Polar cannot be reached, the last known state, marked stale.
pub async fn ask_polar(billing: &Billing, customer: Uuid) -> Result<customer_state::StateRead, billing::Error> {
    customer_state::read_state(billing, customer, chrono::Duration::zero(), customer_state::Reader::Background).await
}

/// The customer's usage as the ledger has it against Polar's meters, now: per event, the
/// credits in the ledger, on Polar's meter, on their way (queued) and parked (see
/// `usage::reconcile`). What Polar counted is what was sent.
pub async fn usage_at_polar(
    billing: &Billing,
    customer: Uuid,
) -> Result<Vec<crate::server::usage::reconcile::Drift>, ActionError> {
    let client = billing::polar_background(billing)?;
    crate::server::usage::reconcile::measure(&billing.pool, client, customer, chrono::Utc::now()).await.map_err(|e| {
        match e {
            crate::server::usage::reconcile::Error::Db(e) => ActionError::Db(e),
            crate::server::usage::reconcile::Error::Polar(e) => ActionError::Billing(e.into()),
        }
    })
}

/// What a resync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resynced {
    /// Applied now: the plan Polar's benefits stand for.
    Now { plan: String },
    /// This form was sent before: nothing more was done (and Polar was not asked again).
    Already,
}

/// Re-reads `customer` from Polar (customer link, Customer State, subscriptions) and applies it,
/// as `tally polar reconcile` does, as `op` with `reason`: the subscriptions as Polar has them
/// and the audit row (plan and subscriptions before and after) in one transaction.
pub async fn resync(
    billing: &Billing,
    op: &Operator,
    customer: Uuid,
    reason: &str,
    form_key: &str,
) -> Result<Resynced, ActionError> {
    let reason = checked(reason, form_key)?;
    let key = format!("operator:{form_key}:resync");
    let exists: Option<bool> = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM operator_audit WHERE idempotency_key = $2) FROM users WHERE id = $1",
    )
    .bind(customer)
    .bind(&key)
    .fetch_optional(&billing.pool)
    .await?;
    match exists {
        None => return Err(ActionError::NoCustomer),
        Some(true) => return Ok(Resynced::Already),
        Some(false) => {}
    }
    let before_state = customer_state::stored(&billing.pool, customer).await?.and_then(|s| s.read());
    let read = billing::read_from_polar(billing, customer).await?;
    let mut tx = billing.pool.begin().await?;
    let before = snapshot(&mut tx, customer, before_state.as_ref()).await?;
    billing::apply_from_polar(&mut tx, billing, &read).await?;
    let after = snapshot(&mut tx, customer, Some(&read.state)).await?;
    if !record(&mut tx, op, "resync", customer, reason, before, after, &key).await? {
        tx.rollback().await?;
        return Ok(Resynced::Already);
    }
    tx.commit().await?;
    customer_state::forget_cached_state(billing, customer).await;
    tracing::info!(operator = %op.id, %customer, "operator resynced a customer from Polar");
    Ok(Resynced::Now { plan: read.state.plan().to_string() })
}

/// The plan and the subscriptions, as an audit row keeps them.
async fn snapshot(
    conn: &mut PgConnection,
    customer: Uuid,
    state: Option<&customer_state::StateRead>,
) -> Result<Value, billing::Error> {
    let subs = billing::subscriptions::of_user(&mut *conn, customer, SUBSCRIPTIONS).await?;
    Ok(json!({
        "plan": state.map(|s| s.plan().to_string()),
        "subscriptions": subs
            .iter()
            .map(|s| json!({ "id": s.id, "status": s.status, "cancel_at_period_end": s.cancel_at_period_end }))
            .collect::<Vec<_>>(),
    }))
}
