//! `AppState`: what every handler, render and server function can reach, through axum state
//! and Leptos context (`expect_context::<AppState>()`). No globals.

use crate::server::config::Config;
use crate::server::metered::RateLimiter;
use crate::server::polar::PolarClient;
use crate::server::state_cache::RedisCache;
use axum::extract::FromRef;
use leptos::config::LeptosOptions;
use sqlx::PgPool;
use std::sync::Arc;

#[derive(Clone, FromRef)]
pub struct AppState {
    pub leptos_options: LeptosOptions,
    pub pool: PgPool,
    pub config: Arc<Config>,
    /// Per-API-key request limit of the metered API (per instance).
    pub rate_limiter: RateLimiter,
    /// Wakes the webhook worker when a new event is stored.
    pub webhook_wakeup: Arc<tokio::sync::Notify>,
    /// Polar's API (the stand-in's in local mode). `None` only when no token is configured.
    pub polar: Option<PolarClient>,
    /// The Redis layer of the Customer State cache (`REDIS_URL`), if configured.
    pub redis: Option<RedisCache>,
}

impl AppState {
    /// The state for a command-line task (no HTTP server): the same pool, configuration and
    /// Polar client as the app.
    pub fn new(config: Config, pool: PgPool) -> AppState {
        let polar = config.polar.effective_token().map(|t| PolarClient::new(config.polar.api_url.clone(), t.clone()));
        // The URL was checked when the configuration was read.
        let redis = config.redis_url.as_ref().and_then(|u| RedisCache::new(u).ok());
        AppState {
            leptos_options: crate::server::startup::leptos_options(config.bind_addr),
            rate_limiter: RateLimiter::new(config.api_rate_limit_per_minute),
            pool,
            config: Arc::new(config),
            webhook_wakeup: Default::default(),
            polar,
            redis,
        }
    }
}
