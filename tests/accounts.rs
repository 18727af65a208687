//! Accounts against a real PostgreSQL and the real HTTP stack.
#![cfg(feature = "ssr")]

mod common;

use common::*;
use tally::error::AppError;

const PASSWORD: &str = "correct horse battery";

#[tokio::test]
async fn sign_up_sets_a_safe_session_cookie_and_redirects_to_billing() {
    let app = spawn_app().await;
    let res = post_form(&app, "/api/signup", &[("email", "Ann@Example.com"), ("password", PASSWORD)]).await;
    assert_eq!(res.status(), 302);
    assert_eq!(res.headers()["location"], "/billing");
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("tally_session="), "{cookie}");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attr), "missing {attr}: {cookie}");
    }
    assert!(!cookie.contains("Secure"), "http APP_URL must not set Secure: {cookie}");

    let me: Option<serde_json::Value> = call(&app, "/api/me", &[]).await.json().await.unwrap();
    assert_eq!(me.unwrap()["email"], "Ann@Example.com");

    // The cookie carries a token; the database stores only its keyed hash.
    let token = cookie.trim_start_matches("tally_session=").split(';').next().unwrap().to_string();
    let stored: Vec<u8> = sqlx::query_scalar("SELECT token_hash FROM sessions").fetch_one(&app.pool).await.unwrap();
    assert_eq!(stored.len(), 32);
    assert_ne!(stored, token.as_bytes());
}

#[tokio::test]
async fn cookies_are_secure_when_the_app_is_served_over_https() {
    let app = spawn_app_with(&[("APP_URL", "https://billing.example.com")]).await;
    let res = post_form(&app, "/api/signup", &[("email", "sec@example.com"), ("password", PASSWORD)]).await;
    assert!(res.headers()["set-cookie"].to_str().unwrap().contains("; Secure"));
}

#[tokio::test]
async fn sign_up_redirects_to_a_safe_next_path_only() {
    let app = spawn_app().await;
    let res = post_form(&app, "/api/signup", &[("email", "n1@example.com"), ("password", PASSWORD), ("next", "/pricing")]).await;
    assert_eq!(res.headers()["location"], "/pricing");
    let app2 = spawn_app().await;
    let res = post_form(&app2, "/api/signup", &[("email", "n2@example.com"), ("password", PASSWORD), ("next", "//evil.example/x")]).await;
    assert_eq!(res.headers()["location"], "/billing");
}

