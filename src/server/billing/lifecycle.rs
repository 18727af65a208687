//! An account's life at Polar beyond a single purchase: deletion (Polar's customer first,
//! then the local data) and reconciliation (re-reading everything Polar has for a user).

use super::customer_state::{forget_cached_state, read_state, Reader};
use super::customers::ensure_customer;
use super::Billing;
use super::{polar_for, sync, Error, Result};
use crate::domain::plans::PlanId;
use crate::server::polar::PolarError;
use chrono::{Duration, Utc};
use uuid::Uuid;

/// Deletes the account: first the Polar customer (its subscriptions end and benefits are
/// revoked there; anonymized per `POLAR_DELETE_ANONYMIZE`), then locally the user is
/// pseudonymized, signed out everywhere and their keys revoked. The ledger keeps its totals.
/// If Polar cannot be reached nothing is deleted (a local-only deletion would leave a paying
/// subscription behind).
///
/// Overage run up this period is billed by Polar at the period's end, with the renewal; a
/// customer deleted before then would never be billed it. So a customer's own deletion is
/// refused while the current period has overage ([`Deletion::Customer`]), naming the amount
/// and the date; an operator may delete anyway from the CLI ([`Deletion::OperatorKeepsOverage`],
/// logged). New overage closes before Polar is called, so none can be run up meanwhile.
pub async fn delete_account(billing: &Billing, user: Uuid, how: Deletion) -> Result<()> {
    let reopen = close_overage_for_deletion(billing, user, how).await?;
    let deleted = match polar_for(billing, user).await {
        Ok(client) => match client.delete_customer(&user.to_string(), billing.config.polar.anonymize_on_delete).await {
            Ok(()) | Err(PolarError::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::from(e)),
        },
        Err(e) => Err(e),
    };
    if let Err(e) = deleted {
        if reopen {
            // Nothing was deleted (Polar refused or was not asked): overage is open again.
            sqlx::query("UPDATE credit_accounts SET overage_open = true WHERE user_id = $1")
                .bind(user)
                .execute(&billing.pool)
                .await?;
        }
        return Err(e);
    }
    let mut tx = billing.pool.begin().await?;
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
        "DELETE FROM polar_order_lists WHERE user_id = $1",
        "UPDATE polar_customers SET status = 'deleted', polar_customer_id = NULL, state = NULL, state_fetched_at = NULL, state_stale = false, updated_at = now() WHERE user_id = $1",
    ] {
        sqlx::query(q).bind(user).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    forget_cached_state(billing, user).await;
    tracing::info!(%user, "account deleted");
    Ok(())
}

/// Who deletes an account, which decides what happens to overage Polar has not billed yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    /// The customer, from settings: refused while this period has overage.
    Customer,
    /// An operator (`tally account delete EMAIL --with-unbilled-overage`): goes ahead, and the
    /// overage left unbilled is logged.
    OperatorKeepsOverage,
}

/// Under the account row lock: refuses a customer's deletion while the current period has
/// overage, else closes new overage for the deletion's duration. Returns whether overage was
/// open (to reopen it if Polar refuses the deletion).
async fn close_overage_for_deletion(billing: &Billing, user: Uuid, how: Deletion) -> Result<bool> {
    let mut tx = billing.pool.begin().await?;
    let now = Utc::now();
    sqlx::query("SELECT 1 FROM credit_accounts WHERE user_id = $1 FOR NO KEY UPDATE")
        .bind(user)
        .execute(&mut *tx)
        .await?;
    let unbilled = crate::server::ledger::period::unbilled(&mut *tx, user, now).await?;
    if let Some(last) = unbilled.last() {
        let cents: i64 = unbilled.iter().map(|u| u.charge_cents()).sum();
        let credits: i64 = unbilled.iter().map(|u| u.overage).sum();
        let amount = crate::domain::money::format_cents_exact(cents, "usd");
        match how {
            Deletion::Customer => {
                return Err(Error::Conflict(format!(
                    "Your account has {amount} of overage this period ({} credits), which Polar bills with your \
                     renewal on {}. You can delete your account once that invoice is issued.",
                    crate::domain::money::group_thousands(credits.unsigned_abs()),
                    last.end.format("%B %-d, %Y at %H:%M UTC")
                )));
            }
            Deletion::OperatorKeepsOverage => tracing::warn!(
                %user,
                overage_credits = credits,
                unbilled_cents = cents,
                period_end = %last.end,
                "account deleted by an operator with overage Polar has not billed"
            ),
        }
    }
    let was_open: Option<bool> = sqlx::query_scalar(
        "UPDATE credit_accounts a SET overage_open = false FROM credit_accounts old
          WHERE a.user_id = $1 AND old.user_id = a.user_id RETURNING old.overage_open",
    )
    .bind(user)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(was_open.unwrap_or(false))
}

/// Re-syncs one user from Polar: links the customer, refreshes the Customer State and applies
/// every subscription as Polar has it now, through [`super::sync`]. Returns the plan it finds.
///
/// Background work (the CLI, the scheduled reconcile, an operator's resync): it uses the
/// background client and its breaker, and its caller paces it.
pub async fn reconcile(billing: &Billing, user: Uuid) -> Result<PlanId> {
    let read = read_from_polar(billing, user).await?;
    let mut tx = billing.pool.begin().await?;
    apply_from_polar(&mut tx, billing, &read).await?;
    tx.commit().await?;
    forget_cached_state(billing, user).await;
    Ok(read.state.plan())
}

/// What [`reconcile`] reads from Polar about a user.
#[derive(Debug, Clone)]
pub struct FromPolar {
    /// The Customer State, read now (and stored in the cache).
    pub state: super::customer_state::StateRead,
    pub subscriptions: Vec<crate::server::polar::models::Subscription>,
}

/// [`reconcile`]'s reads: links the customer, refreshes the Customer State, lists the
/// subscriptions. Nothing of the subscriptions is applied yet: see [`apply_from_polar`].
pub async fn read_from_polar(billing: &Billing, user: Uuid) -> Result<FromPolar> {
    let client = super::polar_background(billing)?;
    ensure_customer(billing, client, user).await?;
    let state = read_state(billing, user, Duration::zero(), Reader::Background).await?;
    let subscriptions = client.list_subscriptions(&user.to_string()).await?;
    Ok(FromPolar { state, subscriptions })
}

/// Applies the subscriptions [`read_from_polar`] found, in the caller's transaction (an
/// operator's resync writes its audit row in the same one). After the commit, call
/// [`forget_cached_state`].
pub async fn apply_from_polar(tx: &mut sqlx::PgConnection, billing: &Billing, read: &FromPolar) -> Result<()> {
    for sub in &read.subscriptions {
        sync::subscription(&mut *tx, &billing.config, sub, Utc::now()).await.map_err(|e| match e {
            sync::Error::Db(e) => Error::Db(e),
            sync::Error::Invalid(m) => Error::Polar(PolarError::Decode(m)),
        })?;
    }
    Ok(())
}
