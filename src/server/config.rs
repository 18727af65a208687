//! Typed configuration, read once from the environment (and `.env` in development).
//!
//! Every variable is documented in `.env.example`. A missing or malformed value stops the
//! process with a message naming the variable and what it expects. Secrets are wrapped in
//! [`Secret`], whose `Debug` never shows the value, so a config dump is safe to log.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use url::Url;

/// A secret string. Its `Debug`/`Display` print `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Which Polar Tally talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolarMode {
    /// The built-in stand-in, served by this process. No tokens needed.
    Local,
    /// Polar's sandbox (`https://sandbox-api.polar.sh`): test cards, separate accounts.
    Sandbox,
    /// Polar production (`https://api.polar.sh`): real money.
    Production,
}

impl PolarMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PolarMode::Local => "local",
            PolarMode::Sandbox => "sandbox",
            PolarMode::Production => "production",
        }
    }
}

/// Polar product ids for what Tally sells. In local mode the stand-in's own ids are used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanMap {
    pub pro: Option<String>,
    pub business: Option<String>,
    /// The plans billed yearly (optional): the pricing page offers a monthly/yearly switch
    /// when they are set.
    pub pro_yearly: Option<String>,
    pub business_yearly: Option<String>,
    pub pack_50: Option<String>,
    pub pack_100: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PolarConfig {
    pub mode: PolarMode,
    /// Base URL of Polar's API. Local mode: this server's own `/polar` prefix.
    pub api_url: Url,
    pub access_token: Option<Secret>,
    pub webhook_secret: Option<Secret>,
    /// Where Polar delivers webhooks (default `/api/webhooks/polar`).
    pub webhook_path: String,
    pub products: PlanMap,
    /// Local mode only: how the built-in stand-in behaves.
    pub standin: Option<StandinSettings>,
    /// Whether deleting an account also anonymizes the Polar customer
    /// (`POLAR_DELETE_ANONYMIZE`, default true).
    pub anonymize_on_delete: bool,
}

impl PolarConfig {
    /// The token Tally sends: the stand-in's own in local mode, else `POLAR_ACCESS_TOKEN`.
    pub fn effective_token(&self) -> Option<&Secret> {
        match &self.standin {
            Some(s) => Some(&s.access_token),
            None => self.access_token.as_ref(),
        }
    }
}

/// Settings of the local Polar stand-in (`POLAR_STANDIN_*`).
#[derive(Debug, Clone)]
pub struct StandinSettings {
    /// The token the stand-in accepts and Tally sends: `POLAR_ACCESS_TOKEN` when set, else
    /// derived from the session secret.
    pub access_token: Secret,
    /// Hosted checkout "processing" time, in milliseconds (`POLAR_STANDIN_PAYMENT_DELAY_MS`,
    /// `1000-2000` by default).
    pub payment_delay_ms: (u64, u64),
    /// How long invoice generation takes (`POLAR_STANDIN_INVOICE_DELAY_MS`, 1500).
    pub invoice_delay_ms: u64,
    /// Customer State cache lag (`POLAR_STANDIN_STATE_LAG_MS`, 0).
    pub state_lag_ms: u64,
    /// Trial days on the plans (`POLAR_STANDIN_TRIAL_DAYS`, none).
    pub trial_days: Option<i64>,
    /// Sign webhooks under the Standard Webhooks key scheme (default) or Polar's legacy one
    /// (`POLAR_STANDIN_WEBHOOK_SCHEME=standard|legacy`).
    pub webhook_standard: bool,
    /// First webhook retry delay (`POLAR_STANDIN_RETRY_BASE_MS`, 2000 like Polar).
    pub retry_base_ms: u64,
    /// Where the stand-in keeps its data (`POLAR_STANDIN_STATE_FILE`, default
    /// `.data/polar-standin.json`; `off` keeps it in memory).
    pub state_file: Option<PathBuf>,
    /// More webhook endpoints besides this app's receiver (`POLAR_STANDIN_WEBHOOK_ENDPOINTS`:
    /// comma-separated `url|secret|standard` or `url|secret|legacy`).
    pub extra_endpoints: Vec<(String, Secret, bool)>,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `None`: start (or reuse) the project-local PostgreSQL cluster.
    pub database_url: Option<Secret>,
    /// Where the embedded cluster keeps its data (default `.data/pg`).
    pub embedded_pg_dir: PathBuf,
    /// Port the embedded cluster prefers (default 55439; another free port if taken).
    pub embedded_pg_port: u16,
    /// The public URL of this app, used for redirects, cookies and Polar return URLs.
    pub app_url: Url,
    /// Address the HTTP server listens on.
    pub bind_addr: SocketAddr,
    /// Keys session ids before they are stored, so a database leak yields no usable cookie.
    pub session_secret: Secret,
    pub polar: PolarConfig,
    pub enterprise_demo_url: Option<Url>,
    /// Credits every new account receives once.
    pub free_credits: i64,
    /// Failed sign-ins allowed per email (and per client address) in a 15-minute window.
    pub login_max_failures: i64,
    /// Metered-API requests allowed per API key per minute (per instance).
    pub api_rate_limit_per_minute: u32,
    /// Where credit "days" begin (accrual boundaries), as a fixed UTC offset. Default UTC.
    pub credit_day_offset: chrono::FixedOffset,
    /// True when `POLAR_MODE` was not set at all (so local mode was chosen by default).
    pub polar_mode_defaulted: bool,
    /// `REDIS_URL`: a Redis in front of the PostgreSQL Customer State cache (optional).
    pub redis_url: Option<Secret>,
}