#[tokio::test]
async fn emails_are_unique_whatever_their_case() {
    let app = spawn_app().await;
    assert!(call(&app, "/api/signup", &[("email", "bo@example.com"), ("password", PASSWORD)]).await.status().is_success());
    let res = call(&app, "/api/signup", &[("email", "  BO@Example.COM "), ("password", PASSWORD)]).await;
    assert_eq!(res.status(), 409, "a conflict is a client error, with its JSON body");
    match app_error(res).await {
        AppError::Conflict { field, message } => {
            assert_eq!(field.as_deref(), Some("email"));
            assert!(message.contains("already exists"));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(user_count(&app).await, 1);
}

#[tokio::test]
async fn concurrent_sign_ups_with_one_email_create_one_account() {
    let app = spawn_app().await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let client = reqwest::Client::new();
        let url = format!("{}/api/signup", app.address);
        let email = if i % 2 == 0 { "race@example.com" } else { "RACE@example.com" };
        tasks.push(tokio::spawn(async move { client.post(url).form(&[("email", email), ("password", PASSWORD)]).send().await.unwrap().status() }));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap().is_success() {
            ok += 1;
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(user_count(&app).await, 1);
}

#[tokio::test]
async fn invalid_sign_up_input_names_the_field_and_creates_nothing() {
    let app = spawn_app().await;
    let e = app_error(call(&app, "/api/signup", &[("email", "not-an-email"), ("password", PASSWORD)]).await).await;
    assert_eq!(e.field(), Some("email"));
    let e = app_error(call(&app, "/api/signup", &[("email", "ok@example.com"), ("password", "short")]).await).await;
    assert_eq!(e.field(), Some("password"));
    assert_eq!(user_count(&app).await, 0);
}

#[tokio::test]
async fn a_failed_form_post_returns_to_the_form_with_the_error_in_the_url() {
    // Without JavaScript the browser follows this redirect and the page shows the error.
    let app = spawn_app().await;
    let res = post_form(&app, "/api/signup", &[("email", "bad"), ("password", PASSWORD)]).await;
    assert_eq!(res.status(), 302);
    let location = res.headers()["location"].to_str().unwrap();
    assert!(location.contains("/signup?") && location.contains("__err="), "{location}");
    let page = app.client.get(location).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Enter an email address like name@example.com."), "error not rendered on the page");
}

#[tokio::test]
async fn unknown_email_and_wrong_password_get_the_same_answer() {
    let app = spawn_app().await;
    call(&app, "/api/signup", &[("email", "cy@example.com"), ("password", PASSWORD)]).await;
    let wrong = app_error(call(&app, "/api/login", &[("email", "cy@example.com"), ("password", "wrong password!")]).await).await;
    let unknown = app_error(call(&app, "/api/login", &[("email", "nobody@example.com"), ("password", PASSWORD)]).await).await;
    assert_eq!(wrong, AppError::InvalidCredentials);
    assert_eq!(unknown, AppError::InvalidCredentials);
}

#[tokio::test]
async fn sign_in_rotates_the_session_and_sign_out_ends_it() {
    let app = spawn_app().await;
    let res = post_form(&app, "/api/signup", &[("email", "di@example.com"), ("password", PASSWORD)]).await;
    let first = res.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();

    let res = post_form(&app, "/api/login", &[("email", "DI@example.com"), ("password", PASSWORD)]).await;
    assert_eq!(res.status(), 302);
    let second = res.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    assert_ne!(first, second, "sign-in must issue a new session id");

    // The old token no longer opens a session.
    let stale = reqwest::Client::new();
    let me: Option<serde_json::Value> =
        stale.post(format!("{}/api/me", app.address)).header("cookie", &first).send().await.unwrap().json().await.unwrap();
    assert!(me.is_none());
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions").fetch_one(&app.pool).await.unwrap();
    assert_eq!(sessions, 1);

    let res = post_form(&app, "/api/logout", &[]).await;
    assert_eq!(res.status(), 302);
    assert_eq!(res.headers()["location"], "/");
    assert!(res.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions").fetch_one(&app.pool).await.unwrap();
    assert_eq!(sessions, 0);
    let me: Option<serde_json::Value> = call(&app, "/api/me", &[]).await.json().await.unwrap();
    assert!(me.is_none());
}

#[tokio::test]
async fn repeated_failures_lock_sign_in_for_that_email_even_with_the_right_password() {
    let app = spawn_app().await; // LOGIN_MAX_FAILURES=3 in tests
    call(&app, "/api/signup", &[("email", "ed@example.com"), ("password", PASSWORD)]).await;
    for _ in 0..3 {
        assert_eq!(app_error(call(&app, "/api/login", &[("email", "ed@example.com"), ("password", "guess guess guess")]).await).await, AppError::InvalidCredentials);
    }
    match app_error(call(&app, "/api/login", &[("email", "ed@example.com"), ("password", PASSWORD)]).await).await {
        AppError::RateLimited { retry_after_secs } => assert!(retry_after_secs > 0 && retry_after_secs <= 15 * 60),
        other => panic!("expected rate limiting, got {other:?}"),
    }
    // Another account is not affected by ed's lock (the per-address limit is 4x higher).
    call(&app, "/api/signup", &[("email", "fi@example.com"), ("password", PASSWORD)]).await;
    assert!(call(&app, "/api/login", &[("email", "fi@example.com"), ("password", PASSWORD)]).await.status().is_success());
}

#[tokio::test]
async fn cross_site_posts_are_refused_before_any_effect() {
    let app = spawn_app().await;
    let res = app
        .client
        .post(format!("{}/api/signup", app.address))
        .header("origin", "https://evil.example")
        .form(&[("email", "x@example.com"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let res = app
        .client
        .post(format!("{}/api/signup", app.address))
        .header("sec-fetch-site", "cross-site")
        .form(&[("email", "x@example.com"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(user_count(&app).await, 0);
}

#[tokio::test]
async fn failed_calls_answer_with_the_status_their_error_means() {
    let app = spawn_app().await;
    assert_eq!(call(&app, "/api/signup", &[("email", "bad"), ("password", PASSWORD)]).await.status(), 422);
    assert_eq!(call(&app, "/api/login", &[("email", "no@example.com"), ("password", PASSWORD)]).await.status(), 401);
}
