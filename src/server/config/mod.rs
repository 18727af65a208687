//! Typed configuration, read once from the environment (and `.env` in development).
//!
//! Every variable is documented in `.env.example`. A missing or malformed value stops the
//! process with a message naming the variable and what it expects. Secrets are wrapped in
//! [`Secret`], whose `Debug` never shows the value, so a config dump is safe to log.
//!
//! Safe defaults: a release build refuses to start without `POLAR_MODE`; local mode (the
//! stand-in, which takes no money) refuses a public `APP_URL` unless `LOCAL_ALLOW_PUBLIC_URL`
//! says it is a demo; sandbox and production need `DATABASE_URL` (never the embedded
//! trust-auth cluster) and `SMTP_URL` (account mail).

mod polar;
mod site;
mod source;
#[cfg(test)]
mod tests;

pub use polar::{PlanMap, PolarConfig, PolarMode, StandinSettings};
pub use site::SiteOptions;
pub use source::{is_loopback_host, ConfigError, ProcessEnv, Secret, Source};

use source::{err, int_at_least, parse_bool, parse_int, parse_url, var};
use std::net::SocketAddr;
use std::path::PathBuf;
use url::Url;

#[derive(Debug, Clone)]
pub struct Config {
    /// `None`: start (or reuse) the project-local PostgreSQL cluster (local mode only).
    pub database_url: Option<Secret>,
    /// Connections per instance (`DATABASE_POOL_SIZE`, 20).
    pub database_pool_size: u32,
    /// `statement_timeout` and `lock_timeout` of every connection, in ms
    /// (`DATABASE_STATEMENT_TIMEOUT_MS` 10,000, `DATABASE_LOCK_TIMEOUT_MS` 5,000).
    pub database_statement_timeout_ms: u64,
    pub database_lock_timeout_ms: u64,
    /// Where the embedded cluster keeps its data (default `.data/pg`).
    pub embedded_pg_dir: PathBuf,
    /// Port the embedded cluster prefers (default 55439; another free port if taken).
    pub embedded_pg_port: u16,
    /// The public URL of this app, used for redirects, cookies, CSRF and Polar return URLs.
    pub app_url: Url,
    /// Address the HTTP server listens on.
    pub bind_addr: SocketAddr,
    /// Leptos' site options (`LEPTOS_*`).
    pub site: SiteOptions,
    /// Keys session ids before they are stored, so a database leak yields no usable cookie.
    pub session_secret: Secret,
    pub polar: PolarConfig,
    pub enterprise_demo_url: Option<Url>,
    /// Credits every account receives once its email address is verified.
    pub free_credits: i64,
    /// Failed sign-ins allowed per email (and 4× per client address) in a 15-minute window.
    pub login_max_failures: i64,
    /// Sign-ups allowed per client address per hour (`SIGNUP_MAX_PER_HOUR`, 10).
    pub signup_max_per_hour: u32,
    /// Ingestion requests all instances together may send Polar per minute
    /// (`USAGE_INGEST_REQUESTS_PER_MINUTE`, 60): Polar's quota (500/min, sandbox 100) is per
    /// token and shared with every other call, so usage takes a bounded share of it.
    pub usage_ingest_requests_per_minute: u32,
    /// The scheduled reconcile: each account with a live subscription is re-read from Polar at
    /// most this often (`RECONCILE_EVERY_SECS`, 600), at most so many accounts a minute
    /// (`RECONCILE_ACCOUNTS_PER_MINUTE`, 10, about 30 Polar requests; 0 turns it off).
    pub reconcile_every_secs: u64,
    pub reconcile_accounts_per_minute: u32,
    /// Usage-alert mails one account may get in 24 hours (`ALERT_MAILS_PER_DAY`, 10); past
    /// that an alert shows as a banner only.
    pub alert_mails_per_day: u32,
    /// Webhook workers per instance (`WEBHOOK_WORKERS`, 2), each claiming up to
    /// `WEBHOOK_BATCH` (32) due events per transaction.
    pub webhook_workers: usize,
    pub webhook_batch: i64,
    /// Metered spends written together in one transaction (group commit), at most
    /// `SPEND_BATCH` (128) at once; 0 writes each spend in a transaction of its own.
    pub spend_batch: usize,
    /// Password hashes computed at once (`PASSWORD_HASH_CONCURRENCY`, the number of cores):
    /// each takes 19 MiB, so a flood of sign-ins queues instead of exhausting memory.
    pub password_hash_concurrency: usize,
    /// Metered-API requests allowed per API key per minute (per instance).
    pub api_rate_limit_per_minute: u32,
    /// Metered-API calls one account may have in flight at once (per instance).
    pub api_max_in_flight_per_account: u32,
    /// Server-function calls that reach Polar, per user per minute (`POLAR_CALLS_PER_USER_PER_MINUTE`, 60).
    pub polar_calls_per_user_per_minute: u32,
    /// The same for an account whose email is not confirmed yet
    /// (`POLAR_CALLS_PER_UNVERIFIED_USER_PER_MINUTE`, 10).
    pub polar_calls_per_unverified_user_per_minute: u32,
    /// Polar requests all page traffic of all instances may make per minute
    /// (`POLAR_PAGE_REQUESTS_PER_MINUTE`, 400 of Polar's 500): the rest is kept for usage
    /// shipping, customer sync and the scheduled reconcile.
    pub polar_page_requests_per_minute: u32,
    /// The circuit breaker on the Polar client: consecutive failures before it opens
    /// (`POLAR_CIRCUIT_THRESHOLD`, 5) and how long it stays open (`POLAR_CIRCUIT_OPEN_MS`, 30,000).
    pub polar_circuit_threshold: u32,
    pub polar_circuit_open_ms: u64,
    /// The most a Polar read for a page may take, retries included (`POLAR_READ_DEADLINE_MS`,
    /// 2,500): past it the page shows the last known state with a notice.
    pub polar_read_deadline_ms: u64,
    /// Where credit "days" begin (accrual boundaries), as a fixed UTC offset. Default UTC.
    pub credit_day_offset: chrono::FixedOffset,
    /// True when `POLAR_MODE` was not set at all (so local mode was chosen by default).
    pub polar_mode_defaulted: bool,
    /// `REDIS_URL`: a Redis in front of the PostgreSQL Customer State cache (optional).
    pub redis_url: Option<Secret>,
    /// Peers whose `X-Forwarded-For` (or `Forwarded`) is believed (`TRUSTED_PROXIES`, CIDRs).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Which header they write (`TRUSTED_PROXY_HEADER`: `x-forwarded-for` or `forwarded`).
    pub trusted_proxy_header: ProxyHeader,
    /// `SMTP_URL` (`smtp://user:pass@host:587` with STARTTLS, `smtps://…` for TLS); local mode
    /// without it keeps mail in the dev mailbox.
    pub smtp_url: Option<Secret>,
    /// The sender of account mail (`MAIL_FROM`, `Tally <no-reply@APP_URL's host>`).
    pub mail_from: String,
    /// Bearer token for `/metrics` (`METRICS_TOKEN`); without it `/metrics` is not served.
    pub metrics_token: Option<Secret>,
    /// Days a processed webhook keeps its payload (`WEBHOOK_PAYLOAD_RETENTION_DAYS`, 30); its id
    /// is kept, so a late redelivery is still recognised.
    pub webhook_payload_retention_days: i64,
}

