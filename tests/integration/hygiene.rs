//! What is kept and what is sent back: pruning, scrubbing on deletion, no secrets at rest,
//! security headers, the workers seen from outside, and the operator's retry of parked events.

use crate::helpers::*;
use serde_json::{json, Value};

#[tokio::test]
async fn the_janitor_prunes_what_is_past_keeping_and_keeps_webhook_ids() {
    let app = spawn_app().await;
    let user = app.sign_up("old@example.com").await;
    let p = &app.pool;
    sqlx::query(
        "INSERT INTO sessions (token_hash, user_id, expires_at) VALUES ('\\x01', $1, now() - interval '1 day')",
    )
    .bind(user)
    .execute(p)
    .await
    .unwrap();
    sqlx::query("INSERT INTO login_failures (email_normalized, client_ip, failed_at) VALUES ('old@example.com', '127.0.0.1', now() - interval '1 hour')").execute(p).await.unwrap();
    sqlx::query("INSERT INTO rate_counters (scope, subject, window_start, count) VALUES ('signup', 'x', now() - interval '2 days', 3)").execute(p).await.unwrap();
    sqlx::query("INSERT INTO webhook_events (webhook_id, event_type, payload, status, processed_at) VALUES ('old', 'order.paid', '{\"data\":{\"email\":\"x@example.com\"}}', 'done', now() - interval '40 days')")
        .execute(p)
        .await
        .unwrap();
    sqlx::query("INSERT INTO webhook_events (webhook_id, event_type, payload, status, processed_at) VALUES ('recent', 'order.paid', '{}', 'done', now())").execute(p).await.unwrap();
    for (key, status, sent_days_ago) in
        [("old-sent", "sent", 101), ("recent-sent", "sent", 5), ("old-parked", "failed", 0)]
    {
        sqlx::query("INSERT INTO usage_outbox (user_id, external_id, units, occurred_at, status, sent_at) VALUES ($1, $2, 1, now() - interval '200 days', $3, CASE WHEN $3 = 'sent' THEN now() - make_interval(days => $4) END)")
            .bind(user)
            .bind(key)
            .bind(status)
            .bind(sent_days_ago)
            .execute(p)
            .await
            .unwrap();
    }
    let config = test_config(&[]);
    let pruned = tally::server::janitor::run_once(p, &config, chrono::Utc::now()).await.unwrap();
    assert_eq!(
        (pruned.sessions, pruned.login_failures, pruned.rate_counters, pruned.webhook_payloads, pruned.usage_events),
        (1, 1, 1, 1, 1),
        "{pruned:?}"
    );
    let old: (Option<Value>, String) =
        sqlx::query_as("SELECT payload, status FROM webhook_events WHERE webhook_id = 'old'")
            .fetch_one(p)
            .await
            .unwrap();
    assert_eq!(
        old,
        (None, "done".to_string()),
        "the payload goes, the id stays (a late redelivery is still a duplicate)"
    );
    let recent: Option<Value> = sqlx::query_scalar("SELECT payload FROM webhook_events WHERE webhook_id = 'recent'")
        .fetch_one(p)
        .await
        .unwrap();
    assert!(recent.is_some());
    let live: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sessions WHERE user_id = $1").bind(user).fetch_one(p).await.unwrap();
    assert_eq!(live, 1, "the live session stays");
    let usage: Vec<String> =
        sqlx::query_scalar("SELECT external_id FROM usage_outbox ORDER BY external_id").fetch_all(p).await.unwrap();
    assert_eq!(usage, ["old-parked", "recent-sent"], "a parked usage event is never pruned");
    assert_eq!(
        tally::server::janitor::run_once(p, &config, chrono::Utc::now()).await.unwrap(),
        Default::default(),
        "nothing twice"
    );
}

