//! Billing on top of Polar, by use case. Server functions call these; nothing here trusts the
//! browser for a product, price or user.
//!
//! | file | owns |
//! |---|---|
//! | [`customers`] | the user's Polar customer (`external_id` = user id): created or linked in the background, deleted with the account |
//! | [`customer_state`] | Customer State through the caches, and the entitlement guard (`require_benefit`) |
//! | [`checkout`] | checkouts and where they stand (the success page) |
//! | [`subscriptions`] | the live subscription, cancel/undo, plan changes and their preview, the portal |
//! | [`details`] | billing details (with the VAT id) pushed to the Polar customer |
//! | [`invoices`] | orders and their invoices |
//! | [`sync`] | **the one place Polar's objects are applied** locally (subscriptions, orders, refunds, customers): the webhook worker, [`subscriptions`] after a change and [`lifecycle::reconcile`] all call it |
//! | [`lifecycle`] | account deletion and reconciliation |
//! | [`scheduled`] | the scheduled reconcile, one instance at a time under a lease |
//!
//! Each operation returns [`Error`], translated once for the browser (`server::errors`).
//!
//! Failure policy (documented in docs/failure-policy.md): when Polar cannot be reached, pages show the
//! last known Customer State marked as such; `require_benefit` accepts a last known state up
//! to [`customer_state::STALE_GRACE`] old and fails closed after that, or when there is none.
//! Polar's quota is shared by every user: each server function that asks Polar for a user
//! spends that user's [`polar_budget`] first, after checking locally whatever it can (whose
//! checkout or order an id is).

pub mod checkout;
pub mod customer_state;
pub mod customers;
pub mod details;
pub mod invoices;
pub mod lifecycle;
pub mod scheduled;
pub mod subscriptions;
pub mod sync;

pub use checkout::{checkout_progress, start_checkout, Progress};
pub use customer_state::{
    customer_state, forget_cached_state, invalidate_state, read_state, require_any_benefit, require_benefit, Reader,
    StateRead, STALE_GRACE, STATE_TTL,
};
pub use customers::{customer_pending, ensure_customer, sync_pending_customers};
pub use details::{billing_details, save_billing_details, BillingDetails};
pub use invoices::{generate_invoice, invoice_url, invoices, remember_order, InvoiceRow, InvoiceState};
pub use lifecycle::{apply_from_polar, delete_account, read_from_polar, reconcile, Deletion, FromPolar};
pub use subscriptions::{
    change_plan, current_subscription, live_subscription, portal_url, preview_plan_change, set_cancel_at_period_end,
    LiveSubscription, PlanChangePreview,
};

use crate::server::config::Config;
use crate::server::polar::{PolarClient, PolarError};
use crate::server::state_cache::{RedisCache, SingleFlight};
use chrono::Utc;
use sqlx::PgPool;
use std::sync::Arc;
use uuid::Uuid;

/// What billing uses, and nothing more: the pool, the configuration, Polar's clients and the
/// Customer State's caches. Built once with the app's state; handlers and server functions
/// pass `billing`. Cloning it clones handles, not what they share.
#[derive(Clone)]
pub struct Billing {
    pub pool: PgPool,
    pub config: Arc<Config>,
    /// Polar's API (the stand-in's in local mode). `None` only when no token is configured.
    pub polar: Option<PolarClient>,
    /// The same client, bounded by `POLAR_READ_DEADLINE_MS` per call: for reads a page shows.
    pub polar_reads: Option<PolarClient>,
    /// A client with its own circuit breaker for background work (usage shipping, customer
    /// sync, scheduled reconcile): page traffic that finds Polar failing cannot open it.
    pub polar_background: Option<PolarClient>,
    /// Concurrent reads of one customer's state share one Polar call.
    pub state_flights: SingleFlight,
    /// Concurrent listings of one customer's orders share one Polar call.
    pub order_flights: SingleFlight,
    /// The Redis layer of the Customer State cache (`REDIS_URL`), if configured.
    pub redis: Option<RedisCache>,
}

impl Billing {
    pub fn new(config: Arc<Config>, pool: PgPool) -> Billing {
        // Two clients on Polar's API, each with its own circuit breaker: pages (and, bounded by a
        // read deadline, their reads) and background work.
        let client = || {
            config.polar.effective_token().map(|t| {
                PolarClient::new(config.polar.api_url.clone(), t.clone()).with_breaker(
                    config.polar_circuit_threshold,
                    std::time::Duration::from_millis(config.polar_circuit_open_ms),
                )
            })
        };
        let (polar, polar_background) = (client(), client());
        let polar_reads =
            polar.as_ref().map(|p| p.with_deadline(std::time::Duration::from_millis(config.polar_read_deadline_ms)));
        // The URL was checked when the configuration was read.
        let redis = config.redis_url.as_ref().and_then(|u| RedisCache::new(u).ok());
        Billing {
            pool,
            config,
            polar,
            polar_reads,
            polar_background,
            state_flights: SingleFlight::default(),
            order_flights: SingleFlight::default(),
            redis,
        }
    }
}

