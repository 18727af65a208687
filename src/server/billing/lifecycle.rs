//! An account's life at Polar beyond a single purchase: deletion (Polar's customer first,
//! then the local data) and reconciliation (re-reading everything Polar has for a user).

use super::customer_state::{customer_state, forget_cached_state};
use super::customers::ensure_customer;
use super::{polar, polar_for, sync, Error, Result};
use crate::domain::plans::PlanId;
use crate::server::polar::PolarError;
use crate::server::state::AppState;
use chrono::{Duration, Utc};
use uuid::Uuid;

/// Deletes the account: first the Polar customer (its subscriptions end and benefits are
/// revoked there; anonymized per `POLAR_DELETE_ANONYMIZE`), then locally the user is
/// pseudonymized, signed out everywhere and their keys revoked. The ledger keeps its totals.
/// If Polar cannot be reached nothing is deleted (a local-only deletion would leave a paying
/// subscription behind).
pub async fn delete_account(state: &AppState, user: Uuid) -> Result<()> {
    match polar_for(state, user).await?.delete_customer(&user.to_string(), state.config.polar.anonymize_on_delete).await
    {
        Ok(()) | Err(PolarError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let mut tx = state.pool.begin().await?;
    let now = Utc::now();
    // Lock order, the webhook worker's too: its event rows, then the user. First what Polar
    // sent about them (events still waiting are skipped; one being applied now finishes first).
    sqlx::query(
        "UPDATE webhook_events SET payload = NULL, raw_body = NULL,
                status = CASE WHEN status = 'pending' THEN 'skipped' ELSE status END,
                last_error = CASE WHEN status = 'pending' THEN 'account deleted before processing' ELSE last_error END,
                processed_at = coalesce(processed_at, now())
          WHERE user_id = $1",
    )
    .bind(user)
    .execute(&mut *tx)
    .await?;
    // Then the user, so no event is applied for them from here on (`sync::user_of_external`
    // waits, then finds the account gone).
    sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE").bind(user).execute(&mut *tx).await?;
    // Polar cancels the deleted customer's subscriptions at once (its webhooks follow, but
    // they may come after this commit and no longer name the user): end them here, so no
    // allotment keeps accruing for an account that is gone.
    let live: Vec<(String, chrono::DateTime<Utc>)> = sqlx::query_as(
        "UPDATE subscriptions SET status = 'canceled', ended_at = coalesce(ended_at, $2), canceled_at = coalesce(canceled_at, $2),
                updated_at = $2
          WHERE user_id = $1 AND status = ANY($3) RETURNING id, current_period_start",
    )
    .bind(user)
    .bind(now)
    .bind(&super::subscriptions::LIVE_STATUSES[..])
    .fetch_all(&mut *tx)
    .await?;
    for (sub, start) in &live {
        crate::server::ledger::end_allotment(&mut tx, user, sub, *start, now, now).await?;
        let key = crate::server::ledger::period::key(sub, *start);
        crate::server::ledger::period::end(&mut tx, user, &key, now).await?;
    }
    for q in [
        // Personal data kept elsewhere (before the address is pseudonymized below): the mail
        // sent to them, their links, and the sign-in failures of their address.
        "DELETE FROM login_failures WHERE email_normalized = (SELECT lower(email) FROM users WHERE id = $1)",
        "DELETE FROM dev_mailbox WHERE lower(to_address) = (SELECT lower(email) FROM users WHERE id = $1)",
        "UPDATE outgoing_mail SET to_address = 'deleted', subject = 'deleted', body_text = NULL,
                status = CASE WHEN status = 'pending' THEN 'failed' ELSE status END,
                last_error = CASE WHEN status = 'pending' THEN 'account deleted before sending' ELSE last_error END
          WHERE user_id = $1",
        "DELETE FROM account_tokens WHERE user_id = $1",
        "DELETE FROM usage_settings WHERE user_id = $1",
        "UPDATE users SET email = 'deleted-' || id || '@deleted.invalid', password_hash = '!deleted', deleted_at = now() WHERE id = $1",
        "DELETE FROM sessions WHERE user_id = $1",
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE user_id = $1",
        "DELETE FROM billing_details WHERE user_id = $1",
        "DELETE FROM invoice_requests WHERE user_id = $1",
        "UPDATE polar_customers SET status = 'deleted', polar_customer_id = NULL, state = NULL, state_fetched_at = NULL, state_stale = false, updated_at = now() WHERE user_id = $1",
    ] {
        sqlx::query(q).bind(user).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    forget_cached_state(state, user).await;
    tracing::info!(%user, "account deleted");
    Ok(())
}

/// Re-syncs one user from Polar: links the customer, refreshes the Customer State and applies
/// every subscription as Polar has it now, through [`super::sync`]. Returns the plan it finds.
pub async fn reconcile(state: &AppState, user: Uuid) -> Result<PlanId> {
    ensure_customer(state, user).await?;
    let read = customer_state(state, user, Duration::zero()).await?;
    let subs = polar(state)?.list_subscriptions(&user.to_string()).await?;
    let mut tx = state.pool.begin().await?;
    for sub in &subs {
        sync::subscription(&mut tx, &state.config, sub, Utc::now()).await.map_err(|e| match e {
            sync::Error::Db(e) => Error::Db(e),
            sync::Error::Invalid(m) => Error::Polar(PolarError::Decode(m)),
        })?;
    }
    tx.commit().await?;
    forget_cached_state(state, user).await;
    Ok(read.plan())
}
