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

/// The queues an operator watches, as /metrics and the console's health page show them.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Backlogs {
    /// Webhook events waiting to be applied, the oldest one's age in seconds, those of them
    /// whose handler failed at least once (retrying with backoff), and those parked.
    pub pending: i64,
    pub oldest: Option<f64>,
    pub retrying: i64,
    pub failed: i64,
    /// Events whose handler failed within the last hour (retrying, parked, or applied since).
    pub failed_last_hour: i64,
    /// Account mails waiting to be sent, and the oldest one's age in seconds.
    pub mail_pending: i64,
    pub mail_oldest: Option<f64>,
}

/// [`Backlogs`] now; each count reads a partial index of what is waiting, however much is done.
pub async fn backlogs(pool: &sqlx::PgPool) -> Result<Backlogs, sqlx::Error> {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM webhook_events WHERE status = 'pending') AS pending,
                (SELECT extract(epoch FROM now() - min(received_at))::float8 FROM webhook_events WHERE status = 'pending') AS oldest,
                (SELECT count(*) FROM webhook_events WHERE status = 'pending' AND attempts > 0) AS retrying,
                (SELECT count(*) FROM webhook_events WHERE status = 'failed') AS failed,
                (SELECT count(*) FROM webhook_events WHERE last_failed_at > now() - interval '1 hour') AS failed_last_hour,
                (SELECT count(*) FROM outgoing_mail WHERE status = 'pending') AS mail_pending,
                (SELECT extract(epoch FROM now() - min(created_at))::float8 FROM outgoing_mail WHERE status = 'pending') AS mail_oldest",
    )
    .fetch_one(pool)
    .await
}