/// What can go wrong in billing. The business outcomes a caller may act on are variants of
/// their own; `Polar` and `Db` are failures of ours or a contract break, logged once with
/// their source chain where they are translated for the browser.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No Polar token is configured on this server.
    #[error("billing is not configured on this server (POLAR_ACCESS_TOKEN)")]
    NotConfigured,
    /// Polar could not be reached or answered with an outage (no answer, 5xx, 429 after
    /// retries, a read past its deadline, an open circuit).
    #[error("Polar is not answering")]
    Unavailable(#[source] PolarError),
    /// Polar refused the request or answered what Tally cannot read.
    #[error("Polar refused or answered unexpectedly")]
    Polar(#[source] PolarError),
    #[error("database error")]
    Db(#[from] sqlx::Error),
    /// No such thing for this user (another user's id looks the same).
    #[error("not found")]
    NotFound,
    /// Input refused, with the form field it belongs to.
    #[error("{message}")]
    Invalid { field: String, message: String },
    /// The request conflicts with the account's state (already subscribed, nothing to cancel).
    #[error("{0}")]
    Conflict(String),
    /// The user's plan does not include the benefit.
    #[error("{0}")]
    NotEntitled(String),
    /// Polar cannot confirm the plan and the last known state is too old to trust.
    #[error("the plan cannot be confirmed with Polar right now")]
    CannotConfirm,
    /// The user's budget of Polar calls is spent; retry in this many seconds.
    #[error("per-user Polar budget spent; retry in {0} s")]
    RateLimited(u64),
}

impl From<PolarError> for Error {
    fn from(e: PolarError) -> Self {
        if e.is_unavailable() {
            Error::Unavailable(e)
        } else {
            Error::Polar(e)
        }
    }
}

impl Error {
    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Self {
        Error::Invalid { field: field.to_string(), message: message.into() }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The Polar client.
pub fn polar(billing: &Billing) -> Result<&PolarClient> {
    billing.polar.as_ref().ok_or(Error::NotConfigured)
}

/// The client of background work (usage shipping, customer sync, reconcile): its own circuit
/// breaker, so page traffic that finds Polar failing cannot stop it, and the reverse.
pub fn polar_background(billing: &Billing) -> Result<&PolarClient> {
    billing.polar_background.as_ref().ok_or(Error::NotConfigured)
}

/// The client for reads a page shows: each call bounded by `POLAR_READ_DEADLINE_MS`.
pub fn polar_reads(billing: &Billing) -> Result<&PolarClient> {
    billing.polar_reads.as_ref().ok_or(Error::NotConfigured)
}

/// Polar's quota is one budget for the whole organization (500 requests a minute), shared by
/// every instance. Every Polar call made for a user is counted here *before* it is made,
/// reads included: the user's own budget first (`POLAR_CALLS_PER_USER_PER_MINUTE`, smaller
/// for an account whose email is not confirmed: `POLAR_CALLS_PER_UNVERIFIED_USER_PER_MINUTE`),
/// then the share of the quota all page traffic may take (`POLAR_PAGE_REQUESTS_PER_MINUTE`),
/// so background work (usage shipping, customer sync, scheduled reconcile) keeps the rest.
/// Past either: [`Error::RateLimited`] (a 429 with `Retry-After`) and no call, which the
/// circuit breaker never sees (a refusal of Tally's is not a failure of Polar's).
pub async fn polar_budget(billing: &Billing, user: Uuid) -> Result<()> {
    let now = Utc::now();
    let verified: bool = sqlx::query_scalar("SELECT email_verified_at IS NOT NULL FROM users WHERE id = $1")
        .bind(user)
        .fetch_optional(&billing.pool)
        .await?
        .unwrap_or(false);
    let per_user = crate::server::throttle::Throttle {
        scope: if verified { "polar.user" } else { "polar.unverified" },
        limit: if verified {
            billing.config.polar_calls_per_user_per_minute
        } else {
            billing.config.polar_calls_per_unverified_user_per_minute
        },
        window_secs: 60,
    };
    if let Err(secs) = crate::server::throttle::hit(&billing.pool, per_user, &user.to_string(), now).await? {
        tracing::warn!(%user, verified, retry_after_secs = secs, "per-user Polar budget spent");
        return Err(Error::RateLimited(secs));
    }
    let (pages, all) = pages_budget(billing);
    if let Err(secs) = crate::server::throttle::hit(&billing.pool, pages, all, now).await? {
        tracing::warn!(retry_after_secs = secs, "the pages' share of Polar's quota is spent for this minute");
        return Err(Error::RateLimited(secs));
    }
    Ok(())
}

/// The share of Polar's quota all page traffic of all instances may take
/// (`POLAR_PAGE_REQUESTS_PER_MINUTE`), and the one subject it is counted under.
pub fn pages_budget(billing: &Billing) -> (crate::server::throttle::Throttle, &'static str) {
    let t = crate::server::throttle::Throttle {
        scope: "polar.pages",
        limit: billing.config.polar_page_requests_per_minute,
        window_secs: 60,
    };
    (t, "all")
}

/// The client, once `user`'s budget allows another call.
pub async fn polar_for(billing: &Billing, user: Uuid) -> Result<&PolarClient> {
    polar_budget(billing, user).await?;
    polar(billing)
}