/// A configuration problem, naming the variable and what it expects. Never carries a
/// secret's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "configuration error: {}: {}", self.var, self.problem)
    }
}

impl std::error::Error for ConfigError {}

fn err(var: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError { var, problem: problem.into() }
}

/// Where configuration values come from. Tests pass a map; the binary the process env.
pub trait Source {
    fn get(&self, key: &str) -> Option<String>;
}

impl Source for HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).cloned()
    }
}

/// The process environment (after `.env` was loaded into it).
pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

/// Reads a variable, treating an empty value as unset (as `.env` files often leave them).
fn var(src: &dyn Source, key: &str) -> Option<String> {
    src.get(key).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

fn parse_url(var_name: &'static str, value: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value)
        .map_err(|e| err(var_name, format!("expected an absolute http(s) URL such as https://app.example.com, got a value that does not parse ({e})")))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(err(var_name, "expected an http:// or https:// URL"));
    }
    Ok(url)
}

fn parse_int<T: std::str::FromStr>(var_name: &'static str, value: &str, expected: &str) -> Result<T, ConfigError> {
    value.parse::<T>().map_err(|_| err(var_name, format!("expected {expected}, got `{value}`")))
}

fn is_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok()
}

fn is_loopback_host(url: &Url) -> bool {
    matches!(url.host_str(), Some("localhost") | Some("127.0.0.1") | Some("[::1]") | Some("::1"))
}

/// A secret derived from the session secret for one purpose: a `whsec_` webhook secret
/// (32 bytes, base64) or a `polar_oat_local_` token.
fn derive_secret(session_secret: &Secret, purpose: &str, webhook: bool) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(session_secret.expose().as_bytes()).expect("any key length");
    m.update(purpose.as_bytes());
    let bytes = m.finalize().into_bytes();
    if webhook {
        format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes))
    } else {
        format!("polar_oat_local_{}", hex::encode(&bytes[..20]))
    }
}

