//! `/healthz` (the process answers) and `/readyz` (the database answers and every migration
//! this binary knows is applied). Both JSON, for load balancers and orchestrators.

use crate::server::{db, state::AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let database = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.pool).await.is_ok();
    let migrations = database && db::migrations_applied(&state.pool).await.unwrap_or(false);
    let ready = database && migrations;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (
        status,
        Json(json!({
            "status": if ready { "ready" } else { "not_ready" },
            "checks": {
                "database": if database { "ok" } else { "unreachable" },
                "migrations": if migrations { "ok" } else if database { "pending" } else { "unknown" },
            },
            "polar_mode": state.config.polar.mode.as_str(),
        })),
    )
}