#[tokio::test]
async fn deleting_an_account_scrubs_its_personal_data_from_the_inbox_and_the_mail() {
    let app = spawn_app().await;
    let user = app.sign_up("scrub@example.com").await;
    app.buy("pack_50").await;
    let before: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_events WHERE user_id = $1 AND payload IS NOT NULL")
            .bind(user)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(before > 0, "the pack's events are the user's");
    let res = call(&app, "/api/account/delete", &[("confirm_email", "scrub@example.com")]).await;
    assert_eq!(res.status(), 200);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_events WHERE payload::text ILIKE '%scrub@example.com%' OR raw_body ILIKE '%scrub@example.com%'").fetch_one(&app.pool).await.unwrap();
    let named: Vec<String> =
        sqlx::query_scalar("SELECT event_type FROM webhook_events WHERE payload::text ILIKE '%scrub@example.com%'")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(left, 0, "no webhook payload names them: {named:?}");
    let mails: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outgoing_mail WHERE to_address ILIKE '%scrub@%' OR body_text IS NOT NULL",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(mails, 0);
    let dev: i64 = sqlx::query_scalar("SELECT count(*) FROM dev_mailbox WHERE to_address ILIKE 'scrub@%'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(dev, 0);
    // Events that arrive afterwards about the deleted customer keep nothing once handled.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let late: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM webhook_events WHERE status <> 'pending' AND payload::text ILIKE '%scrub@example.com%'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(late, 0);
}

#[tokio::test]
async fn a_new_api_key_is_never_stored_in_plaintext_not_even_for_a_javascript_off_page() {
    let app = spawn_app().await;
    app.sign_up("plain@example.com").await;
    let res = post_form(&app, "/api/keys/create", &[("name", "laptop")]).await;
    assert_eq!(res.status(), 302);
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("tally_new_key="))
        .expect("a one-time cookie");
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && cookie.contains("Path=/settings")
            && cookie.contains("Max-Age=300"),
        "{cookie}"
    );
    let key = cookie.trim_start_matches("tally_new_key=").split('.').next().unwrap().to_string();
    for table in ["sessions", "api_keys", "webhook_events", "outgoing_mail", "dev_mailbox", "credit_entries"] {
        let found: bool = sqlx::query_scalar(&format!(
            "SELECT EXISTS (SELECT 1 FROM {table} t WHERE row_to_json(t)::text LIKE '%' || $1 || '%')"
        ))
        .bind(&key[4..])
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert!(!found, "the key is in {table}");
    }
    let html = app.page("/settings/billing").await;
    assert!(html.contains(&key), "shown once");
    assert!(!app.page("/settings/billing").await.contains(&key), "and only once");
}

#[tokio::test]
async fn pages_carry_security_headers_and_a_csp_under_which_every_script_has_the_nonce() {
    let app = spawn_app().await;
    let res = app.client.get(format!("{}/pricing", app.address)).send().await.unwrap();
    let h = res.headers().clone();
    let csp = h["content-security-policy"].to_str().unwrap().to_string();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("'wasm-unsafe-eval'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let nonce = csp.split("'nonce-").nth(1).unwrap().split('\'').next().unwrap().to_string();
    for (k, v) in [
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "strict-origin-when-cross-origin"),
    ] {
        assert_eq!(h[k], v);
    }
    assert!(h.get("strict-transport-security").is_none(), "no HSTS on http");
    assert!(h.get("cache-control").is_none_or(|v| v != "no-store"), "an anonymous page may be cached");
    let html = res.text().await.unwrap();
    let scripts: Vec<&str> = html.split("<script").skip(1).map(|s| &s[..s.find('>').unwrap()]).collect();
    assert!(!scripts.is_empty());
    for s in scripts {
        assert!(
            s.contains(&format!("nonce=\"{nonce}\"")) || s.contains(" src="),
            "a script without the nonce: <script{s}>"
        );
    }
    let other = app.client.get(format!("{}/pricing", app.address)).send().await.unwrap();
    assert_ne!(other.headers()["content-security-policy"].to_str().unwrap(), csp, "a fresh nonce per response");
    // Signed in: the account's pages are never stored.
    app.sign_up("headers@example.com").await;
    let res = app.client.get(format!("{}/billing", app.address)).send().await.unwrap();
    assert_eq!(res.headers()["cache-control"], "no-store");
    let res = call(&app, "/api/account", &[("return_to", "/billing")]).await;
    assert_eq!(res.headers()["cache-control"], "no-store");
}

#[tokio::test]
async fn https_deployments_get_hsts() {
    let app = spawn_app_with(&[("APP_URL", "https://billing.example.com"), ("LOCAL_ALLOW_PUBLIC_URL", "true")]).await;
    let res = app.client.get(format!("{}/", app.address)).send().await.unwrap();
    assert_eq!(res.headers()["strict-transport-security"], "max-age=63072000; includeSubDomains");
}

