//! Tally deployed the way docs/deploying.md says: behind a real reverse proxy (Debian's nginx, which
//! rewrites `Host` to the upstream's and appends the client to `X-Forwarded-For`), on the
//! proxy's URL as `APP_URL`, with the proxy in `TRUSTED_PROXIES`. Every request below, the
//! stand-in's API calls and its webhook deliveries included, goes through nginx.

use crate::helpers::*;
use serde_json::json;
use std::net::IpAddr;

/// A client whose connections come from `ip` (any 127.x address is this machine's loopback).
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_nginx_every_form_the_metered_api_and_webhooks_work() {
    let (app, _nginx) = spawn_app_behind_nginx(&[]).await;
    // Sign-up and confirmation: form posts whose Origin is APP_URL while nginx rewrote Host.
    let user = app.sign_up("proxied@example.com").await;
    assert!(app.page("/billing").await.contains(r#"<span data-testid="credits-total">1,000</span>"#));
    // Sign out, sign in.
    assert_eq!(post_form(&app, "/api/logout", &[]).await.status(), 302);
    let res =
        post_form(&app, "/api/login", &[("email", "proxied@example.com"), ("password", "correct horse battery")]).await;
    assert_eq!(res.status(), 302, "sign-in through the proxy");
    // Billing details, without JavaScript.
    let res = post_form(
        &app,
        "/api/billing/details",
        &[("company", "Proxied GmbH"), ("country", "DE"), ("tax_id", "DE123456789")],
    )
    .await;
    assert!(res.status().is_redirection(), "{}", res.status());
    assert!(app.page("/settings/billing").await.contains("Proxied GmbH"));
    // An API key (JavaScript off: shown once on the page it redirects to) and a metered call.
    assert_eq!(post_form(&app, "/api/keys/create", &[("name", "proxy")]).await.status(), 302);
    let settings = app.page("/settings/billing").await;
    let key = settings
        .split("tly_")
        .nth(1)
        .map(|rest| format!("tly_{}", rest.split(['<', '"', ' ']).next().unwrap()))
        .expect("the new key is shown");
    let res = reqwest::Client::new()
        .post(format!("{}/api/v1/text/stats", app.address))
        .bearer_auth(&key)
        .json(&json!({ "text": "through nginx" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-credits-remaining"], "999");
    // A pack bought on the stand-in: its webhooks reach the app through nginx.
    app.buy("pack_50").await;
    let credits: i64 = sqlx::query_scalar("SELECT balance FROM credit_accounts WHERE user_id = $1")
        .bind(user)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(credits, 1049);
    // A plan change preview and the portal, as server functions.
    assert!(app.go("/api/billing/portal", &[]).await.contains("/portal?customer_session_token="));
    // Cross-site posts are still refused, whatever Host says.
    let res = app
        .client
        .post(format!("{}/api/logout", app.address))
        .header("origin", "https://evil.example")
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_limits_key_on_the_real_client_behind_nginx_and_a_forged_header_changes_nothing() {
    // LOGIN_MAX_FAILURES=3: an address may fail 12 times in 15 minutes.
    let (app, _nginx) = spawn_app_behind_nginx(&[]).await;
    app.sign_up("victim@example.com").await;
    let attacker = client_from("127.0.0.2");
    let mut limited = false;
    for i in 0..20 {
        let res = attacker
            .post(format!("{}/api/login", app.address))
            .header("origin", &app.address)
            // Each guess claims to come from somewhere else: it must not matter.
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .form(&[("email", format!("guess{i}@example.com").as_str()), ("password", "wrong password!")])
            .send()
            .await
            .unwrap();
        if res.status() == 429 {
            limited = true;
            assert!(i >= 12, "the address had 12 failures to spend, was limited after {i}");
            break;
        }
        assert_eq!(res.status(), 401);
    }
    assert!(limited, "the attacker's own address is limited despite the forged headers");
    // Someone else behind the same proxy still signs in: limits are not the proxy's.
    let other = client_from("127.0.0.3");
    let res = other
        .post(format!("{}/api/login", app.address))
        .header("origin", &app.address)
        .form(&[("email", "victim@example.com"), ("password", "correct horse battery")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "another client is not locked out");
    let recorded: Vec<Option<String>> =
        sqlx::query_scalar("SELECT DISTINCT client_ip FROM login_failures").fetch_all(&app.pool).await.unwrap();
    assert_eq!(recorded, vec![Some("127.0.0.2".to_string())], "the failures are keyed on the real client");
}

#[tokio::test]
async fn without_trusted_proxies_forwarded_headers_are_ignored() {
    let app = spawn_app().await;
    let client = client_from("127.0.0.4");
    for i in 0..3 {
        client
            .post(format!("{}/api/login", app.address))
            .header("origin", &app.address)
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .form(&[("email", "x@example.com"), ("password", "wrong password!")])
            .send()
            .await
            .unwrap();
    }
    let recorded: Vec<Option<String>> =
        sqlx::query_scalar("SELECT DISTINCT client_ip FROM login_failures").fetch_all(&app.pool).await.unwrap();
    assert_eq!(recorded, vec![Some("127.0.0.4".to_string())]);
}
