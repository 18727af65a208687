//! `AppState`: what every handler, render and server function can reach, through axum state
//! and Leptos context (`expect_context::<AppState>()`). No globals.

use crate::server::config::Config;
use crate::server::metered::RateLimiter;
use crate::server::polar::PolarClient;
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
}
