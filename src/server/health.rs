//! `/healthz` (the process answers) and `/readyz` (the database answers, every migration this
//! binary knows is applied, and the background workers are alive: a heartbeat younger than
//! [`STALLED_AFTER`]). Both JSON, for load balancers and orchestrators.

use crate::server::{db, state::AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

/// A worker whose heartbeat is older than this is reported stalled.
pub const STALLED_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

fn worker(state: &AppState, beat: &crate::server::supervisor::Heartbeat) -> &'static str {
    if !state.tasks.running.load(std::sync::atomic::Ordering::Relaxed) {
        return "not_running";
    }
    match beat.age() {
        Some(age) if age <= STALLED_AFTER => "ok",
        _ => "stalled",
    }
}

pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let database = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.pool).await.is_ok();
    let migrations = database && db::migrations_applied(&state.pool).await.unwrap_or(false);
    let webhook_worker = worker(&state, &state.tasks.webhook_worker);
    let mail_worker = worker(&state, &state.tasks.mail_worker);
    // Serving needs the database and the webhook worker; a stalled mail worker is reported
    // (and in /metrics) but does not take the instance out of the load balancer.
    let ready = database && migrations && webhook_worker != "stalled";
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (
        status,
        Json(json!({
            "status": if ready { "ready" } else { "not_ready" },
            "checks": {
                "database": if database { "ok" } else { "unreachable" },
                "migrations": if migrations { "ok" } else if database { "pending" } else { "unknown" },
                "webhook_worker": webhook_worker,
                "mail_worker": mail_worker,
            },
            "worker_restarts": state.tasks.webhook_worker.restarts() + state.tasks.mail_worker.restarts(),
            "polar_circuit": state.billing.polar.as_ref().map(|p| p.breaker().state_name()),
            "polar_background_circuit": state.billing.polar_background.as_ref().map(|p| p.breaker().state_name()),
            "polar_mode": state.config.polar.mode.as_str(),
        })),
    )
}
