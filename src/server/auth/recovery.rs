//! Accounts a person can recover: email verification, password reset and password change.
//!
//! - Verification: a link (24 h, single use) sent at sign-up and on request; following it
//!   confirms the address it was sent to and grants the one-time free credits (so farming them
//!   takes real inboxes). Requests are throttled per user.
//! - Reset: "forgot password" always answers the same, whether or not the address has an
//!   account; an account's owner gets a link (1 h, single use, older links die with it).
//!   Choosing a new password signs out every session, forgives the email's failed sign-ins
//!   (so a victim of a lockout gets in this way), and confirms the address. Requests are
//!   throttled per address and per email.
//! - Change: needs the current password (checked under the sign-in limiter); signs out every
//!   other session and mails the owner.

use super::Accounts;
use crate::domain::email::{check_credential_bounds, check_new_password, Email};
use crate::server::auth::tokens::{self, Purpose};
use crate::server::auth::Error;
use crate::server::auth::{rate_limit, session};
use crate::server::mail::{self, templates};
use crate::server::throttle::{self, Throttle};
use chrono::Utc;
use uuid::Uuid;

const VERIFY_MAILS: Throttle = Throttle { scope: "mail.verify", limit: 5, window_secs: 3600 };
const RESET_PER_EMAIL: Throttle = Throttle { scope: "mail.reset.email", limit: 3, window_secs: 3600 };
const RESET_PER_ADDRESS: Throttle = Throttle { scope: "mail.reset.ip", limit: 20, window_secs: 3600 };
/// Attempts to use reset links, per client address: a guess costs a lookup, never a hash.
const RESET_ATTEMPTS_PER_ADDRESS: Throttle = Throttle { scope: "reset.attempt.ip", limit: 30, window_secs: 3600 };

fn link(accounts: Accounts<'_>, path: &str, token: &str) -> String {
    format!("{}{path}?token={token}", accounts.config.app_url.as_str().trim_end_matches('/'))
}

fn throttled(r: Result<Result<(), u64>, sqlx::Error>) -> Result<(), Error> {
    match r? {
        Ok(()) => Ok(()),
        Err(secs) => Err(Error::RateLimited(secs)),
    }
}

/// Queues a verification link for the user's address, in `conn`'s transaction.
pub async fn queue_verification(
    conn: &mut sqlx::PgConnection,
    accounts: Accounts<'_>,
    user: Uuid,
    email: &str,
) -> Result<(), sqlx::Error> {
    let token = tokens::issue(conn, user, Purpose::VerifyEmail, email, Utc::now()).await?;
    let m = templates::verify_email(
        accounts.config.app_url.as_str(),
        email,
        &link(accounts, "/verify-email", &token),
        accounts.config.free_credits,
    );
    mail::enqueue(conn, Some(user), &m).await?;
    Ok(())
}

/// Sends (again) the verification link of a signed-in user whose address is not verified.
pub async fn resend_verification(accounts: Accounts<'_>, user: Uuid) -> Result<(), Error> {
    let row: Option<(String, Option<chrono::DateTime<Utc>>)> =
        sqlx::query_as("SELECT email, email_verified_at FROM users WHERE id = $1 AND deleted_at IS NULL")
            .bind(user)
            .fetch_optional(accounts.pool)
            .await?;
    let Some((email, verified)) = row else { return Err(Error::Unauthorized) };
    if verified.is_some() {
        return Err(Error::AlreadyConfirmed);
    }
    throttled(throttle::hit(accounts.pool, VERIFY_MAILS, &user.to_string(), Utc::now()).await)?;
    let mut tx = accounts.pool.begin().await?;
    queue_verification(&mut tx, accounts, user, &email).await?;
    tx.commit().await?;
    accounts.mailer.wake();
    Ok(())
}

/// What following a verification link did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// Confirmed now; `free_credits` were granted (0: the inbox had claimed them already).
    Confirmed { user: Uuid, free_credits: i64 },
    /// The address had been confirmed already (by another link).
    AlreadyConfirmed { user: Uuid },
}

