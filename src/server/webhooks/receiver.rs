//! `POST /api/webhooks/polar`: verify, store, acknowledge.

use super::deliveries::end_run_with;
use crate::server::polar::webhook_signature::{self, SignedHeaders, VerifyError};
use crate::server::state::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// Largest body accepted (Polar's payloads are a few KB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub async fn receive(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let (response, refusal) = verify_and_store(&state, &headers, &body).await;
    // Polar counts every delivery not acknowledged with a 2xx (and disables the endpoint after
    // ten in a row): so do we, for the health page and /metrics.
    match refusal {
        None => super::deliveries::accepted_locally(&state.webhook_refusals),
        // In the background: when the database is what failed, recording it could wait as long
        // as Polar waits for the answer.
        Some(why) => {
            super::deliveries::count_locally(&state.webhook_refusals);
            let pool = state.pool.clone();
            tokio::spawn(async move { super::deliveries::refused(&pool, &why).await });
        }
    }
    response
}

/// The receiver's answer, and why the delivery was refused when it was.
async fn verify_and_store(state: &AppState, headers: &HeaderMap, body: &Bytes) -> (Response, Option<String>) {
    let Some(secret) = state.config.polar.webhook_secret.as_ref() else {
        tracing::error!("webhook received but POLAR_WEBHOOK_SECRET is not configured");
        let why = "webhooks are not configured (POLAR_WEBHOOK_SECRET)";
        return (
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": "webhooks are not configured" }))).into_response(),
            Some(why.into()),
        );
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let signed = SignedHeaders {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
    };
    let now = chrono::Utc::now().timestamp();
    if let Err(e) = webhook_signature::verify(secret.expose(), signed, body, now) {
        tracing::warn!(error = %e, "webhook refused");
        let status =
            if e == VerifyError::NoMatchingSignature { StatusCode::FORBIDDEN } else { StatusCode::UNAUTHORIZED };
        return ((status, Json(json!({ "error": e.to_string() }))).into_response(), Some(e.to_string()));
    }
    let webhook_id = signed.id.unwrap_or_default();
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let event_type = parsed.as_ref().and_then(|v| v.get("type")).and_then(Value::as_str).map(str::to_string);
    let result = match (&parsed, &event_type) {
        (Some(payload), Some(t)) => sqlx::query(end_run_with!("INSERT INTO webhook_events (webhook_id, event_type, payload, user_id) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING"))
            .bind(webhook_id)
            .bind(t)
            .bind(payload)
            .bind(crate::server::webhooks::handlers::event_user(t, payload))
            .execute(&state.pool)
            .await,
        _ => sqlx::query(end_run_with!(
            "INSERT INTO webhook_events (webhook_id, event_type, raw_body, status, last_error) VALUES ($1, 'unparseable', $2, 'failed', 'verified body is not a JSON event with a type')
             ON CONFLICT DO NOTHING"
        ))
        .bind(webhook_id)
        .bind(String::from_utf8_lossy(body).to_string())
        .execute(&state.pool)
        .await,
    };
    match result {
        Ok(done) => {
            let duplicate = done.rows_affected() == 0;
            tracing::info!(%webhook_id, event_type = event_type.as_deref().unwrap_or("unparseable"), duplicate, "webhook stored");
            if !duplicate {
                state.webhook_wakeup.notify_one();
            }
            ((StatusCode::ACCEPTED, Json(json!({ "received": true, "duplicate": duplicate }))).into_response(), None)
        }
        // Not stored: let Polar retry (it will, with the same webhook-id).
        Err(e) => {
            tracing::error!(%webhook_id, error = %e, "could not store webhook");
            let response = (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": "temporarily unavailable" })));
            (response.into_response(), Some(format!("could not store the event: {e}")))
        }
    }
}
