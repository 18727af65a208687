//! Which Polar Tally talks to, with which token and products, and how the local stand-in
//! behaves (`POLAR_*`, `POLAR_STANDIN_*`).

use super::source::{
    derive_secret, err, int_at_least, is_loopback_host, is_uuid, parse_bool, parse_int, parse_url, var, ConfigError,
    Secret, Source,
};
use std::path::PathBuf;
use url::Url;

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
    /// Local mode only: how the built-in stand-in behaves.
    pub standin: Option<StandinSettings>,
    /// Whether deleting an account also anonymizes the Polar customer
    /// (`POLAR_DELETE_ANONYMIZE`, default true).
    pub anonymize_on_delete: bool,
    /// What each product is (`POLAR_PRODUCT_*`, or the stand-in's own ids in local mode).
    pub catalog: crate::server::catalog::Catalog,
    /// The meter of Tally's `credits.overage` events (`POLAR_OVERAGE_METER_ID`; the stand-in's
    /// in local mode). Only a metered price on this meter bills overage; without it no plan
    /// offers overage.
    pub overage_meter_id: Option<String>,
    /// The most one period's overage may cost when the plan's metered price has no cap and
    /// the customer set none (`OVERAGE_DEFAULT_CAP_CENTS`, default 10000: $100).
    pub overage_default_cap_cents: i64,
}

/// `OVERAGE_DEFAULT_CAP_CENTS` when unset: $100.
pub const DEFAULT_OVERAGE_CAP_CENTS: i64 = 10_000;

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
    /// The bearer token the stand-in's test controls (`/polar/_standin/…`) and the dev mailbox
    /// ask for: `POLAR_STANDIN_CONTROLS_TOKEN` when set, else derived from the session secret.
    pub controls_token: Secret,
    /// Its API requests per minute, like Polar's quota (`POLAR_STANDIN_RATE_LIMIT`, 500; 0 for
    /// none).
    pub rate_limit_per_minute: u32,
    /// More webhook endpoints besides this app's receiver (`POLAR_STANDIN_WEBHOOK_ENDPOINTS`:
    /// comma-separated `url|secret|standard` or `url|secret|legacy`).
    pub extra_endpoints: Vec<(String, Secret, bool)>,
}