/// Confirms the address a verification link was sent to, and grants the free credits once.
/// An unknown, used or expired link, or one for an address the account no longer has, is
/// refused with a field error on `token`.
pub async fn verify_email(accounts: Accounts<'_>, token: &str) -> Result<Verified, Error> {
    let now = Utc::now();
    let mut tx = accounts.pool.begin().await?;
    let invalid =
        || Error::invalid("token", "This confirmation link is not valid any more. Sign in and ask for a new one.");
    let Some((user, email)) = tokens::consume(&mut tx, token, Purpose::VerifyEmail, now).await? else {
        return Err(invalid());
    };
    let row: Option<(String, Option<chrono::DateTime<Utc>>)> =
        // FOR NO KEY UPDATE, like every lock on an account: rows referencing users (a refund's)
        // take KEY SHARE on it, which FOR UPDATE would block, in the opposite order.
        sqlx::query_as("SELECT email, email_verified_at FROM users WHERE id = $1 AND deleted_at IS NULL FOR NO KEY UPDATE").bind(user).fetch_optional(&mut *tx).await?;
    let Some((current, verified_at)) = row else { return Err(invalid()) };
    if !current.eq_ignore_ascii_case(&email) {
        // A link for an address the account no longer has is used up all the same.
        tx.commit().await?;
        return Err(invalid());
    }
    if verified_at.is_some() {
        tx.commit().await?;
        return Ok(Verified::AlreadyConfirmed { user });
    }
    let granted = confirm_in(&mut tx, accounts, user, &current, now).await?;
    tx.commit().await?;
    tracing::info!(user_id = %user, granted, "email address confirmed");
    Ok(Verified::Confirmed { user, free_credits: granted })
}

/// Marks the address confirmed and grants the free credits, once per inbox (the claim) and
/// once per account (the ledger's `free:<user>`); the credits granted.
async fn confirm_in(
    conn: &mut sqlx::PgConnection,
    accounts: Accounts<'_>,
    user: Uuid,
    email: &str,
    now: chrono::DateTime<Utc>,
) -> Result<i64, Error> {
    sqlx::query("UPDATE users SET email_verified_at = coalesce(email_verified_at, $2) WHERE id = $1")
        .bind(user)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    let inbox = Email::parse(email).map(|e| e.inbox()).unwrap_or_else(|_| email.to_lowercase());
    let claimed: Option<Uuid> = sqlx::query_scalar("INSERT INTO free_credit_claims (inbox, user_id, claimed_at) VALUES ($1, $2, $3) ON CONFLICT (inbox) DO NOTHING RETURNING user_id")
        .bind(&inbox)
        .bind(user)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?;
    if claimed.is_none() {
        tracing::info!(user_id = %user, "free credits already claimed by this inbox");
        return Ok(0);
    }
    let outcome = crate::server::ledger::grant_free(conn, user, accounts.config.free_credits, now).await?;
    Ok(if outcome.applied { accounts.config.free_credits } else { 0 })
}

/// "Forgot password": queues a reset link if `email` has an account. Answers the same either
/// way (no account enumeration), except when throttled.
pub async fn request_password_reset(
    accounts: Accounts<'_>,
    email_raw: &str,
    client_ip: Option<&str>,
) -> Result<(), Error> {
    if email_raw.len() > crate::domain::email::MAX_EMAIL_BYTES {
        return Err(Error::invalid("email", "That email address is too long."));
    }
    let email = Email::parse(email_raw).map_err(|e| Error::invalid("email", e.to_string()))?;
    let now = Utc::now();
    if let Some(ip) = client_ip {
        throttled(throttle::hit(accounts.pool, RESET_PER_ADDRESS, ip, now).await)?;
    }
    throttled(throttle::hit(accounts.pool, RESET_PER_EMAIL, &email.normalized(), now).await)?;
    let user: Option<(Uuid, String)> =
        sqlx::query_as("SELECT id, email FROM users WHERE lower(email) = $1 AND deleted_at IS NULL")
            .bind(email.normalized())
            .fetch_optional(accounts.pool)
            .await?;
    let Some((user, address)) = user else {
        tracing::info!("password reset asked for an address without an account");
        return Ok(());
    };
    let mut tx = accounts.pool.begin().await?;
    let token = tokens::issue(&mut tx, user, Purpose::ResetPassword, &address, now).await?;
    let m = templates::reset_password(
        accounts.config.app_url.as_str(),
        &address,
        &link(accounts, "/reset-password", &token),
    );
    mail::enqueue(&mut tx, Some(user), &m).await?;
    tx.commit().await?;
    accounts.mailer.wake();
    tracing::info!(user_id = %user, "password reset link queued");
    Ok(())
}

/// Whether a reset link can still be used (its page shows the form only then).
pub async fn reset_link_usable(accounts: Accounts<'_>, token: &str) -> Result<bool, Error> {
    let mut conn = accounts.pool.acquire().await?;
    Ok(tokens::is_usable(&mut conn, token, Purpose::ResetPassword, Utc::now()).await?)
}

