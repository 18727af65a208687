//! `GET /metrics`: Prometheus text for operators, served only when `METRICS_TOKEN` is set and
//! sent as `Authorization: Bearer …` (404 otherwise, so it is not advertised). What Polar's
//! outages and the workers look like from outside: the circuit breaker's state, the webhook
//! inbox and mail outbox backlogs with their oldest age, parked events, worker restarts.

use crate::server::state::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(expected) = &state.config.metrics_token else { return StatusCode::NOT_FOUND.into_response() };
    let given = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !crate::server::util::constant_time_eq(given.as_bytes(), expected.expose().as_bytes()) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let crate::server::health::Backlogs { pending, oldest, failed, mail_pending, mail_oldest, .. } =
        match crate::server::health::backlogs(&state.pool).await {
            Ok(r) => r,
            Err(e) => return crate::server::util::internal_response(e),
        };
    // The shared run of refused deliveries, or this instance's alone when the database cannot
    // say (the refusals may be the database's).
    let refused = match crate::server::webhooks::deliveries::streak(&state.pool, &state.webhook_refusals).await {
        Ok(s) => s.refused,
        Err(_) => crate::server::webhooks::deliveries::local_count(&state.webhook_refusals),
    };
    let (usage_pending, usage_oldest, usage_failed) = match crate::server::usage::backlog(&state.pool).await {
        Ok(b) => b,
        Err(e) => return crate::server::util::internal_response(e),
    };
    let (drift, drifting) = match crate::server::usage::reconcile::last_drift(&state.pool).await {
        Ok(d) => d,
        Err(e) => return crate::server::util::internal_response(e),
    };
    let (circuit, opened) = state
        .billing
        .polar
        .as_ref()
        .map(|p| (p.breaker().state_name(), p.breaker().opened_total()))
        .unwrap_or(("closed", 0));
    let t = &state.tasks;
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, kind: &str, lines: &[(String, String)]| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in lines {
            out.push_str(&format!("{name}{labels} {value}\n"));
        }
    };
    let one = |v: String| vec![(String::new(), v)];
    metric(
        "tally_polar_circuit_open",
        "1 while the Polar circuit breaker fails calls fast (0.5 half-open).",
        "gauge",
        &one(match circuit {
            "open" => "1",
            "half_open" => "0.5",
            _ => "0",
        }
        .into()),
    );
    metric(
        "tally_polar_circuit_opened_total",
        "Times the Polar circuit breaker opened.",
        "counter",
        &one(opened.to_string()),
    );
    metric(
        "tally_session_lookups_total",
        "Sessions looked up in the database (at most one per request, however many parts of a page ask).",
        "counter",
        &one(state.session_lookups.load(std::sync::atomic::Ordering::Relaxed).to_string()),
    );
    let background = state.billing.polar_background.as_ref().map_or("closed", |p| p.breaker().state_name());
    metric(
        "tally_polar_background_circuit_open",
        "1 while the background work's Polar circuit breaker (usage shipping, customer sync, reconcile) fails calls fast (0.5 half-open).",
        "gauge",
        &one(match background {
            "open" => "1",
            "half_open" => "0.5",
            _ => "0",
        }
        .into()),
    );
    metric(
        "tally_webhook_events_pending",
        "Verified webhook events waiting to be applied.",
        "gauge",
        &one(pending.to_string()),
    );
    metric(
        "tally_webhook_oldest_pending_seconds",
        "Age of the oldest waiting webhook event.",
        "gauge",
        &one(format!("{:.3}", oldest.unwrap_or(0.0))),
    );
    metric(
        "tally_webhook_events_failed",
        "Webhook events parked after their last attempt (tally webhooks retry).",
        "gauge",
        &one(failed.to_string()),
    );
    metric(
        "tally_webhook_deliveries_refused_consecutive",
        "Polar webhook deliveries refused in a row (Polar disables the endpoint after 10).",
        "gauge",
        &one(refused.to_string()),
    );
    metric(
        "tally_webhook_endpoint_at_risk",
        "1 while enough deliveries in a row were refused that Polar may disable the webhook endpoint (5 or more).",
        "gauge",
        &one(u8::from(refused >= crate::server::webhooks::deliveries::AT_RISK_AFTER).to_string()),
    );
    metric("tally_mail_pending", "Account mails waiting to be sent.", "gauge", &one(mail_pending.to_string()));
    metric(
        "tally_mail_oldest_pending_seconds",
        "Age of the oldest waiting mail.",
        "gauge",
        &one(format!("{:.3}", mail_oldest.unwrap_or(0.0))),
    );
    metric(
        "tally_usage_events_pending",
        "Usage events (spends) not yet at Polar's meters.",
        "gauge",
        &one(usage_pending.to_string()),
    );
    metric(
        "tally_usage_oldest_pending_seconds",
        "Age of the oldest usage event not yet at Polar.",
        "gauge",
        &one(format!("{:.3}", usage_oldest.unwrap_or(0.0))),
    );
    metric(
        "tally_usage_events_failed",
        "Usage events Polar refused, parked with its message.",
        "gauge",
        &one(usage_failed.to_string()),
    );
    metric(
        "tally_usage_drift_credits",
        "Credits the last `tally polar reconcile` found neither at Polar nor on their way (sum over accounts and meters).",
        "gauge",
        &one(drift.to_string()),
    );
    metric(
        "tally_usage_drift_accounts",
        "Accounts with usage drift at the last reconcile.",
        "gauge",
        &one(drifting.to_string()),
    );
    metric(
        "tally_worker_restarts_total",
        "Background tasks restarted after ending or panicking.",
        "counter",
        &[
            ("{task=\"webhook_worker\"}".into(), t.webhook_worker.restarts().to_string()),
            ("{task=\"mail_worker\"}".into(), t.mail_worker.restarts().to_string()),
            ("{task=\"janitor\"}".into(), t.janitor.restarts().to_string()),
            ("{task=\"usage_shipper\"}".into(), t.usage_shipper.restarts().to_string()),
            ("{task=\"usage_alerts\"}".into(), t.usage_alerts.restarts().to_string()),
        ],
    );
    ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
