//! Building and running the HTTP application. `Application::build` binds the listener first,
//! so tests can ask for port 0 and learn the real port before serving.

use crate::server::config::Config;
use crate::server::standin::{StandIn, StandinConfig, WebhookEndpoint};
use crate::server::state::AppState;
use crate::server::{supervisor, webhooks};
use axum::Router;
use sqlx::PgPool;
use std::net::SocketAddr;
use tokio::net::TcpListener;

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
        // Spends are filed under the configured credit day (rebuilt once if it changed).
        if crate::server::ledger::history::set_day_offset(&pool, config.credit_day_offset)
            .await
            .map_err(std::io::Error::other)?
        {
            tracing::warn!(boundary = %config.credit_day_offset, "CREDIT_DAY_BOUNDARY changed: usage per day rebuilt from the ledger");
        }
        let standin = start_standin(&config);
        let state = AppState::listening_at(config, pool, addr).map_err(std::io::Error::other)?;
        let mut router = crate::server::routes::router(state.clone());
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
    /// `/readyz` checks: the webhook worker, the mail worker, the usage alerts, the janitor, the usage shipper
    /// (spends to Polar's meters) and the Polar customer sync.
    fn spawn_workers(&self) {
        let s = self.state.clone();
        s.tasks.running.store(true, std::sync::atomic::Ordering::Relaxed);
        // WEBHOOK_WORKERS of them, sharing one heartbeat (`/readyz` says stalled when none beats).
        for _ in 0..s.config.webhook_workers {
            let w = s.clone();
            supervisor::spawn("webhook worker", s.tasks.webhook_worker.clone(), move |beat| {
                webhooks::worker::run(
                    w.pool.clone(),
                    w.config.clone(),
                    w.webhook_wakeup.clone(),
                    w.billing.redis.clone(),
                    beat,
                )
            });
        }
        let m = s.clone();
        supervisor::spawn("mail worker", s.tasks.mail_worker.clone(), move |beat| {
            crate::server::mail::run(m.pool.clone(), m.mailer.clone(), beat)
        });
        let a = s.clone();
        supervisor::spawn("usage alerts", s.tasks.usage_alerts.clone(), move |beat| {
            crate::server::usage::alerts::run(
                a.pool.clone(),
                a.mailer.clone(),
                a.config.app_url.to_string(),
                a.config.alert_mails_per_day,
                beat,
            )
        });
        let j = s.clone();
        supervisor::spawn("janitor", s.tasks.janitor.clone(), move |beat| {
            crate::server::janitor::run(j.pool.clone(), j.config.clone(), beat)
        });
        // Background work talks to Polar through its own client and breaker.
        if let Some(polar) = s.billing.polar_background.clone() {
            let u = s.clone();
            supervisor::spawn("usage shipper", s.tasks.usage_shipper.clone(), move |beat| {
                crate::server::usage::shipper::run(
                    u.pool.clone(),
                    polar.clone(),
                    u.config.usage_ingest_requests_per_minute,
                    beat,
                )
            });
            let c = s.clone();
            supervisor::spawn("Polar customer sync", Default::default(), move |_| {
                crate::server::billing::sync_pending_customers(c.billing.clone())
            });
            let r = s.clone();
            supervisor::spawn("scheduled reconcile", Default::default(), move |beat| {
                crate::server::billing::scheduled::run(r.billing.clone(), beat)
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