fn standin_settings(src: &dyn Source, session_secret: &Secret, configured_token: Option<&Secret>) -> Result<StandinSettings, ConfigError> {
    let payment_delay_ms = match var(src, "POLAR_STANDIN_PAYMENT_DELAY_MS") {
        None => (1000, 2000),
        Some(v) => {
            let bad = || err("POLAR_STANDIN_PAYMENT_DELAY_MS", format!("expected milliseconds such as 1500 or a range such as 1000-2000, got `{v}`"));
            match v.split_once('-') {
                Some((a, b)) => {
                    let (a, b): (u64, u64) = (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
                    if a > b {
                        return Err(bad());
                    }
                    (a, b)
                }
                None => {
                    let n: u64 = v.parse().map_err(|_| bad())?;
                    (n, n)
                }
            }
        }
    };
    let ms = |name: &'static str, default: u64| -> Result<u64, ConfigError> {
        match var(src, name) {
            Some(v) => parse_int(name, &v, "a whole number of milliseconds"),
            None => Ok(default),
        }
    };
    let trial_days = match var(src, "POLAR_STANDIN_TRIAL_DAYS") {
        Some(v) => Some(parse_int::<i64>("POLAR_STANDIN_TRIAL_DAYS", &v, "a whole number of days")?).filter(|d| *d > 0),
        None => None,
    };
    let webhook_standard = match var(src, "POLAR_STANDIN_WEBHOOK_SCHEME").as_deref() {
        None | Some("standard") => true,
        Some("legacy") => false,
        Some(other) => return Err(err("POLAR_STANDIN_WEBHOOK_SCHEME", format!("expected standard or legacy, got `{other}`"))),
    };
    let state_file = match var(src, "POLAR_STANDIN_STATE_FILE").as_deref() {
        Some("off") => None,
        Some(p) => Some(PathBuf::from(p)),
        None => Some(PathBuf::from(".data/polar-standin.json")),
    };
    let mut extra_endpoints = vec![];
    for item in var(src, "POLAR_STANDIN_WEBHOOK_ENDPOINTS").unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = || err("POLAR_STANDIN_WEBHOOK_ENDPOINTS", "expected comma-separated url|secret|standard or url|secret|legacy entries");
        let parts: Vec<&str> = item.split('|').collect();
        let [url, secret, scheme] = parts.as_slice() else { return Err(bad()) };
        parse_url("POLAR_STANDIN_WEBHOOK_ENDPOINTS", url)?;
        let standard = match *scheme {
            "standard" => true,
            "legacy" => false,
            _ => return Err(bad()),
        };
        if secret.is_empty() {
            return Err(bad());
        }
        extra_endpoints.push((url.to_string(), Secret::new(*secret), standard));
    }
    Ok(StandinSettings {
        extra_endpoints,
        // A configured token is the one the stand-in accepts (tests that call it directly set one).
        access_token: configured_token.cloned().unwrap_or_else(|| Secret::new(derive_secret(session_secret, "polar-standin-token", false))),
        payment_delay_ms,
        invoice_delay_ms: ms("POLAR_STANDIN_INVOICE_DELAY_MS", 1500)?,
        state_lag_ms: ms("POLAR_STANDIN_STATE_LAG_MS", 0)?,
        trial_days,
        webhook_standard,
        retry_base_ms: ms("POLAR_STANDIN_RETRY_BASE_MS", 2000)?,
        state_file,
    })
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
            Some(other) => return Err(err("POLAR_MODE", format!("expected one of local, sandbox, production; got `{other}`"))),
        };

        let bind_addr: SocketAddr = match var(src, "LEPTOS_SITE_ADDR").or_else(|| var(src, "BIND_ADDR")) {
            Some(v) => v.parse().map_err(|_| err("LEPTOS_SITE_ADDR", format!("expected host:port such as 127.0.0.1:3000, got `{v}`")))?,
            None => "127.0.0.1:3000".parse().expect("valid default address"),
        };

        let app_url = match var(src, "APP_URL") {
            Some(v) => parse_url("APP_URL", &v)?,
            None if mode == PolarMode::Local => {
                let host = if bind_addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { bind_addr.ip().to_string() };
                Url::parse(&format!("http://{host}:{}", bind_addr.port())).expect("valid default URL")
            }
            None => return Err(err("APP_URL", format!("required in {} mode: the public https URL of this app", mode.as_str()))),
        };

        let session_secret = match var(src, "SESSION_SECRET") {
            Some(v) if v.len() < 32 => return Err(err("SESSION_SECRET", "expected at least 32 characters of random text (for example `openssl rand -hex 32`)")),
            Some(v) => Secret::new(v),
            None if mode == PolarMode::Local => Secret::new(local_secret()),
            None => return Err(err("SESSION_SECRET", format!("required in {} mode: at least 32 characters of random text", mode.as_str()))),
        };

        let access_token = var(src, "POLAR_ACCESS_TOKEN").map(Secret::new);
        let webhook_secret = var(src, "POLAR_WEBHOOK_SECRET").map(Secret::new);
        let products = PlanMap {
            pro: var(src, "POLAR_PRODUCT_PRO"),
            business: var(src, "POLAR_PRODUCT_BUSINESS"),
            pro_yearly: var(src, "POLAR_PRODUCT_PRO_YEARLY"),
            business_yearly: var(src, "POLAR_PRODUCT_BUSINESS_YEARLY"),
            pack_50: var(src, "POLAR_PRODUCT_PACK_50"),
            pack_100: var(src, "POLAR_PRODUCT_PACK_100"),
        };
        for (name, value) in [
            ("POLAR_PRODUCT_PRO", &products.pro),
            ("POLAR_PRODUCT_BUSINESS", &products.business),
            ("POLAR_PRODUCT_PRO_YEARLY", &products.pro_yearly),
            ("POLAR_PRODUCT_BUSINESS_YEARLY", &products.business_yearly),
            ("POLAR_PRODUCT_PACK_50", &products.pack_50),
            ("POLAR_PRODUCT_PACK_100", &products.pack_100),
        ] {
            if let Some(v) = value {
                if !is_uuid(v) {
                    let name: &'static str = name;
                    return Err(err(name, format!("expected a Polar product id (a UUID), got `{v}`")));
                }
            }
        }

        let api_url = match var(src, "POLAR_API_URL") {
            Some(v) => parse_url("POLAR_API_URL", &v)?,
            None => match mode {
                PolarMode::Local => app_url.join("/polar").expect("valid URL"),
                PolarMode::Sandbox => Url::parse("https://sandbox-api.polar.sh").expect("valid URL"),
                PolarMode::Production => Url::parse("https://api.polar.sh").expect("valid URL"),
            },
        };

        if mode != PolarMode::Local {
            let m = mode.as_str();
            if access_token.is_none() {
                return Err(err("POLAR_ACCESS_TOKEN", format!("required in {m} mode: an Organization Access Token (polar_oat_…) from the {m} dashboard")));
            }
            if webhook_secret.is_none() {
                return Err(err("POLAR_WEBHOOK_SECRET", format!("required in {m} mode: the secret of the webhook endpoint you registered in the {m} dashboard")));
            }
            for (name, value) in [("POLAR_PRODUCT_PRO", &products.pro), ("POLAR_PRODUCT_BUSINESS", &products.business)] {
                if value.is_none() {
                    return Err(err(name, format!("required in {m} mode: the id of the product in your {m} organization")));
                }
            }
        }

        // Mixing sandbox and production is the most common Polar support problem: refuse a
        // production setup that looks like a sandbox one.
        if mode == PolarMode::Production {
            if api_url.host_str().is_some_and(|h| h.contains("sandbox")) {
                return Err(err("POLAR_API_URL", "POLAR_MODE=production but the API URL points at Polar's sandbox; use POLAR_MODE=sandbox or remove POLAR_API_URL"));
            }
            if app_url.scheme() != "https" || is_loopback_host(&app_url) {
                return Err(err("APP_URL", "POLAR_MODE=production needs the public https URL customers use, not a local or http address"));
            }
            if access_token.as_ref().is_some_and(|t| t.expose().to_ascii_lowercase().contains("sandbox")) {
                return Err(err("POLAR_ACCESS_TOKEN", "POLAR_MODE=production but the token looks like a sandbox token"));
            }
        }
        if mode == PolarMode::Sandbox && var(src, "POLAR_API_URL").is_none() && api_url.host_str() == Some("api.polar.sh") {
            return Err(err("POLAR_API_URL", "POLAR_MODE=sandbox must not talk to the production API"));
        }

        let (webhook_secret, standin) = if mode == PolarMode::Local {
            let settings = standin_settings(src, &session_secret, access_token.as_ref())?;
            // The stand-in signs with this secret; a configured one wins.
            let secret = webhook_secret.or_else(|| Some(Secret::new(derive_secret(&session_secret, "polar-standin-webhook", true))));
            (secret, Some(settings))
        } else {
            (webhook_secret, None)
        };
        let mut products = products;
        if mode == PolarMode::Local {
            // The stand-in's catalogue has stable ids; configured ones (if any) still win.
            let id = crate::server::standin::product_id;
            products.pro.get_or_insert_with(|| id("pro"));
            products.business.get_or_insert_with(|| id("business"));
            products.pro_yearly.get_or_insert_with(|| id("pro_yearly"));
            products.business_yearly.get_or_insert_with(|| id("business_yearly"));
            products.pack_50.get_or_insert_with(|| id("pack_50"));
            products.pack_100.get_or_insert_with(|| id("pack_100"));
        }

        let anonymize_on_delete = match var(src, "POLAR_DELETE_ANONYMIZE").as_deref() {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => return Err(err("POLAR_DELETE_ANONYMIZE", format!("expected true or false, got `{other}`"))),
        };
        let webhook_path = var(src, "POLAR_WEBHOOK_PATH").unwrap_or_else(|| "/api/webhooks/polar".into());
        if !webhook_path.starts_with('/') || webhook_path.contains(['?', '#', ' ', '{']) {
            return Err(err("POLAR_WEBHOOK_PATH", format!("expected a URL path such as /api/webhooks/polar, got `{webhook_path}`")));
        }
        let enterprise_demo_url = var(src, "ENTERPRISE_DEMO_URL").map(|v| parse_url("ENTERPRISE_DEMO_URL", &v)).transpose()?;
        let free_credits = match var(src, "FREE_CREDITS") {
            Some(v) => {
                let n: i64 = parse_int("FREE_CREDITS", &v, "a whole number of credits (0 or more)")?;
                if n < 0 {
                    return Err(err("FREE_CREDITS", "expected 0 or more"));
                }
                n
            }
            None => 1000,
        };
        let login_max_failures = match var(src, "LOGIN_MAX_FAILURES") {
            Some(v) => parse_int::<i64>("LOGIN_MAX_FAILURES", &v, "a positive whole number")?.max(1),
            None => 5,
        };
        let api_rate_limit_per_minute = match var(src, "API_RATE_LIMIT_PER_MINUTE") {
            Some(v) => parse_int::<u32>("API_RATE_LIMIT_PER_MINUTE", &v, "a positive whole number")?.max(1),
            None => 120,
        };
        let credit_day_offset = match var(src, "CREDIT_DAY_BOUNDARY") {
            Some(v) => crate::domain::credits::parse_offset(&v)
                .ok_or_else(|| err("CREDIT_DAY_BOUNDARY", format!("expected UTC or a fixed offset such as +02:00 or -05:00, got `{v}`")))?,
            None => chrono::FixedOffset::east_opt(0).expect("UTC"),
        };
        let database_url = var(src, "DATABASE_URL").map(Secret::new);
        if let Some(db) = &database_url {
            if !(db.expose().starts_with("postgres://") || db.expose().starts_with("postgresql://")) {
                return Err(err("DATABASE_URL", "expected a PostgreSQL URL such as postgres://user:password@host:5432/tally"));
            }
        }
        let redis_url = var(src, "REDIS_URL").map(Secret::new);
        if let Some(r) = &redis_url {
            if !r.expose().starts_with("redis://") || redis::Client::open(r.expose()).is_err() {
                return Err(err("REDIS_URL", "expected a Redis URL such as redis://127.0.0.1:6379/0 (or leave it unset)"));
            }
        }
        let embedded_pg_dir = var(src, "TALLY_PG_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".data/pg"));
        let embedded_pg_port = match var(src, "TALLY_PG_PORT") {
            Some(v) => parse_int("TALLY_PG_PORT", &v, "a TCP port number")?,
            None => 55439,
        };

        Ok(Config {
            database_url,
            embedded_pg_dir,
            embedded_pg_port,
            app_url,
            bind_addr,
            session_secret,
            polar: PolarConfig { mode, api_url, access_token, webhook_secret, webhook_path, products, standin, anonymize_on_delete },
            enterprise_demo_url,
            free_credits,
            login_max_failures,
            api_rate_limit_per_minute,
            credit_day_offset,
            polar_mode_defaulted: polar_mode_raw.is_none(),
            redis_url,
        })
    }

    /// Cookies get `Secure` when the app is served over https.
    pub fn secure_cookies(&self) -> bool {
        self.app_url.scheme() == "https"
    }

    /// Warnings worth shouting at start-up. Local mode chosen by default in a release build, or
    /// on a public URL, means real customers could be "paying" a stand-in.
    pub fn startup_warnings(&self, release_build: bool) -> Vec<String> {
        let mut w = Vec::new();
        if self.polar.mode == PolarMode::Local {
            if release_build && self.polar_mode_defaulted {
                w.push("POLAR_MODE is not set, so this release build runs against the LOCAL POLAR STAND-IN. No real payment is taken. Set POLAR_MODE=sandbox or POLAR_MODE=production for a real deployment.".to_string());
            }
            if !is_loopback_host(&self.app_url) {
                w.push(format!("APP_URL is {} but POLAR_MODE is local: customers would reach the stand-in checkout, which takes no money.", self.app_url));
            }
            // A real Polar token (prefixed) in local mode is likely a mix-up.
            if self.polar.access_token.as_ref().is_some_and(|t| t.expose().starts_with("polar_oat_") || t.expose().starts_with("polar_pat_")) {
                w.push("POLAR_ACCESS_TOKEN is set but POLAR_MODE is local: it only unlocks the stand-in, never Polar.".to_string());
            }
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_source(&src(pairs), || "generated-local-secret-generated-local-secret".into())
    }

    const PRO: &str = "7c1d6c1e-0d0b-4a1e-9c0e-4c7b9d1a2b01";
    const BUSINESS: &str = "7c1d6c1e-0d0b-4a1e-9c0e-4c7b9d1a2b02";

    fn sandbox() -> Vec<(&'static str, &'static str)> {
        vec![
            ("POLAR_MODE", "sandbox"),
            ("APP_URL", "https://billing.example.com"),
            ("SESSION_SECRET", "0123456789abcdef0123456789abcdef"),
            ("POLAR_ACCESS_TOKEN", "polar_oat_abc"),
            ("POLAR_WEBHOOK_SECRET", "whsec_abc"),
            ("POLAR_PRODUCT_PRO", PRO),
            ("POLAR_PRODUCT_BUSINESS", BUSINESS),
        ]
    }

    #[test]
    fn empty_environment_runs_locally_on_embedded_defaults() {
        let c = load(&[]).unwrap();
        assert_eq!(c.polar.mode, PolarMode::Local);
        assert!(c.polar_mode_defaulted);
        assert!(c.database_url.is_none());
        assert_eq!(c.app_url.as_str(), "http://127.0.0.1:3000/");
        assert_eq!(c.polar.api_url.as_str(), "http://127.0.0.1:3000/polar");
        assert_eq!(c.free_credits, 1000);
        assert!(!c.secure_cookies());
        assert_eq!(c.session_secret.expose(), "generated-local-secret-generated-local-secret");
        // The stand-in's token, webhook secret and catalogue are there without configuration.
        let standin = c.polar.standin.as_ref().unwrap();
        assert!(c.polar.effective_token().unwrap().expose().starts_with("polar_oat_local_"));
        assert!(c.polar.webhook_secret.as_ref().unwrap().expose().starts_with("whsec_"));
        assert_eq!(standin.payment_delay_ms, (1000, 2000));
        assert!(standin.webhook_standard);
        assert_eq!(c.polar.products.pro.as_deref(), Some(crate::server::standin::product_id("pro").as_str()));
        assert!(load(&[("POLAR_STANDIN_PAYMENT_DELAY_MS", "2000-1000")]).is_err());
        assert_eq!(load(&[("POLAR_STANDIN_PAYMENT_DELAY_MS", "10")]).unwrap().polar.standin.unwrap().payment_delay_ms, (10, 10));
        assert_eq!(load(&[("POLAR_STANDIN_WEBHOOK_SCHEME", "v2")]).unwrap_err().var, "POLAR_STANDIN_WEBHOOK_SCHEME");
        let extra = load(&[("POLAR_STANDIN_WEBHOOK_ENDPOINTS", "http://127.0.0.1:9000/hook|whsec_abc|legacy, https://x.example/h|s2|standard")]).unwrap();
        let extra = &extra.polar.standin.as_ref().unwrap().extra_endpoints;
        assert_eq!(extra.len(), 2);
        assert!(!extra[0].2 && extra[1].2);
        assert_eq!(load(&[("POLAR_STANDIN_WEBHOOK_ENDPOINTS", "http://x|s")]).unwrap_err().var, "POLAR_STANDIN_WEBHOOK_ENDPOINTS");
        // Sandbox and production have no stand-in.
        assert!(load(&sandbox()).unwrap().polar.standin.is_none());
    }

    #[test]
    fn unknown_polar_mode_names_the_variable_and_the_choices() {
        let e = load(&[("POLAR_MODE", "prod")]).unwrap_err();
        assert_eq!(e.var, "POLAR_MODE");
        assert!(e.to_string().contains("local, sandbox, production"), "{e}");
    }

    #[test]
    fn sandbox_mode_requires_token_secret_and_products() {
        assert!(load(&sandbox()).is_ok());
        for missing in ["APP_URL", "SESSION_SECRET", "POLAR_ACCESS_TOKEN", "POLAR_WEBHOOK_SECRET", "POLAR_PRODUCT_PRO", "POLAR_PRODUCT_BUSINESS"] {
            let pairs: Vec<_> = sandbox().into_iter().filter(|(k, _)| *k != missing).collect();
            let e = load(&pairs).unwrap_err();
            assert_eq!(e.var, missing, "{e}");
        }
        let c = load(&sandbox()).unwrap();
        assert_eq!(c.polar.api_url.as_str(), "https://sandbox-api.polar.sh/");
        assert!(c.secure_cookies());
    }

    #[test]
    fn production_refuses_a_sandbox_looking_setup() {
        let mut p = sandbox();
        p[0] = ("POLAR_MODE", "production");
        assert_eq!(load(&p).unwrap().polar.api_url.as_str(), "https://api.polar.sh/");

        let mut with_sandbox_api = p.clone();
        with_sandbox_api.push(("POLAR_API_URL", "https://sandbox-api.polar.sh"));
        assert_eq!(load(&with_sandbox_api).unwrap_err().var, "POLAR_API_URL");

        let mut local_url = p.clone();
        local_url[1] = ("APP_URL", "http://localhost:3000");
        assert_eq!(load(&local_url).unwrap_err().var, "APP_URL");
    }

    #[test]
    fn malformed_values_are_named() {
        assert_eq!(load(&[("APP_URL", "not a url")]).unwrap_err().var, "APP_URL");
        assert_eq!(load(&[("APP_URL", "ftp://x.example")]).unwrap_err().var, "APP_URL");
        assert_eq!(load(&[("SESSION_SECRET", "short")]).unwrap_err().var, "SESSION_SECRET");
        assert_eq!(load(&[("FREE_CREDITS", "lots")]).unwrap_err().var, "FREE_CREDITS");
        assert_eq!(load(&[("FREE_CREDITS", "-1")]).unwrap_err().var, "FREE_CREDITS");
        assert_eq!(load(&[("POLAR_PRODUCT_PRO", "pro")]).unwrap_err().var, "POLAR_PRODUCT_PRO");
        assert_eq!(load(&[("DATABASE_URL", "mysql://x")]).unwrap_err().var, "DATABASE_URL");
        assert_eq!(load(&[("REDIS_URL", "memcached://x")]).unwrap_err().var, "REDIS_URL");
        assert!(load(&[("REDIS_URL", "redis://127.0.0.1:6379/0")]).unwrap().redis_url.is_some());
        assert_eq!(load(&[("LEPTOS_SITE_ADDR", "3000")]).unwrap_err().var, "LEPTOS_SITE_ADDR");
        assert_eq!(load(&[("ENTERPRISE_DEMO_URL", "calendar")]).unwrap_err().var, "ENTERPRISE_DEMO_URL");
        assert_eq!(load(&[("CREDIT_DAY_BOUNDARY", "Europe/Paris")]).unwrap_err().var, "CREDIT_DAY_BOUNDARY");
        assert_eq!(load(&[("API_RATE_LIMIT_PER_MINUTE", "fast")]).unwrap_err().var, "API_RATE_LIMIT_PER_MINUTE");
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let c = load(&sandbox()).unwrap();
        let dump = format!("{c:?}");
        assert!(!dump.contains("polar_oat_abc"));
        assert!(!dump.contains("whsec_abc"));
        assert!(!dump.contains("0123456789abcdef0123456789abcdef"));
        assert!(dump.contains("[redacted]"));
    }

    #[test]
    fn local_mode_by_default_in_a_release_build_is_loud() {
        let c = load(&[]).unwrap();
        assert_eq!(c.startup_warnings(true).len(), 1);
        assert!(c.startup_warnings(true)[0].contains("LOCAL POLAR STAND-IN"));
        assert!(c.startup_warnings(false).is_empty());
        let explicit = load(&[("POLAR_MODE", "local")]).unwrap();
        assert!(explicit.startup_warnings(true).is_empty());
        let public = load(&[("APP_URL", "https://billing.example.com")]).unwrap();
        assert!(public.startup_warnings(false)[0].contains("stand-in"));
    }
}