fn standin_settings(
    src: &dyn Source,
    session_secret: &Secret,
    configured_token: Option<&Secret>,
) -> Result<StandinSettings, ConfigError> {
    let payment_delay_ms = match var(src, "POLAR_STANDIN_PAYMENT_DELAY_MS") {
        None => (1000, 2000),
        Some(v) => {
            let bad = || {
                err(
                    "POLAR_STANDIN_PAYMENT_DELAY_MS",
                    format!("expected milliseconds such as 1500 or a range such as 1000-2000, got `{v}`"),
                )
            };
            match v.split_once('-') {
                Some((a, b)) => {
                    let (a, b): (u64, u64) =
                        (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
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
        Some(other) => {
            return Err(err("POLAR_STANDIN_WEBHOOK_SCHEME", format!("expected standard or legacy, got `{other}`")))
        }
    };
    let state_file = match var(src, "POLAR_STANDIN_STATE_FILE").as_deref() {
        Some("off") => None,
        Some(p) => Some(PathBuf::from(p)),
        None => Some(PathBuf::from(".data/polar-standin.json")),
    };
    let mut extra_endpoints = vec![];
    for item in var(src, "POLAR_STANDIN_WEBHOOK_ENDPOINTS")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let bad = || {
            err(
                "POLAR_STANDIN_WEBHOOK_ENDPOINTS",
                "expected comma-separated url|secret|standard or url|secret|legacy entries",
            )
        };
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
    let controls_token = match var(src, "POLAR_STANDIN_CONTROLS_TOKEN") {
        Some(t) if t.len() < 32 => {
            return Err(err("POLAR_STANDIN_CONTROLS_TOKEN", "expected at least 32 characters of random text"))
        }
        Some(t) => Secret::new(t),
        None => Secret::new(derive_secret(session_secret, "polar-standin-controls", false).replacen(
            "polar_oat_local_",
            "standin_controls_",
            1,
        )),
    };
    Ok(StandinSettings {
        extra_endpoints,
        // A configured token is the one the stand-in accepts (tests that call it directly set one).
        access_token: configured_token
            .cloned()
            .unwrap_or_else(|| Secret::new(derive_secret(session_secret, "polar-standin-token", false))),
        payment_delay_ms,
        invoice_delay_ms: ms("POLAR_STANDIN_INVOICE_DELAY_MS", 1500)?,
        state_lag_ms: ms("POLAR_STANDIN_STATE_LAG_MS", 0)?,
        trial_days,
        webhook_standard,
        retry_base_ms: ms("POLAR_STANDIN_RETRY_BASE_MS", 2000)?,
        state_file,
        controls_token,
        rate_limit_per_minute: int_at_least(
            src,
            "POLAR_STANDIN_RATE_LIMIT",
            0u32,
            500,
            "a whole number of requests a minute",
        )?,
    })
}

/// Reads the Polar settings for `mode`, given the app's public URL and session secret.
pub(super) fn read(
    src: &dyn Source,
    mode: PolarMode,
    app_url: &Url,
    session_secret: &Secret,
) -> Result<PolarConfig, ConfigError> {
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
            return Err(err(
                "POLAR_ACCESS_TOKEN",
                format!("required in {m} mode: an Organization Access Token (polar_oat_…) from the {m} dashboard"),
            ));
        }
        if webhook_secret.is_none() {
            return Err(err(
                "POLAR_WEBHOOK_SECRET",
                format!("required in {m} mode: the secret of the webhook endpoint you registered in the {m} dashboard"),
            ));
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
        if app_url.scheme() != "https" || is_loopback_host(app_url) {
            return Err(err(
                "APP_URL",
                "POLAR_MODE=production needs the public https URL customers use, not a local or http address",
            ));
        }
        if access_token.as_ref().is_some_and(|t| t.expose().to_ascii_lowercase().contains("sandbox")) {
            return Err(err("POLAR_ACCESS_TOKEN", "POLAR_MODE=production but the token looks like a sandbox token"));
        }
    }
    if mode == PolarMode::Sandbox && var(src, "POLAR_API_URL").is_none() && api_url.host_str() == Some("api.polar.sh") {
        return Err(err("POLAR_API_URL", "POLAR_MODE=sandbox must not talk to the production API"));
    }

    let (webhook_secret, standin) = if mode == PolarMode::Local {
        let settings = standin_settings(src, session_secret, access_token.as_ref())?;
        // The stand-in signs with this secret; a configured one wins.
        let secret =
            webhook_secret.or_else(|| Some(Secret::new(derive_secret(session_secret, "polar-standin-webhook", true))));
        (secret, Some(settings))
    } else {
        (webhook_secret, None)
    };
    let mut products = products;
    if mode == PolarMode::Local {
        // The stand-in's catalogue has stable ids; configured ones (if any) still win.
        let id = crate::server::catalog::standin_product_id;
        products.pro.get_or_insert_with(|| id("pro"));
        products.business.get_or_insert_with(|| id("business"));
        products.pro_yearly.get_or_insert_with(|| id("pro_yearly"));
        products.business_yearly.get_or_insert_with(|| id("business_yearly"));
        products.pack_50.get_or_insert_with(|| id("pack_50"));
        products.pack_100.get_or_insert_with(|| id("pack_100"));
    }

    let webhook_path = var(src, "POLAR_WEBHOOK_PATH").unwrap_or_else(|| "/api/webhooks/polar".into());
    if !webhook_path.starts_with('/') || webhook_path.contains(['?', '#', ' ', '{']) {
        return Err(err(
            "POLAR_WEBHOOK_PATH",
            format!("expected a URL path such as /api/webhooks/polar, got `{webhook_path}`"),
        ));
    }
    let anonymize_on_delete = parse_bool(src, "POLAR_DELETE_ANONYMIZE", true)?;
    let catalog = catalog_of(&products);
    let overage_meter_id = match var(src, "POLAR_OVERAGE_METER_ID") {
        Some(v) if !is_uuid(&v) => {
            return Err(err("POLAR_OVERAGE_METER_ID", format!("expected a Polar meter id (a UUID), got `{v}`")))
        }
        Some(v) => Some(v),
        None if mode == PolarMode::Local => Some(crate::server::catalog::standin_overage_meter_id()),
        None => None,
    };
    let overage_default_cap_cents =
        int_at_least(src, "OVERAGE_DEFAULT_CAP_CENTS", 0i64, DEFAULT_OVERAGE_CAP_CENTS, "a whole number of cents")?;
    Ok(PolarConfig {
        mode,
        api_url,
        access_token,
        webhook_secret,
        webhook_path,
        standin,
        anonymize_on_delete,
        catalog,
        overage_meter_id,
        overage_default_cap_cents,
    })
}

/// The catalogue of the configured products.
pub fn catalog_of(products: &PlanMap) -> crate::server::catalog::Catalog {
    use crate::domain::plans::{Interval, Item, PlanId};
    let plan = |plan, interval| Item::Plan { plan, interval };
    crate::server::catalog::Catalog::new([
        (plan(PlanId::Pro, Interval::Month), products.pro.clone()),
        (plan(PlanId::Pro, Interval::Year), products.pro_yearly.clone()),
        (plan(PlanId::Business, Interval::Month), products.business.clone()),
        (plan(PlanId::Business, Interval::Year), products.business_yearly.clone()),
        (Item::Pack { credits: 50 }, products.pack_50.clone()),
        (Item::Pack { credits: 100 }, products.pack_100.clone()),
    ])
}