/// Which header the trusted proxies write (`TRUSTED_PROXY_HEADER`), read by `client_ip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    XForwardedFor,
    Forwarded,
}

impl Config {
    /// Reads and checks the whole configuration. `local_secret` supplies the session secret
    /// in local mode when none is configured (the binary persists one under `.data/`).
    pub fn from_source(src: &dyn Source, local_secret: impl FnOnce() -> String) -> Result<Config, ConfigError> {
        let polar_mode_raw = var(src, "POLAR_MODE");
        let mode = match polar_mode_raw.as_deref() {
            None | Some("local") => PolarMode::Local,
            Some("sandbox") => PolarMode::Sandbox,
            Some("production") => PolarMode::Production,
            Some(other) => {
                return Err(err("POLAR_MODE", format!("expected one of local, sandbox, production; got `{other}`")))
            }
        };
        let m = mode.as_str();

        let bind_addr: SocketAddr = match var(src, "LEPTOS_SITE_ADDR").or_else(|| var(src, "BIND_ADDR")) {
            Some(v) => v.parse().map_err(|_| {
                err("LEPTOS_SITE_ADDR", format!("expected host:port such as 127.0.0.1:3000, got `{v}`"))
            })?,
            None => SocketAddr::from(([127, 0, 0, 1], 3000)),
        };

        let app_url = match var(src, "APP_URL") {
            Some(v) => parse_url("APP_URL", &v)?,
            None if mode == PolarMode::Local => {
                let host =
                    if bind_addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { bind_addr.ip().to_string() };
                parse_url("APP_URL", &format!("http://{host}:{}", bind_addr.port()))?
            }
            None => return Err(err("APP_URL", format!("required in {m} mode: the public https URL of this app"))),
        };
        if mode == PolarMode::Local && !is_loopback_host(&app_url) && !parse_bool(src, "LOCAL_ALLOW_PUBLIC_URL", false)?
        {
            return Err(err(
                "APP_URL",
                format!("POLAR_MODE=local serves the Polar stand-in, which takes no money, but APP_URL ({app_url}) is not a loopback address; use POLAR_MODE=sandbox or production, or set LOCAL_ALLOW_PUBLIC_URL=true for a demo"),
            ));
        }

        let session_secret = match var(src, "SESSION_SECRET") {
            Some(v) if v.len() < 32 => {
                return Err(err(
                    "SESSION_SECRET",
                    "expected at least 32 characters of random text (for example `openssl rand -hex 32`)",
                ))
            }
            Some(v) => Secret::new(v),
            None if mode == PolarMode::Local => Secret::new(local_secret()),
            None => {
                return Err(err(
                    "SESSION_SECRET",
                    format!("required in {m} mode: at least 32 characters of random text"),
                ))
            }
        };

        let polar = polar::read(src, mode, &app_url, &session_secret)?;

        let enterprise_demo_url =
            var(src, "ENTERPRISE_DEMO_URL").map(|v| parse_url("ENTERPRISE_DEMO_URL", &v)).transpose()?;
        let whole = "a whole number";
        let free_credits = int_at_least(src, "FREE_CREDITS", 0i64, 1000, "a whole number of credits")?;
        let login_max_failures = int_at_least(src, "LOGIN_MAX_FAILURES", 1i64, 5, whole)?;
        let signup_max_per_hour = int_at_least(src, "SIGNUP_MAX_PER_HOUR", 1u32, 10, whole)?;
        let usage_ingest_requests_per_minute = int_at_least(src, "USAGE_INGEST_REQUESTS_PER_MINUTE", 1u32, 60, whole)?;
        let alert_mails_per_day = int_at_least(src, "ALERT_MAILS_PER_DAY", 0u32, 10, whole)?;
        let webhook_workers = int_at_least(src, "WEBHOOK_WORKERS", 1usize, 2, whole)?;
        let webhook_batch = int_at_least(src, "WEBHOOK_BATCH", 1i64, 32, whole)?;
        let spend_batch = int_at_least(src, "SPEND_BATCH", 0usize, 128, whole)?;
        let reconcile_every_secs = int_at_least(src, "RECONCILE_EVERY_SECS", 1u64, 600, "seconds")?;
        let reconcile_accounts_per_minute = int_at_least(src, "RECONCILE_ACCOUNTS_PER_MINUTE", 0u32, 10, whole)?;
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let password_hash_concurrency = int_at_least(src, "PASSWORD_HASH_CONCURRENCY", 1usize, cores, whole)?;
        let api_rate_limit_per_minute = int_at_least(src, "API_RATE_LIMIT_PER_MINUTE", 1u32, 120, whole)?;
        let api_max_in_flight_per_account = int_at_least(src, "API_MAX_IN_FLIGHT_PER_ACCOUNT", 1u32, 8, whole)?;
        let polar_calls_per_user_per_minute = int_at_least(src, "POLAR_CALLS_PER_USER_PER_MINUTE", 1u32, 60, whole)?;
        let polar_calls_per_unverified_user_per_minute =
            int_at_least(src, "POLAR_CALLS_PER_UNVERIFIED_USER_PER_MINUTE", 1u32, 10, whole)?;
        let polar_page_requests_per_minute = int_at_least(src, "POLAR_PAGE_REQUESTS_PER_MINUTE", 1u32, 400, whole)?;
        let polar_circuit_threshold = int_at_least(src, "POLAR_CIRCUIT_THRESHOLD", 1u32, 5, whole)?;
        let polar_circuit_open_ms = int_at_least(src, "POLAR_CIRCUIT_OPEN_MS", 1u64, 30_000, "milliseconds")?;
        let polar_read_deadline_ms = int_at_least(src, "POLAR_READ_DEADLINE_MS", 100u64, 2_500, "milliseconds")?;
        let credit_day_offset = match var(src, "CREDIT_DAY_BOUNDARY") {
            Some(v) => crate::domain::credits::parse_offset(&v).ok_or_else(|| {
                err(
                    "CREDIT_DAY_BOUNDARY",
                    format!("expected UTC or a fixed offset such as +02:00 or -05:00, got `{v}`"),
                )
            })?,
            None => chrono::FixedOffset::east_opt(0).ok_or_else(|| err("CREDIT_DAY_BOUNDARY", "UTC"))?,
        };

        let database_url = var(src, "DATABASE_URL").map(Secret::new);
        match &database_url {
            Some(db) if !(db.expose().starts_with("postgres://") || db.expose().starts_with("postgresql://")) => {
                return Err(err(
                    "DATABASE_URL",
                    "expected a PostgreSQL URL such as postgres://user:password@host:5432/tally",
                ));
            }
            None if mode != PolarMode::Local => {
                return Err(err("DATABASE_URL", format!("required in {m} mode: the embedded cluster trusts every local connection and is for development only")));
            }
            _ => {}
        }
        let database_pool_size = int_at_least(src, "DATABASE_POOL_SIZE", 2u32, 20, whole)?;
        let database_statement_timeout_ms =
            int_at_least(src, "DATABASE_STATEMENT_TIMEOUT_MS", 100u64, 10_000, "milliseconds")?;
        let database_lock_timeout_ms = int_at_least(src, "DATABASE_LOCK_TIMEOUT_MS", 100u64, 5_000, "milliseconds")?;
        let redis_url = var(src, "REDIS_URL").map(Secret::new);
        if let Some(r) = &redis_url {
            if !r.expose().starts_with("redis://") || redis::Client::open(r.expose()).is_err() {
                return Err(err(
                    "REDIS_URL",
                    "expected a Redis URL such as redis://127.0.0.1:6379/0 (or leave it unset)",
                ));
            }
        }
        let embedded_pg_dir = var(src, "TALLY_PG_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".data/pg"));
        let embedded_pg_port = match var(src, "TALLY_PG_PORT") {
            Some(v) => parse_int("TALLY_PG_PORT", &v, "a TCP port number")?,
            None => 55439,
        };

        let mut trusted_proxies = vec![];
        for item in var(src, "TRUSTED_PROXIES").unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty())
        {
            let net = item
                .parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    err(
                        "TRUSTED_PROXIES",
                        format!(
                            "expected comma-separated addresses or CIDRs such as 10.0.0.0/8,127.0.0.1, got `{item}`"
                        ),
                    )
                })?;
            trusted_proxies.push(net);
        }
        let trusted_proxy_header = match var(src, "TRUSTED_PROXY_HEADER").map(|v| v.to_ascii_lowercase()).as_deref() {
            None | Some("x-forwarded-for") => ProxyHeader::XForwardedFor,
            Some("forwarded") => ProxyHeader::Forwarded,
            Some(other) => {
                return Err(err(
                    "TRUSTED_PROXY_HEADER",
                    format!("expected x-forwarded-for or forwarded, got `{other}`"),
                ))
            }
        };

        let smtp_url = var(src, "SMTP_URL").map(Secret::new);
        match &smtp_url {
            Some(u) if !(u.expose().starts_with("smtp://") || u.expose().starts_with("smtps://")) => {
                return Err(err(
                    "SMTP_URL",
                    "expected smtp://user:password@host:587 (STARTTLS) or smtps://…:465 (TLS)",
                ));
            }
            None if mode != PolarMode::Local => {
                return Err(err(
                    "SMTP_URL",
                    format!("required in {m} mode: email verification and password reset need a mail server"),
                ));
            }
            _ => {}
        }
        let mail_from = var(src, "MAIL_FROM")
            .unwrap_or_else(|| format!("Tally <no-reply@{}>", app_url.host_str().unwrap_or("localhost")));
        if !mail_from.contains('@') {
            return Err(err(
                "MAIL_FROM",
                format!("expected an address such as `Tally <billing@example.com>`, got `{mail_from}`"),
            ));
        }
        let metrics_token = match var(src, "METRICS_TOKEN") {
            Some(t) if t.len() < 16 => return Err(err("METRICS_TOKEN", "expected at least 16 characters")),
            t => t.map(Secret::new),
        };
        let webhook_payload_retention_days =
            int_at_least(src, "WEBHOOK_PAYLOAD_RETENTION_DAYS", 1i64, 30, "a whole number of days")?;
        let site = SiteOptions::read(src)?;

        Ok(Config {
            database_url,
            database_pool_size,
            database_statement_timeout_ms,
            database_lock_timeout_ms,
            embedded_pg_dir,
            embedded_pg_port,
            app_url,
            bind_addr,
            site,
            session_secret,
            polar,
            enterprise_demo_url,
            free_credits,
            login_max_failures,
            signup_max_per_hour,
            usage_ingest_requests_per_minute,
            password_hash_concurrency,
            api_rate_limit_per_minute,
            alert_mails_per_day,
            webhook_workers,
            webhook_batch,
            spend_batch,
            reconcile_every_secs,
            reconcile_accounts_per_minute,
            polar_calls_per_unverified_user_per_minute,
            polar_page_requests_per_minute,
            api_max_in_flight_per_account,
            polar_calls_per_user_per_minute,
            polar_circuit_threshold,
            polar_circuit_open_ms,
            polar_read_deadline_ms,
            credit_day_offset,
            polar_mode_defaulted: polar_mode_raw.is_none(),
            redis_url,
            trusted_proxies,
            trusted_proxy_header,
            smtp_url,
            mail_from,
            metrics_token,
            webhook_payload_retention_days,
        })
    }

    /// Cookies get `Secure` (and the session cookie the `__Host-` prefix) when the app is
    /// served over https.
    pub fn secure_cookies(&self) -> bool {
        self.app_url.scheme() == "https"
    }

    /// `APP_URL`'s origin (`https://billing.example.com`), as browsers send it in `Origin`.
    pub fn app_origin(&self) -> String {
        self.app_url.origin().ascii_serialization()
    }

    /// Refuses what must never start: a release build without an explicit `POLAR_MODE`.
    pub fn check_release(&self, release_build: bool) -> Result<(), ConfigError> {
        if release_build && self.polar_mode_defaulted {
            return Err(err(
                "POLAR_MODE",
                "a release build needs POLAR_MODE set: `local` (the built-in stand-in, no real payments), `sandbox` or `production`",
            ));
        }
        Ok(())
    }

    /// Warnings worth shouting at start-up.
    pub fn startup_warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.polar.mode == PolarMode::Local {
            if !is_loopback_host(&self.app_url) {
                w.push(format!("APP_URL is {} and POLAR_MODE is local (LOCAL_ALLOW_PUBLIC_URL): visitors reach the stand-in checkout, which takes no money.", self.app_url));
            }
            // A real Polar token (prefixed) in local mode is likely a mix-up.
            if self
                .polar
                .access_token
                .as_ref()
                .is_some_and(|t| t.expose().starts_with("polar_oat_") || t.expose().starts_with("polar_pat_"))
            {
                w.push(
                    "POLAR_ACCESS_TOKEN is set but POLAR_MODE is local: it only unlocks the stand-in, never Polar."
                        .to_string(),
                );
            }
        }
        w
    }
}
