//! Configuration parsing: defaults, required values, and the refusals that keep a deployment safe.

use super::*;
use std::collections::HashMap;

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
        ("DATABASE_URL", "postgres://tally:pw@db.internal:5432/tally"),
        ("SMTP_URL", "smtp://mailer:pw@smtp.example.com:587"),
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
    use crate::domain::plans::{Interval, PlanId};
    let pro = crate::server::catalog::standin_product_id("pro");
    assert_eq!(c.polar.catalog.plan_product(PlanId::Pro, Interval::Month), Some(pro.as_str()));
    assert!(load(&[("POLAR_STANDIN_PAYMENT_DELAY_MS", "2000-1000")]).is_err());
    assert_eq!(
        load(&[("POLAR_STANDIN_PAYMENT_DELAY_MS", "10")]).unwrap().polar.standin.unwrap().payment_delay_ms,
        (10, 10)
    );
    assert_eq!(load(&[("POLAR_STANDIN_WEBHOOK_SCHEME", "v2")]).unwrap_err().var, "POLAR_STANDIN_WEBHOOK_SCHEME");
    let extra = load(&[(
        "POLAR_STANDIN_WEBHOOK_ENDPOINTS",
        "http://127.0.0.1:9000/hook|whsec_abc|legacy, https://x.example/h|s2|standard",
    )])
    .unwrap();
    let extra = &extra.polar.standin.as_ref().unwrap().extra_endpoints;
    assert_eq!(extra.len(), 2);
    assert!(!extra[0].2 && extra[1].2);
    assert_eq!(
        load(&[("POLAR_STANDIN_WEBHOOK_ENDPOINTS", "http://x|s")]).unwrap_err().var,
        "POLAR_STANDIN_WEBHOOK_ENDPOINTS"
    );
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
    for missing in [
        "APP_URL",
        "SESSION_SECRET",
        "POLAR_ACCESS_TOKEN",
        "POLAR_WEBHOOK_SECRET",
        "POLAR_PRODUCT_PRO",
        "POLAR_PRODUCT_BUSINESS",
        "DATABASE_URL",
        "SMTP_URL",
    ] {
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
fn a_release_build_refuses_to_start_without_an_explicit_polar_mode() {
    let c = load(&[]).unwrap();
    assert_eq!(c.check_release(true).unwrap_err().var, "POLAR_MODE");
    assert!(c.check_release(false).is_ok(), "debug builds (tests, development) may default");
    assert!(load(&[("POLAR_MODE", "local")]).unwrap().check_release(true).is_ok());
}

#[test]
fn local_mode_refuses_a_public_url_unless_it_is_declared_a_demo() {
    assert_eq!(load(&[("APP_URL", "https://billing.example.com")]).unwrap_err().var, "APP_URL");
    for loopback in ["http://localhost:3000", "http://127.0.0.2:8080", "http://[::1]:3000"] {
        assert!(load(&[("APP_URL", loopback)]).is_ok(), "{loopback}");
    }
    let demo = load(&[("APP_URL", "https://demo.example.com"), ("LOCAL_ALLOW_PUBLIC_URL", "true")]).unwrap();
    assert!(demo.startup_warnings()[0].contains("stand-in"), "allowed, and said so loudly");
}

#[test]
fn sandbox_and_production_never_run_on_the_embedded_cluster() {
    let pairs: Vec<_> = sandbox().into_iter().filter(|(k, _)| *k != "DATABASE_URL").collect();
    let e = load(&pairs).unwrap_err();
    assert_eq!(e.var, "DATABASE_URL");
    assert!(e.problem.contains("embedded"), "{e}");
}

#[test]
fn the_stand_in_controls_token_is_derived_or_configured() {
    let c = load(&[]).unwrap();
    let derived = c.polar.standin.as_ref().unwrap().controls_token.expose().to_string();
    assert!(derived.len() >= 32);
    assert_ne!(&derived, c.polar.effective_token().unwrap().expose(), "not the API token");
    let set = load(&[("POLAR_STANDIN_CONTROLS_TOKEN", "x".repeat(40).as_str())]).unwrap();
    assert_eq!(set.polar.standin.unwrap().controls_token.expose(), "x".repeat(40));
    assert_eq!(load(&[("POLAR_STANDIN_CONTROLS_TOKEN", "short")]).unwrap_err().var, "POLAR_STANDIN_CONTROLS_TOKEN");
}

#[test]
fn proxies_and_origins_are_parsed() {
    let c = load(&[("TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1, ::1")]).unwrap();
    assert_eq!(c.trusted_proxies.len(), 3);
    assert_eq!(load(&[("TRUSTED_PROXIES", "10.0.0.0/33")]).unwrap_err().var, "TRUSTED_PROXIES");
    assert_eq!(load(&[("TRUSTED_PROXY_HEADER", "x-real-ip")]).unwrap_err().var, "TRUSTED_PROXY_HEADER");
    assert_eq!(c.app_origin(), "http://127.0.0.1:3000");
    assert_eq!(load(&sandbox()).unwrap().app_origin(), "https://billing.example.com");
}

#[test]
fn overage_needs_its_meter_and_is_bounded_by_a_default_cap() {
    // Local mode bills the stand-in's overage meter; $100 is the default cap.
    let c = load(&[]).unwrap();
    assert_eq!(c.polar.overage_meter_id, Some(crate::server::catalog::standin_overage_meter_id()));
    assert_eq!(c.polar.overage_default_cap_cents, 10_000);
    // Sandbox and production offer overage only once the meter is named.
    let c = load(&sandbox()).unwrap();
    assert_eq!(c.polar.overage_meter_id, None);
    let meter = "5d0f7c2a-1b3e-4c5d-8e9f-0a1b2c3d4e5f";
    let mut with_meter = sandbox();
    with_meter.extend([("POLAR_OVERAGE_METER_ID", meter), ("OVERAGE_DEFAULT_CAP_CENTS", "2500")]);
    let c = load(&with_meter).unwrap();
    assert_eq!((c.polar.overage_meter_id.as_deref(), c.polar.overage_default_cap_cents), (Some(meter), 2500));
    assert_eq!(load(&[("POLAR_OVERAGE_METER_ID", "credits.overage")]).unwrap_err().var, "POLAR_OVERAGE_METER_ID");
    assert_eq!(load(&[("OVERAGE_DEFAULT_CAP_CENTS", "-1")]).unwrap_err().var, "OVERAGE_DEFAULT_CAP_CENTS");
    assert_eq!(load(&[("OVERAGE_DEFAULT_CAP_CENTS", "$100")]).unwrap_err().var, "OVERAGE_DEFAULT_CAP_CENTS");
}

#[test]
fn polar_budgets_reconcile_and_alert_mail_have_safe_defaults() {
    let c = load(&[]).unwrap();
    assert_eq!((c.polar_calls_per_user_per_minute, c.polar_calls_per_unverified_user_per_minute), (60, 10));
    assert_eq!(c.polar_page_requests_per_minute, 400);
    assert_eq!((c.reconcile_every_secs, c.reconcile_accounts_per_minute), (600, 10));
    assert_eq!(c.alert_mails_per_day, 10);
    assert_eq!((c.webhook_workers, c.webhook_batch), (2, 32));
    assert_eq!(c.spend_batch, 128, "group commit on");
    assert_eq!(load(&[("SPEND_BATCH", "0")]).unwrap().spend_batch, 0, "and off");
    assert_eq!(load(&[("SPEND_BATCH", "-1")]).unwrap_err().var, "SPEND_BATCH");
    for var in ["WEBHOOK_WORKERS", "WEBHOOK_BATCH"] {
        assert_eq!(load(&[(var, "0")]).unwrap_err().var, var, "at least one");
    }
    let c = load(&[("RECONCILE_ACCOUNTS_PER_MINUTE", "0"), ("ALERT_MAILS_PER_DAY", "0")]).unwrap();
    assert_eq!((c.reconcile_accounts_per_minute, c.alert_mails_per_day), (0, 0), "both can be turned off");
    for var in ["POLAR_PAGE_REQUESTS_PER_MINUTE", "POLAR_CALLS_PER_UNVERIFIED_USER_PER_MINUTE", "RECONCILE_EVERY_SECS"]
    {
        assert_eq!(load(&[(var, "0")]).unwrap_err().var, var);
        assert_eq!(load(&[(var, "lots")]).unwrap_err().var, var);
    }
}