#[tokio::test]
async fn readiness_reports_the_workers_and_metrics_need_their_token() {
    let app = spawn_app_with(&[("METRICS_TOKEN", "metrics-token-for-tests")]).await;
    let ready: Value = reqwest::get(format!("{}/readyz", app.address)).await.unwrap().json().await.unwrap();
    assert_eq!(ready["checks"]["webhook_worker"], "ok", "{ready}");
    assert_eq!(ready["checks"]["mail_worker"], "ok");
    assert_eq!(reqwest::get(format!("{}/metrics", app.address)).await.unwrap().status(), 401);
    let text = metrics(&app, "metrics-token-for-tests").await;
    for m in [
        "tally_polar_circuit_open 0",
        "tally_webhook_events_pending 0",
        "tally_mail_pending",
        "tally_worker_restarts_total{task=\"webhook_worker\"} 0",
        "tally_usage_events_pending 0",
        "tally_usage_events_failed 0",
        "tally_usage_oldest_pending_seconds 0.000",
        "tally_worker_restarts_total{task=\"usage_shipper\"} 0",
        "tally_worker_restarts_total{task=\"usage_alerts\"} 0",
        "tally_usage_drift_credits 0",
        "tally_usage_drift_accounts 0",
    ] {
        assert!(text.contains(m), "{m} missing from:\n{text}");
    }
    let unset = spawn_app().await;
    assert_eq!(
        reqwest::get(format!("{}/metrics", unset.address)).await.unwrap().status(),
        404,
        "not served without METRICS_TOKEN"
    );
}

#[tokio::test]
async fn parked_webhooks_can_be_put_back_in_the_queue() {
    let (pool, _) = fresh_database().await;
    let config = test_config(&[]);
    let user: uuid::Uuid =
        sqlx::query_scalar("INSERT INTO users (email, password_hash) VALUES ('p@example.com', 'x') RETURNING id")
            .fetch_one(&pool)
            .await
            .unwrap();
    let body = json!({ "type": "order.paid", "data": {
        "id": "ord_parked", "status": "paid", "billing_reason": "purchase", "net_amount": 500, "total_amount": 500, "refunded_amount": 0,
        "product_id": "p", "product": { "id": "p", "metadata": { "credits": 20 } },
        "customer": { "id": "c", "external_id": user.to_string() } } });
    sqlx::query("INSERT INTO webhook_events (webhook_id, event_type, payload, status, attempts, last_error) VALUES ('parked', 'order.paid', $1, 'failed', 8, 'was broken')")
        .bind(&body)
        .execute(&pool)
        .await
        .unwrap();
    assert!(
        tally::server::cli::webhooks_command(&pool, &["retry".into(), "nope".into()]).await.is_err(),
        "an unknown id is an error"
    );
    tally::server::cli::webhooks_command(&pool, &["retry".into(), "--failed".into()]).await.unwrap();
    while tally::server::webhooks::worker::process_one(&pool, &config, chrono::Utc::now()).await.unwrap() {}
    let status: String = sqlx::query_scalar("SELECT status FROM webhook_events WHERE webhook_id = 'parked'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "done");
    let balance: i64 = sqlx::query_scalar("SELECT balance FROM credit_accounts WHERE user_id = $1")
        .bind(user)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(balance, 20);
}

/// What test runs leave behind is dropped by the next run: databases named more than an hour
/// ago, or before the time was in their names; a database of a run under way is kept.
#[tokio::test]
async fn test_databases_left_by_earlier_runs_are_dropped() {
    let now = chrono::Utc::now().timestamp();
    assert!(leftover(&format!("tally_test_{}_{}", now - 3601, "a".repeat(32)), now));
    assert!(leftover(&format!("tally_test_{}", "0123456789abcdef".repeat(2)), now), "the names before");
    assert!(!leftover(&format!("tally_test_{}_{}", now - 60, "a".repeat(32)), now), "a run under way");
    assert!(!leftover("tally_bench_pages", now) && !leftover("tally_e2e", now), "not a test's");

    let admin = admin_url();
    let old = format!("tally_test_{}_{}", now - 7200, uuid::Uuid::new_v4().simple());
    let (_, current) = fresh_database().await;
    tally::server::db::create_database_if_missing(&admin, &old).await.unwrap();
    drop_leftover_databases(&admin, now).await;
    let exists = |name: String| {
        let admin = admin.clone();
        async move {
            let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&admin).await.unwrap();
            sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(name)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert!(!exists(old).await, "an earlier run's database is gone");
    assert!(exists(current).await, "this run's is kept");
}
