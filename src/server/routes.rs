//! Every route the app serves and the middleware around them, outermost last: tracing,
//! compression, security headers, the client's address, CSRF, then the account gate. The
//! Polar stand-in (local mode) is nested outside all of them by `startup`.
//!
//! | path | what |
//! |---|---|
//! | `POLAR_WEBHOOK_PATH` (`/api/webhooks/polar`) | Polar's webhooks: verified, stored, acknowledged |
//! | `/api/v1/text/stats` | the metered API (API keys, credits) |
//! | `/api/*` | server functions (`crate::api`) |
//! | `/billing/invoices/{order_id}` | the signed-in owner's invoice file, by redirect |
//! | `/pkg/*` | the built CSS, JS and wasm (`assets`) |
//! | `/healthz`, `/readyz`, `/metrics` | liveness, readiness, Prometheus metrics |
//! | `/dev/mailbox` | local mode's mailbox (behind the controls token) |
//! | everything else | the Leptos pages, server-rendered |

use crate::app::{shell, App};
use crate::server::state::AppState;
use crate::server::{assets, csrf, health, metered, webhooks};
use axum::routing::{get, post};
use axum::Router;
use leptos_axum::{generate_route_list, LeptosRoutes};
use tower_http::compression::CompressionLayer;
use tower_http::trace::TraceLayer;

/// The app's route list, generated once per process. Generating it renders the app with
/// resource loading suppressed through a process-global flag (leptos_server's
/// `SuppressResourceLoad`); a page rendering at that moment in another app instance of the same
/// process (tests start many) would wait forever on its resources (leptos-rs/leptos#4773).
/// Generating it once, before any instance serves, closes that window.
fn route_list() -> Vec<leptos_axum::AxumRouteListing> {
    static ROUTES: std::sync::OnceLock<Vec<leptos_axum::AxumRouteListing>> = std::sync::OnceLock::new();
    ROUTES.get_or_init(|| generate_route_list(App)).clone()
}

pub fn router(state: AppState) -> Router {
    let routes = route_list();
    let shell_options = state.leptos_options.clone();
    Router::new()
        .route(
            &state.config.polar.webhook_path,
            post(webhooks::receiver::receive)
                .layer(axum::extract::DefaultBodyLimit::max(webhooks::receiver::MAX_BODY_BYTES)),
        )
        .route("/billing/invoices/{order_id}", get(invoice_download))
        .route("/billing/history.csv", get(history_download))
        .route("/admin/audit.csv", get(audit_download))
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(crate::server::metrics::metrics))
        .route("/readyz", get(health::readyz))
        .route(
            "/api/v1/text/stats",
            post(metered::text_stats_handler).layer(axum::extract::DefaultBodyLimit::max(1024 * 1024)),
        )
        .route("/dev/mailbox", get(crate::server::mail::dev_mailbox::mailbox))
        .nest_service(&format!("/{}", state.leptos_options.site_pkg_dir), assets::pkg_files(&state.leptos_options))
        .leptos_routes(&state, routes, move || shell(shell_options.clone()))
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(shell))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::server::auth::gate::require_account))
        .layer(axum::middleware::from_fn_with_state(state.clone(), csrf::protect))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::server::client_ip::middleware))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::server::security_headers::apply))
        .layer(CompressionLayer::new())
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// `GET /billing/history.csv?from=YYYY-MM-DD&to=YYYY-MM-DD`: the signed-in user's credit
/// history from `from` to `to` (UTC days, both included; default the last 30 days, at most
/// `EXPORT_MAX_DAYS`), streamed as CSV.
async fn history_download(
    axum::extract::State(state): axum::extract::State<AppState>,
    axum::Extension(session): axum::Extension<crate::server::auth::session::RequestSession>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
    headers: http::HeaderMap,
) -> axum::response::Response {
    use axum::response::{IntoResponse, Redirect};
    use chrono::NaiveDate;
    let user = match session.user(crate::server::auth::session::Lookup::of(&state), &headers).await {
        Ok(Some(u)) => u,
        Ok(None) => return Redirect::to("/login?next=%2Fbilling").into_response(),
        Err(e) => return crate::server::util::internal_response(e),
    };
    let today = chrono::Utc::now().date_naive();
    let day = |key: &str, default: NaiveDate| match q.get(key).map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => Ok(default),
        Some(s) => {
            NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| format!("`{key}` must be a date like 2026-12-01"))
        }
    };
    let range = day("to", today).and_then(|to| Ok((day("from", to - chrono::Duration::days(29))?, to)));
    let (from, to) = match range {
        Ok((from, to)) if from > to => {
            return (http::StatusCode::UNPROCESSABLE_ENTITY, "`from` is after `to`.").into_response()
        }
        Ok((from, to)) if (to - from).num_days() >= crate::server::account::EXPORT_MAX_DAYS => {
            let msg = format!("An export covers at most {} days.", crate::server::account::EXPORT_MAX_DAYS);
            return (http::StatusCode::UNPROCESSABLE_ENTITY, msg).into_response();
        }
        Ok(r) => r,
        Err(msg) => return (http::StatusCode::UNPROCESSABLE_ENTITY, msg).into_response(),
    };
    let start = from.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    let end = (to + chrono::Duration::days(1)).and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    let (Some(start), Some(end)) = (start, end) else {
        return (http::StatusCode::UNPROCESSABLE_ENTITY, "Those dates are out of range.").into_response();
    };
    let body =
        axum::body::Body::from_stream(crate::server::account::history_csv(state.pool.clone(), user.id, start, end));
    (
        [
            (http::header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (http::header::CONTENT_DISPOSITION, format!("attachment; filename=\"tally-credits-{from}-to-{to}.csv\"")),
        ],
        body,
    )
        .into_response()
}

