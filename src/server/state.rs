//! `AppState`: what every handler, render and server function can reach, through axum state
//! and Leptos context (`expect_context::<AppState>()`). No globals.

use crate::server::auth::password::Passwords;
use crate::server::billing::Billing;
use crate::server::config::{Config, ConfigError};
use crate::server::mail::Mailer;
use crate::server::metered::limits::{InFlight, RateLimiter};
use crate::server::metered::spender::Spender;
use crate::server::supervisor::Heartbeat;
use axum::extract::FromRef;
use leptos::config::LeptosOptions;
use sqlx::PgPool;
use std::sync::Arc;

/// The heartbeats of the background tasks (`/readyz` reads them).
#[derive(Clone, Default)]
pub struct Tasks {
    pub webhook_worker: Heartbeat,
    pub mail_worker: Heartbeat,
    pub janitor: Heartbeat,
    pub usage_shipper: Heartbeat,
    pub usage_alerts: Heartbeat,
    /// Whether this process runs them (a command-line task does not).
    pub running: Arc<std::sync::atomic::AtomicBool>,
}

/// Cloned for every request, render and server function: one reference count, not a copy of
/// the options, clients and strings behind it (copying them was ~5 % of a page's CPU).
/// Fields are reached through `Deref` (`state.pool`).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What Leptos's axum integration extracts from the state.
impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> LeptosOptions {
        state.leptos_options.clone()
    }
}

/// Everything an [`AppState`] shares.
pub struct Shared {
    pub leptos_options: LeptosOptions,
    pub pool: PgPool,
    pub config: Arc<Config>,
    /// Per-API-key request limit of the metered API (per instance).
    pub rate_limiter: RateLimiter,
    /// Metered-API calls of one account in flight at once (per instance).
    pub api_in_flight: InFlight,
    /// Password hashing, bounded to `PASSWORD_HASH_CONCURRENCY` at once.
    pub passwords: Passwords,
    /// Wakes the webhook worker when a new event is stored.
    pub webhook_wakeup: Arc<tokio::sync::Notify>,
    /// Session lookups in the database since start (one per request at most).
    pub session_lookups: Arc<std::sync::atomic::AtomicU64>,
    /// Webhook deliveries this instance refused in a row (`webhooks::deliveries`).
    pub webhook_refusals: Arc<std::sync::atomic::AtomicI64>,
    /// Billing's own handles (pool, configuration, Polar's clients, Customer State caches).
    pub billing: Billing,
    /// Account mail (SMTP, or the dev mailbox in local mode).
    pub mailer: Mailer,
    /// How metered calls spend: batched (group commit, `SPEND_BATCH`) or one transaction each.
    pub spender: Spender,
    pub tasks: Tasks,
}

impl AppState {
    /// The state for the app or a command-line task: one pool, configuration and Polar client.
    pub fn new(config: Config, pool: PgPool) -> Result<AppState, ConfigError> {
        let options = config.site.leptos_options(config.bind_addr);
        AppState::serving(config, pool, options)
    }

    /// [`AppState::new`] for the app listening at `addr` (the address it really bound).
    pub fn listening_at(config: Config, pool: PgPool, addr: std::net::SocketAddr) -> Result<AppState, ConfigError> {
        let options = config.site.leptos_options(addr);
        AppState::serving(config, pool, options)
    }

    fn serving(config: Config, pool: PgPool, leptos_options: LeptosOptions) -> Result<AppState, ConfigError> {
        let mailer = Mailer::from_config(&config).map_err(|problem| ConfigError { var: "SMTP_URL", problem })?;
        let config = Arc::new(config);
        Ok(AppState(Arc::new(Shared {
            leptos_options,
            rate_limiter: RateLimiter::new(config.api_rate_limit_per_minute),
            api_in_flight: InFlight::new(config.api_max_in_flight_per_account),
            passwords: Passwords::new(config.password_hash_concurrency),
            billing: Billing::new(config.clone(), pool.clone()),
            spender: match config.spend_batch {
                0 => Spender::alone(pool.clone()),
                max => Spender::batched(&pool, max),
            },
            pool,
            config,
            webhook_wakeup: Default::default(),
            session_lookups: Default::default(),
            webhook_refusals: Default::default(),
            mailer,
            tasks: Tasks::default(),
        })))
    }
}
