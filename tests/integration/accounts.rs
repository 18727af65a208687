//! Accounts against a real PostgreSQL and the real HTTP stack.

use crate::helpers::*;
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
    let app = spawn_app_with(&[("APP_URL", "https://billing.example.com"), ("LOCAL_ALLOW_PUBLIC_URL", "true")]).await;
    let res = app
        .client
        .post(format!("{}/api/signup", app.address))
        .header("accept", "text/html")
        .header("origin", "https://billing.example.com")
        .form(&[("email", "sec@example.com"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(cookie.starts_with("__Host-tally_session="), "the __Host- prefix on https: {cookie}");
    assert!(cookie.contains("Path=/") && !cookie.contains("Domain"), "{cookie}");
}

#[tokio::test]
async fn sign_up_redirects_to_a_safe_next_path_only() {
    let app = spawn_app().await;
    let res =
        post_form(&app, "/api/signup", &[("email", "n1@example.com"), ("password", PASSWORD), ("next", "/pricing")])
            .await;
    assert_eq!(res.headers()["location"], "/pricing");
    let app2 = spawn_app().await;
    let res = post_form(
        &app2,
        "/api/signup",
        &[("email", "n2@example.com"), ("password", PASSWORD), ("next", "//evil.example/x")],
    )
    .await;
    assert_eq!(res.headers()["location"], "/billing");
}

#[tokio::test]
async fn sign_in_never_redirects_off_site_whatever_the_browser_would_normalise() {
    let app = spawn_app().await;
    assert!(call(&app, "/api/signup", &[("email", "hop@example.com"), ("password", PASSWORD)])
        .await
        .status()
        .is_success());
    // Each of these is a path to a naive check and `//evil.example` to a browser (tabs and
    // newlines dropped, a backslash read as a slash).
    for next in ["/\t/evil.example", "/\t\\evil.example", "/\\evil.example", "/\n/evil.example", "\\/evil.example"] {
        let res =
            post_form(&app, "/api/login", &[("email", "hop@example.com"), ("password", PASSWORD), ("next", next)])
                .await;
        assert_eq!(res.status(), 302, "{next:?}");
        assert_eq!(res.headers()["location"], "/billing", "{next:?}");
    }
    let res =
        post_form(&app, "/api/login", &[("email", "hop@example.com"), ("password", PASSWORD), ("next", "/pricing")])
            .await;
    assert_eq!(res.headers()["location"], "/pricing", "a local path is kept");
}

#[tokio::test]
async fn emails_are_unique_whatever_their_case() {
    let app = spawn_app().await;
    assert!(call(&app, "/api/signup", &[("email", "bo@example.com"), ("password", PASSWORD)])
        .await
        .status()
        .is_success());
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
        tasks.push(tokio::spawn(async move {
            client.post(url).form(&[("email", email), ("password", PASSWORD)]).send().await.unwrap().status()
        }));
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
    let wrong =
        app_error(call(&app, "/api/login", &[("email", "cy@example.com"), ("password", "wrong password!")]).await)
            .await;
    let unknown =
        app_error(call(&app, "/api/login", &[("email", "nobody@example.com"), ("password", PASSWORD)]).await).await;
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
    let me: Option<serde_json::Value> = stale
        .post(format!("{}/api/me", app.address))
        .header("cookie", &first)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
        assert_eq!(
            app_error(
                call(&app, "/api/login", &[("email", "ed@example.com"), ("password", "guess guess guess")]).await
            )
            .await,
            AppError::InvalidCredentials
        );
    }
    match app_error(call(&app, "/api/login", &[("email", "ed@example.com"), ("password", PASSWORD)]).await).await {
        AppError::RateLimited { retry_after_secs } => assert!(retry_after_secs > 0 && retry_after_secs <= 15 * 60),
        other => panic!("expected rate limiting, got {other:?}"),
    }
    // Another account is not affected by ed's lock (the per-address limit is 4x higher).
    call(&app, "/api/signup", &[("email", "fi@example.com"), ("password", PASSWORD)]).await;
    assert!(call(&app, "/api/login", &[("email", "fi@example.com"), ("password", PASSWORD)])
        .await
        .status()
        .is_success());
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

// ---- abuse ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_concurrent_wrong_passwords_gets_at_most_the_limit_checked() {
    let app = spawn_app().await; // LOGIN_MAX_FAILURES=3
    app.sign_up("burst@example.com").await;
    let mut tasks = vec![];
    for _ in 0..200 {
        let url = format!("{}/api/login", app.address);
        let origin = app.address.clone();
        tasks.push(tokio::spawn(async move {
            reqwest::Client::new()
                .post(url)
                .header("origin", origin)
                .form(&[("email", "burst@example.com"), ("password", "wrong password!")])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut checked = 0;
    for t in tasks {
        match t.await.unwrap() {
            401 => checked += 1,
            429 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(checked <= 3, "{checked} wrong passwords were checked; the limit is 3");
    let counted: i64 =
        sqlx::query_scalar("SELECT count(*) FROM login_failures WHERE email_normalized = 'burst@example.com'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(counted, checked as i64);
}

#[tokio::test]
async fn oversized_credentials_are_refused_before_anything_is_hashed_or_counted() {
    let app = spawn_app().await;
    let long_email = format!("{}@example.com", "a".repeat(250));
    let huge_password = "p".repeat(1025);
    for (path, email, password) in [
        ("/api/login", long_email.as_str(), "correct horse battery"),
        ("/api/login", "ok@example.com", huge_password.as_str()),
        ("/api/signup", long_email.as_str(), "correct horse battery"),
        ("/api/signup", "ok@example.com", huge_password.as_str()),
    ] {
        let res = call(&app, path, &[("email", email), ("password", password)]).await;
        assert_eq!(res.status(), 422, "{path}");
    }
    let failures: i64 = sqlx::query_scalar("SELECT count(*) FROM login_failures").fetch_one(&app.pool).await.unwrap();
    assert_eq!(failures, 0, "a refused input is not an attempt");
    assert_eq!(user_count(&app).await, 0);
}

#[tokio::test]
async fn sign_ups_are_throttled_per_client_address() {
    let app = spawn_app_with(&[("SIGNUP_MAX_PER_HOUR", "2")]).await;
    for i in 0..2 {
        assert_eq!(
            call(&app, "/api/signup", &[("email", &format!("farm{i}@example.com")), ("password", PASSWORD)])
                .await
                .status(),
            200
        );
    }
    let res = call(&app, "/api/signup", &[("email", "farm2@example.com"), ("password", PASSWORD)]).await;
    assert_eq!(res.status(), 429);
    assert!(matches!(app_error(res).await, AppError::RateLimited { .. }));
    assert_eq!(user_count(&app).await, 2);
}

// ---- recovery ----

#[tokio::test]
async fn a_locked_out_owner_gets_in_with_a_reset_link() {
    let app = spawn_app().await;
    app.sign_up("locked@example.com").await;
    post_form(&app, "/api/logout", &[]).await;
    for _ in 0..4 {
        call(&app, "/api/login", &[("email", "locked@example.com"), ("password", "someone guessing")]).await;
    }
    assert_eq!(
        call(&app, "/api/login", &[("email", "locked@example.com"), ("password", PASSWORD)]).await.status(),
        429,
        "locked out"
    );
    assert_eq!(post_form(&app, "/api/forgot-password", &[("email", "locked@example.com")]).await.status(), 302);
    let text = wait_for_mail(&app, "locked@example.com", "Reset your Tally password").await;
    let token = token_of(&link_in(&text, "/reset-password?token="));
    let res =
        post_form(&app, "/api/reset-password", &[("token", &token), ("password", "a brand new passphrase")]).await;
    assert_eq!(res.status(), 302);
    assert_eq!(res.headers()["location"], "/billing?done=password-reset");
    let me: Option<serde_json::Value> = call(&app, "/api/me", &[]).await.json().await.unwrap();
    assert_eq!(me.unwrap()["email"], "locked@example.com", "signed in by the reset");
    post_form(&app, "/api/logout", &[]).await;
    assert_eq!(
        call(&app, "/api/login", &[("email", "locked@example.com"), ("password", "a brand new passphrase")])
            .await
            .status(),
        200,
        "and no longer locked out"
    );
}

#[tokio::test]
async fn reset_links_are_single_use_expiring_and_stored_only_as_hashes() {
    let app = spawn_app().await;
    app.sign_up("reset@example.com").await;
    let other =
        reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    // A second session, which the reset must end.
    other
        .post(format!("{}/api/login", app.address))
        .header("origin", &app.address)
        .form(&[("email", "reset@example.com"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    post_form(&app, "/api/forgot-password", &[("email", "reset@example.com")]).await;
    let token = token_of(&link_in(&wait_for_mail(&app, "reset@example.com", "Reset").await, "/reset-password?token="));
    let stored: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT token_hash FROM account_tokens WHERE purpose = 'reset_password'")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert!(stored.iter().all(|h| h.len() == 32 && *h != token.as_bytes()), "only a hash is kept");
    assert!(
        page_text(&app, &format!("/reset-password?token={token}")).await.contains("New password"),
        "the form shows while the link works"
    );
    assert_eq!(
        call(&app, "/api/reset-password", &[("token", &token), ("password", "first new passphrase")]).await.status(),
        200
    );
    let res = call(&app, "/api/reset-password", &[("token", &token), ("password", "second new passphrase")]).await;
    assert_eq!(res.status(), 422, "a link works once");
    assert_eq!(app_error(res).await.field(), Some("token"));
    assert!(page_text(&app, &format!("/reset-password?token={token}")).await.contains("not valid any more"));
    let me: Option<serde_json::Value> =
        other.post(format!("{}/api/me", app.address)).send().await.unwrap().json().await.unwrap();
    assert!(me.is_none(), "every other session ended");
    // An expired link.
    post_form(&app, "/api/forgot-password", &[("email", "reset@example.com")]).await;
    eventually("a second reset mail arrives", || async {
        let resets = mailbox(&app, "reset@example.com")
            .await
            .iter()
            .filter(|m| m["subject"].as_str().unwrap().contains("Reset"))
            .count();
        if resets == 2 {
            Ok(())
        } else {
            Err(resets)
        }
    })
    .await;
    let newest = mailbox(&app, "reset@example.com")
        .await
        .into_iter()
        .find(|m| m["subject"].as_str().unwrap().contains("Reset"))
        .unwrap();
    let late = token_of(&link_in(newest["text"].as_str().unwrap(), "/reset-password?token="));
    sqlx::query("UPDATE account_tokens SET expires_at = now() - interval '1 second' WHERE used_at IS NULL")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        call(&app, "/api/reset-password", &[("token", &late), ("password", "third new passphrase")]).await.status(),
        422,
        "an expired link is refused"
    );
}

async fn page_text(app: &TestApp, path: &str) -> String {
    app.client.get(format!("{}{path}", app.address)).send().await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn forgot_password_says_the_same_for_addresses_without_an_account() {
    let app = spawn_app().await;
    app.sign_up("known@example.com").await;
    let known = post_form(&app, "/api/forgot-password", &[("email", "known@example.com")]).await;
    let unknown = post_form(&app, "/api/forgot-password", &[("email", "nobody@example.com")]).await;
    assert_eq!((known.status(), unknown.status()), (reqwest::StatusCode::FOUND, reqwest::StatusCode::FOUND));
    assert_eq!(known.headers()["location"], unknown.headers()["location"]);
    wait_for_mail(&app, "known@example.com", "Reset").await;
    assert!(mailbox(&app, "nobody@example.com").await.is_empty());
}

#[tokio::test]
async fn changing_the_password_needs_the_current_one_and_ends_the_other_sessions() {
    let app = spawn_app().await;
    app.sign_up("change@example.com").await;
    let other = reqwest::Client::builder().cookie_store(true).build().unwrap();
    other
        .post(format!("{}/api/login", app.address))
        .header("origin", &app.address)
        .form(&[("email", "change@example.com"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    let res = call(
        &app,
        "/api/change-password",
        &[("current_password", "not my password"), ("new_password", "another fine passphrase")],
    )
    .await;
    assert_eq!(res.status(), 422);
    assert_eq!(app_error(res).await.field(), Some("current_password"));
    assert_eq!(
        call(
            &app,
            "/api/change-password",
            &[("current_password", PASSWORD), ("new_password", "another fine passphrase")]
        )
        .await
        .status(),
        200
    );
    let mine: Option<serde_json::Value> = call(&app, "/api/me", &[]).await.json().await.unwrap();
    assert!(mine.is_some(), "this session stays");
    let theirs: Option<serde_json::Value> =
        other.post(format!("{}/api/me", app.address)).send().await.unwrap().json().await.unwrap();
    assert!(theirs.is_none(), "the other one ended");
    wait_for_mail(&app, "change@example.com", "password was changed").await;
}

#[tokio::test]
async fn confirmation_links_work_once_and_only_for_the_address_they_were_sent_to() {
    let app = spawn_app().await;
    post_form(&app, "/api/signup", &[("email", "conf@example.com"), ("password", PASSWORD)]).await;
    let token = token_of(&link_in(&wait_for_mail(&app, "conf@example.com", "Confirm").await, "/verify-email?token="));
    // The address changed before the link was followed: the link confirms nothing.
    sqlx::query("UPDATE users SET email = 'moved@example.com'").execute(&app.pool).await.unwrap();
    assert_eq!(call(&app, "/api/confirm-email", &[("token", &token)]).await.status(), 422);
    sqlx::query("UPDATE users SET email = 'conf@example.com'").execute(&app.pool).await.unwrap();
    assert_eq!(call(&app, "/api/confirm-email", &[("token", &token)]).await.status(), 422, "and it was used up");
    // A new link (the billing page's resend) works, once; the credits come once.
    assert_eq!(call(&app, "/api/resend-confirmation", &[]).await.status(), 200);
    eventually("the resent confirmation arrives", || async {
        let mails = mailbox(&app, "conf@example.com").await.len();
        if mails == 2 {
            Ok(())
        } else {
            Err(mails)
        }
    })
    .await;
    let fresh = token_of(&link_in(
        mailbox(&app, "conf@example.com").await[0]["text"].as_str().unwrap(),
        "/verify-email?token=",
    ));
    assert_eq!(call(&app, "/api/confirm-email", &[("token", &fresh)]).await.status(), 200);
    assert_eq!(call(&app, "/api/confirm-email", &[("token", &fresh)]).await.status(), 422);
    let balance: i64 = sqlx::query_scalar("SELECT balance FROM credit_accounts").fetch_one(&app.pool).await.unwrap();
    assert_eq!(balance, 1000);
    assert_eq!(call(&app, "/api/resend-confirmation", &[]).await.status(), 409, "nothing to confirm any more");
}

#[tokio::test]
async fn account_mail_goes_out_through_a_real_smtp_server() {
    let smtp = SmtpSink::start();
    let app = spawn_app_with(&[("SMTP_URL", &smtp.url), ("MAIL_FROM", "Tally Tests <tests@tally.example>")]).await;
    post_form(&app, "/api/signup", &[("email", "smtp@example.com"), ("password", PASSWORD)]).await;
    let mail = smtp.wait_for("smtp@example.com", "Confirm your email address").await;
    assert!(
        mail.contains("From: \"Tally Tests\" <tests@tally.example>")
            || mail.contains("From: Tally Tests <tests@tally.example>"),
        "{mail}"
    );
    let token = token_of(&link_in(&mail, "/verify-email?token="));
    assert_eq!(post_form(&app, "/api/confirm-email", &[("token", &token)]).await.status(), 302);
    let balance: i64 = sqlx::query_scalar("SELECT balance FROM credit_accounts").fetch_one(&app.pool).await.unwrap();
    assert_eq!(balance, 1000);
    let (status, body): (String, Option<String>) =
        sqlx::query_as("SELECT status, body_text FROM outgoing_mail").fetch_one(&app.pool).await.unwrap();
    assert_eq!((status.as_str(), body), ("sent", None), "a sent mail's body (its one-time link) is not kept");
    // With SMTP configured there is no dev mailbox.
    let res = reqwest::Client::new()
        .get(format!("{}/dev/mailbox", app.address))
        .bearer_auth(controls_token())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn mail_waits_while_the_smtp_server_is_down_and_goes_out_when_it_is_back() {
    let port = free_port();
    let app = spawn_app_with(&[("SMTP_URL", &format!("smtp://127.0.0.1:{port}"))]).await;
    post_form(&app, "/api/signup", &[("email", "later@example.com"), ("password", PASSWORD)]).await;
    eventually("the mailer tries the absent SMTP server", || async {
        let attempts: i32 =
            sqlx::query_scalar("SELECT attempts FROM outgoing_mail").fetch_one(&app.pool).await.unwrap();
        if attempts > 0 {
            Ok(())
        } else {
            Err(attempts)
        }
    })
    .await;
    let (status, error): (String, Option<String>) =
        sqlx::query_as("SELECT status, last_error FROM outgoing_mail").fetch_one(&app.pool).await.unwrap();
    assert_eq!(status, "pending", "kept for a retry: {error:?}");
    assert!(error.is_some());
    // The server comes up on that port; the retry is due now.
    let _smtp = SmtpSinkOn::start(port);
    sqlx::query("UPDATE outgoing_mail SET next_attempt_at = now()").execute(&app.pool).await.unwrap();
    _smtp.0.wait_for("later@example.com", "Confirm").await;
}

/// An SMTP sink on a given port (for the outage test).
struct SmtpSinkOn(SmtpSink);

impl SmtpSinkOn {
    fn start(port: u16) -> SmtpSinkOn {
        SmtpSinkOn(SmtpSink::start_on(port))
    }
}

#[tokio::test]
async fn the_dev_mailbox_needs_the_controls_token() {
    let app = spawn_app().await;
    post_form(&app, "/api/signup", &[("email", "dev@example.com"), ("password", PASSWORD)]).await;
    wait_for_mail(&app, "dev@example.com", "Confirm").await;
    let anonymous =
        reqwest::Client::new().get(format!("{}/dev/mailbox?format=json", app.address)).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let wrong = reqwest::Client::new()
        .get(format!("{}/dev/mailbox?format=json&token=guess", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let html = reqwest::Client::new()
        .get(format!("{}/dev/mailbox?token={}", app.address, controls_token()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("Confirm your email address") && html.contains("/verify-email?token="), "{html}");
}

#[tokio::test]
async fn one_inbox_gets_the_free_credits_once() {
    let app = spawn_app().await;
    let first = app.sign_up("ann+one@example.com").await;
    post_form(&app, "/api/logout", &[]).await;
    let res = post_form(&app, "/api/signup", &[("email", "Ann+two@Example.com"), ("password", PASSWORD)]).await;
    assert!(res.status().is_redirection());
    let text = wait_for_mail(&app, "Ann+two@Example.com", "Confirm").await;
    let token = token_of(&link_in(&text, "/verify-email?token="));
    let res = post_form(&app, "/api/confirm-email", &[("token", &token)]).await;
    assert_eq!(
        res.headers()["location"],
        "/billing?done=email-confirmed-claimed",
        "confirmed, and told why nothing was added"
    );
    let balances: Vec<(uuid::Uuid, i64)> =
        sqlx::query_as("SELECT user_id, balance FROM credit_accounts ORDER BY balance DESC")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(balances.iter().map(|(_, b)| *b).sum::<i64>(), 1000, "one inbox, one grant: {balances:?}");
    assert_eq!(balances[0].0, first);
    // Addresses a mailer would deliver to one inbox under another name are not addresses here.
    let res = call(&app, "/api/signup", &[("email", "x<ann@example.com>"), ("password", PASSWORD)]).await;
    assert_eq!(res.status(), 422);
}

#[tokio::test]
async fn guessed_reset_links_are_refused_and_throttled_per_client() {
    let app = spawn_app().await;
    for i in 0..30 {
        let res = call(
            &app,
            "/api/reset-password",
            &[("token", &format!("guess-{i}")), ("password", "a guessed new password")],
        )
        .await;
        assert_eq!(res.status(), 422);
    }
    let res = call(&app, "/api/reset-password", &[("token", "guess-31"), ("password", "a guessed new password")]).await;
    assert_eq!(res.status(), 429);
}