/// `GET /admin/audit.csv?action=&operator=&customer=`: the audit log (filtered as on
/// `/admin/audit`), newest first, streamed as CSV; 404 for anyone but an operator.
async fn audit_download(
    axum::extract::State(state): axum::extract::State<AppState>,
    axum::Extension(session): axum::Extension<crate::server::auth::session::RequestSession>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
    headers: http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use futures::TryStreamExt;
    let not_found = || (http::StatusCode::NOT_FOUND, "Not found").into_response();
    let user = match session.user(crate::server::auth::session::Lookup::of(&state), &headers).await {
        Ok(Some(u)) => u,
        Ok(None) => return not_found(),
        Err(e) => return crate::server::util::internal_response(e),
    };
    match crate::server::admin::operator(&state.pool, user.id).await {
        Ok(Some(_)) => {}
        Ok(None) => return not_found(),
        Err(e) => return crate::server::util::internal_response(e),
    }
    let field = |k: &str| q.get(k).map(String::as_str).unwrap_or_default();
    let filter =
        match crate::server::admin::audit::AuditFilter::parse(field("action"), field("operator"), field("customer")) {
            Ok(f) => f,
            Err(msg) => return (http::StatusCode::UNPROCESSABLE_ENTITY, msg).into_response(),
        };
    let rows = crate::server::admin::audit::csv(state.pool.clone(), filter).map_ok(axum::body::Bytes::from);
    (
        [
            (http::header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (http::header::CONTENT_DISPOSITION, "attachment; filename=\"tally-audit.csv\""),
            (http::header::CACHE_CONTROL, "no-store"),
        ],
        axum::body::Body::from_stream(rows),
    )
        .into_response()
}

/// `GET /billing/invoices/{order_id}`: the signed-in owner of the order is redirected to the
/// invoice file Polar generated (a fresh, short-lived URL each time).
async fn invoice_download(
    axum::extract::State(state): axum::extract::State<AppState>,
    axum::extract::Path(order_id): axum::extract::Path<String>,
    axum::Extension(session): axum::Extension<crate::server::auth::session::RequestSession>,
    headers: http::HeaderMap,
) -> axum::response::Response {
    use axum::response::{IntoResponse, Redirect};
    let user = match session.user(crate::server::auth::session::Lookup::of(&state), &headers).await {
        Ok(Some(u)) => u,
        Ok(None) => return Redirect::to("/login?next=%2Fsettings%2Fbilling").into_response(),
        Err(e) => {
            return (http::StatusCode::INTERNAL_SERVER_ERROR, crate::error::AppError::from(e).to_string())
                .into_response()
        }
    };
    match crate::server::billing::invoice_url(&state.billing, user.id, &order_id).await {
        Ok(Some(url)) => Redirect::to(&url).into_response(),
        Ok(None) => (http::StatusCode::NOT_FOUND, "This invoice is still being prepared. Try again in a moment.")
            .into_response(),
        Err(e) => {
            let e = crate::error::AppError::from(e);
            (
                http::StatusCode::from_u16(e.status_code()).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR),
                e.to_string(),
            )
                .into_response()
        }
    }
}
