//! `AppState`: what every handler, render and server function can reach, through axum state
//! and Leptos context (`expect_context::<AppState>()`). No globals.

use crate::server::config::Config;
use axum::extract::FromRef;
use leptos::config::LeptosOptions;
use sqlx::PgPool;
use std::sync::Arc;

#[derive(Clone, FromRef)]
pub struct AppState {
    pub leptos_options: LeptosOptions,
    pub pool: PgPool,
    pub config: Arc<Config>,
}
