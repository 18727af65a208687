//! Building and running the HTTP application. `Application::build` binds the listener first,
//! so tests can ask for port 0 and learn the real port before serving.

use crate::app::{shell, App};
use crate::server::config::Config;
use crate::server::standin::{StandIn, StandinConfig, WebhookEndpoint};
use crate::server::state::AppState;
use crate::server::{csrf, health, metered, supervisor, webhooks};
use axum::routing::{get, post};
use axum::Router;
use leptos_axum::{generate_route_list, LeptosRoutes};
use sqlx::PgPool;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tower_http::compression::CompressionLayer;
use tower_http::trace::TraceLayer;

pub struct Application {
    listener: TcpListener,
    router: Router,
    port: u16,
    state: AppState,
}

impl Application {
    /// Binds `config.bind_addr` (port 0 picks a free port) and assembles the router on `pool`,
    /// whose migrations must already be applied.
    pub async fn build(mut config: Config, pool: PgPool) -> std::io::Result<Application> {
        let listener = TcpListener::bind(config.bind_addr).await?;
        let addr = listener.local_addr()?;
        // Asked for any free port: the public URL (and the stand-in's, under it) gets the real one.
        if config.app_url.port() == Some(0) {
            let derived_api = config.app_url.join("/polar").ok();
            let _ = config.app_url.set_port(Some(addr.port()));
            if derived_api.as_ref() == Some(&config.polar.api_url) {
                config.polar.api_url = config.app_url.join("/polar").expect("valid URL");
            }
        }
        let standin = start_standin(&config);
        let mut state = AppState::new(config, pool).map_err(std::io::Error::other)?;
        state.leptos_options = state.config.site.leptos_options(addr);
        let mut router = router(state.clone());
        if let Some(s) = standin {
            // Outside the app's middleware: the stand-in is "another site" with its own rules.
            router = router.nest_service("/polar", s.router());
        }
        Ok(Application { listener, router, port: addr.port(), state })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The background tasks, each supervised (restarted if it ends or panics) with a heartbeat
    /// `/readyz` checks: the webhook worker, the mail worker, the janitor, and the Polar
    /// customer sync.
    fn spawn_workers(&self) {
        let s = self.state.clone();
        s.tasks.running.store(true, std::sync::atomic::Ordering::Relaxed);
        let w = s.clone();
        supervisor::spawn("webhook worker", s.tasks.webhook_worker.clone(), move |beat| {
            webhooks::worker::run(w.pool.clone(), w.config.clone(), w.webhook_wakeup.clone(), w.redis.clone(), beat)
        });
        let m = s.clone();
        supervisor::spawn("mail worker", s.tasks.mail_worker.clone(), move |beat| {
            crate::server::mail::run(m.pool.clone(), m.mailer.clone(), beat)
        });
        let j = s.clone();
        supervisor::spawn("janitor", s.tasks.janitor.clone(), move |beat| {
            crate::server::janitor::run(j.pool.clone(), j.config.clone(), beat)
        });
        if s.polar.is_some() {
            let c = s.clone();
            supervisor::spawn("Polar customer sync", Default::default(), move |_| {
                crate::server::billing::sync_pending_customers(c.clone())
            });
        }
    }

    /// Serves until Ctrl-C or SIGTERM, then finishes in-flight requests. The webhook worker
    /// runs beside it.
    pub async fn run(self) -> std::io::Result<()> {
        self.spawn_workers();
        axum::serve(self.listener, self.router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(shutdown_signal())
            .await
    }

    /// Serves forever, with the webhook worker (tests: dropped with the runtime).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.spawn_workers();
        axum::serve(self.listener, self.router.into_make_service_with_connect_info::<SocketAddr>()).await
    }
}

/// In local mode, the built-in Polar stand-in at `APP_URL/polar`, delivering webhooks to
/// this app's receiver.
fn start_standin(config: &Config) -> Option<StandIn> {
    let settings = config.polar.standin.as_ref()?;
    let token = config.polar.effective_token()?.expose().to_string();
    let mut c = StandinConfig::new(config.polar.api_url.as_str(), token);
    let ms = std::time::Duration::from_millis;
    c.payment_delay = (ms(settings.payment_delay_ms.0), ms(settings.payment_delay_ms.1));
    c.invoice_delay = ms(settings.invoice_delay_ms);
    c.state_lag = ms(settings.state_lag_ms);
    c.retry_base = ms(settings.retry_base_ms);
    c.trial_days = settings.trial_days;
    c.state_file = settings.state_file.clone();
    c.controls_token = Some(settings.controls_token.expose().to_string());
    c.rate_limit_per_minute = Some(settings.rate_limit_per_minute).filter(|n| *n > 0);
    if let (Some(secret), Ok(url)) = (&config.polar.webhook_secret, config.app_url.join(&config.polar.webhook_path)) {
        c.endpoints.push(WebhookEndpoint {
            url: url.to_string(),
            secret: secret.expose().to_string(),
            standard: settings.webhook_standard,
        });
    }
    for (url, secret, standard) in &settings.extra_endpoints {
        c.endpoints.push(WebhookEndpoint {
            url: url.clone(),
            secret: secret.expose().to_string(),
            standard: *standard,
        });
    }
    Some(StandIn::start(c))
}

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
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(crate::server::metrics::metrics))
        .route("/readyz", get(health::readyz))
        .route(
            "/api/v1/text/stats",
            post(metered::text_stats_handler).layer(axum::extract::DefaultBodyLimit::max(1024 * 1024)),
        )
        .route("/dev/mailbox", get(crate::server::mail::dev_mailbox::mailbox))
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

/// `GET /billing/invoices/{order_id}`: the signed-in owner of the order is redirected to the
/// invoice file Polar generated (a fresh, short-lived URL each time).
async fn invoice_download(
    axum::extract::State(state): axum::extract::State<AppState>,
    axum::extract::Path(order_id): axum::extract::Path<String>,
    headers: http::HeaderMap,
) -> axum::response::Response {
    use axum::response::{IntoResponse, Redirect};
    let user = match crate::server::auth::session::user_from_headers(&state.pool, &state.config, &headers).await {
        Ok(Some(u)) => u,
        Ok(None) => return Redirect::to("/login?next=%2Fsettings%2Fbilling").into_response(),
        Err(e) => {
            return (http::StatusCode::INTERNAL_SERVER_ERROR, crate::error::AppError::internal(e).to_string())
                .into_response()
        }
    };
    match crate::server::billing::invoice_url(&state, user.id, &order_id).await {
        Ok(Some(url)) => Redirect::to(&url).into_response(),
        Ok(None) => (http::StatusCode::NOT_FOUND, "This invoice is still being prepared. Try again in a moment.")
            .into_response(),
        Err(e) => (
            http::StatusCode::from_u16(e.status_code()).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR),
            e.to_string(),
        )
            .into_response(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = terminate => {} }
    tracing::info!("shutting down");
}