/// Sets a new password through a reset link; returns the user, whose every session was ended.
pub async fn reset_password(
    accounts: Accounts<'_>,
    token: &str,
    new_password: &str,
    client_ip: Option<&str>,
) -> Result<Uuid, Error> {
    if new_password.len() > crate::domain::email::MAX_PASSWORD_BYTES {
        return Err(Error::invalid("password", "That password is too long."));
    }
    check_new_password(new_password).map_err(|m| Error::invalid("password", m))?;
    if let Some(ip) = client_ip {
        throttled(throttle::hit(accounts.pool, RESET_ATTEMPTS_PER_ADDRESS, ip, Utc::now()).await)?;
    }
    // A guessed or used link costs a lookup, never a hash (which is slow and bounded).
    if !reset_link_usable(accounts, token).await? {
        return Err(Error::invalid("token", "This reset link is not valid any more. Ask for a new one."));
    }
    // Hash, then use the token and write, in one short transaction (the token is checked
    // again there: two uses racing each other get one success).
    let hash = accounts.passwords.hash(new_password.to_string()).await?;
    let now = Utc::now();
    let mut tx = accounts.pool.begin().await?;
    let Some((user, email)) = tokens::consume(&mut tx, token, Purpose::ResetPassword, now).await? else {
        return Err(Error::invalid("token", "This reset link is not valid any more. Ask for a new one."));
    };
    let updated = sqlx::query(
        "UPDATE users SET password_hash = $2 WHERE id = $1 AND deleted_at IS NULL AND lower(email) = lower($3)",
    )
    .bind(user)
    .bind(&hash)
    .bind(&email)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() != 1 {
        return Err(Error::invalid("token", "This reset link is not valid any more. Ask for a new one."));
    }
    tokens::retire_all(&mut tx, user, Purpose::ResetPassword, now).await?;
    sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(user).execute(&mut *tx).await?;
    // Following the link proved the inbox: the address is confirmed.
    confirm_in(&mut tx, accounts, user, &email, now).await?;
    tx.commit().await?;
    rate_limit::clear_for_email(accounts.pool, &email.to_lowercase()).await?;
    tracing::info!(user_id = %user, "password reset");
    Ok(user)
}

/// Changes the signed-in user's password; every other session ends, and the owner is told.
pub async fn change_password(
    accounts: Accounts<'_>,
    user: Uuid,
    current: &str,
    new_password: &str,
    client_ip: Option<&str>,
    keep_session: &http::HeaderMap,
) -> Result<(), Error> {
    check_credential_bounds("", current)
        .map_err(|_| Error::invalid("current_password", "That password is too long."))?;
    if new_password.len() > crate::domain::email::MAX_PASSWORD_BYTES {
        return Err(Error::invalid("new_password", "That password is too long."));
    }
    check_new_password(new_password).map_err(|m| Error::invalid("new_password", m))?;
    let (email, stored): (String, String) =
        sqlx::query_as("SELECT email, password_hash FROM users WHERE id = $1 AND deleted_at IS NULL")
            .bind(user)
            .fetch_one(accounts.pool)
            .await?;
    let normalized = email.to_lowercase();
    let attempt =
        match rate_limit::begin(accounts.pool, &normalized, client_ip, accounts.config.login_max_failures, Utc::now())
            .await?
        {
            Ok(a) => a,
            Err(secs) => return Err(Error::RateLimited(secs)),
        };
    match accounts.passwords.verify(current.to_string(), Some(stored)).await {
        Ok(true) => rate_limit::succeeded(accounts.pool, &normalized, attempt).await?,
        Ok(false) => return Err(Error::invalid("current_password", "That is not your current password.")),
        Err(e) => {
            rate_limit::abandoned(accounts.pool, attempt).await?;
            return Err(e.into());
        }
    }
    let hash = accounts.passwords.hash(new_password.to_string()).await?;
    let mut tx = accounts.pool.begin().await?;
    sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1").bind(user).bind(&hash).execute(&mut *tx).await?;
    session::destroy_others(&mut tx, accounts.config, user, keep_session).await?;
    mail::enqueue(&mut tx, Some(user), &templates::password_changed(accounts.config.app_url.as_str(), &email)).await?;
    tx.commit().await?;
    accounts.mailer.wake();
    tracing::info!(user_id = %user, "password changed");
    Ok(())
}
