//! The metered API and API keys, over real HTTP against a real PostgreSQL.

use crate::helpers::*;
use serde_json::{json, Value};

async fn signed_up_with_key(app: &TestApp, email: &str) -> String {
    app.sign_up(email).await;
    app.create_api_key("ci").await
}

async fn user_id(app: &TestApp) -> uuid::Uuid {
    sqlx::query_scalar("SELECT id FROM users").fetch_one(&app.pool).await.unwrap()
}

async fn balance(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT balance FROM credit_accounts").fetch_one(&app.pool).await.unwrap()
}

#[tokio::test]
async fn a_call_spends_its_cost_and_reports_what_remains() {
    let app = spawn_app().await;
    let key = signed_up_with_key(&app, "api@example.com").await;
    let res = app.spend(Some(&key), r#"{"text":"Hello world. How are you?"}"#, None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-credits-remaining"], "999");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body, json!({ "characters": 25, "words": 5, "lines": 1, "sentences": 2, "credits_spent": 1 }));
    let long = "a".repeat(2500);
    let res = app.spend(Some(&key), &json!({ "text": long }).to_string(), None).await;
    assert_eq!(res.headers()["x-credits-remaining"], "996", "2,500 characters cost 3 credits");
    let used: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT last_used_at FROM api_keys").fetch_one(&app.pool).await.unwrap();
    assert!(used.is_some(), "the key's last use is recorded");
    let meta: Value =
        sqlx::query_scalar("SELECT metadata FROM credit_entries WHERE kind = 'spend' ORDER BY id LIMIT 1")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(meta["endpoint"], "/api/v1/text/stats");
    assert!(tally::server::ledger::problems(&app.pool, None).await.unwrap().is_empty());
}

#[tokio::test]
async fn bad_requests_get_json_errors_and_spend_nothing() {
    let app = spawn_app().await;
    let key = signed_up_with_key(&app, "bad@example.com").await;
    let cases = [
        (None, r#"{"text":"x"}"#, 401, "missing_api_key"),
        (Some("tly_not-a-real-key"), r#"{"text":"x"}"#, 401, "invalid_api_key"),
        (Some(key.as_str()), r#"{"text": "#, 400, "malformed_json"),
        (Some(key.as_str()), r#"{"txt":"x"}"#, 422, "invalid_input"),
        (Some(key.as_str()), r#"{"text":42}"#, 422, "invalid_input"),
    ];
    for (k, body, status, code) in cases {
        let res = app.spend(k, body, None).await;
        assert_eq!(res.status(), status, "{body}");
        let e: Value = res.json().await.unwrap();
        assert_eq!(e["error"]["code"], code, "{body}");
        assert!(e["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let too_long = json!({ "text": "a".repeat(100_001) }).to_string();
    assert_eq!(app.spend(Some(&key), &too_long, None).await.status(), 422);
    assert_eq!(balance(&app).await, 1000, "nothing was spent");
}

#[tokio::test]
async fn out_of_credits_is_402_with_what_is_available() {
    let app = spawn_app_with(&[("FREE_CREDITS", "2")]).await;
    let key = signed_up_with_key(&app, "poor@example.com").await;
    let res = app.spend(Some(&key), &json!({ "text": "a".repeat(3000) }).to_string(), None).await;
    assert_eq!(res.status(), 402);
    let e: Value = res.json().await.unwrap();
    assert_eq!(e["error"]["code"], "insufficient_credits");
    assert_eq!((e["error"]["cost"].as_i64(), e["error"]["available"].as_i64()), (Some(3), Some(2)));
    assert_eq!(balance(&app).await, 2);
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_replays_the_first_answer_exactly() {
    // Recorded by a batch's statement (the default) and by a spend alone (`SPEND_BATCH=0`).
    for spend_batch in ["128", "0"] {
        replays_the_first_answer_exactly(spend_batch).await;
    }
}

async fn replays_the_first_answer_exactly(spend_batch: &str) {
    let app = spawn_app_with(&[("SPEND_BATCH", spend_batch)]).await;
    let key = signed_up_with_key(&app, "idem@example.com").await;
    let first = app.spend(Some(&key), r#"{"text":"same request"}"#, Some("req-42")).await;
    assert_eq!(first.status(), 200);
    let first_headers = first.headers().clone();
    let first_body = first.bytes().await.unwrap();
    // Something else is spent between the first answer and its retries.
    assert_eq!(app.spend(Some(&key), r#"{"text":"another"}"#, None).await.status(), 200);
    for _ in 0..3 {
        let res = app.spend(Some(&key), r#"{"text":"same request"}"#, Some("req-42")).await;
        assert_eq!(res.status(), 200);
        for h in ["content-type", "x-credits-remaining"] {
            assert_eq!(res.headers()[h], first_headers[h], "{h} is the first answer's");
        }
        assert_eq!(res.headers()["x-credits-remaining"], "999", "the balance as the first answer told it");
        assert_eq!(res.headers()["idempotent-replayed"], "true");
        assert_eq!(res.bytes().await.unwrap(), first_body);
    }
    assert_eq!(balance(&app).await, 998, "two spends, not five");
}

#[tokio::test]
async fn a_used_key_with_another_request_is_refused_and_spends_nothing() {
    let app = spawn_app().await;
    let key = signed_up_with_key(&app, "reuse@example.com").await;
    assert_eq!(app.spend(Some(&key), r#"{"text":"x"}"#, Some("k")).await.status(), 200);
    // The attack: pay 1 credit once, then send long texts forever under the same key.
    let long = json!({ "text": "a".repeat(9_000) }).to_string();
    for body in [long.as_str(), r#"{"text":"y"}"#, r#"{"text": "x"}"#] {
        let res = app.spend(Some(&key), body, Some("k")).await;
        assert_eq!(res.status(), 422, "{body}");
        let e: Value = res.json().await.unwrap();
        assert_eq!(e["error"]["code"], "idempotency_key_reused");
    }
    assert_eq!(balance(&app).await, 999, "only the first request spent");
    assert!(tally::server::ledger::problems(&app.pool, None).await.unwrap().is_empty());
}

#[tokio::test]
async fn concurrent_requests_under_one_key_spend_once_whatever_their_bodies() {
    let app = spawn_app_with(&[("API_MAX_IN_FLIGHT_PER_ACCOUNT", "100")]).await;
    let key = signed_up_with_key(&app, "race@example.com").await;
    let mut calls = Vec::new();
    for i in 0..20 {
        let (url, key) = (format!("{}/api/v1/text/stats", app.address), key.clone());
        // Half send the same body, half a different one each.
        let body = if i % 2 == 0 {
            r#"{"text":"same"}"#.to_string()
        } else {
            json!({ "text": format!("other {i}") }).to_string()
        };
        calls.push(tokio::spawn(async move {
            let res = reqwest::Client::new()
                .post(url)
                .bearer_auth(key)
                .header("idempotency-key", "one")
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            (body, res.status().as_u16())
        }));
    }
    let mut winners = std::collections::HashSet::new();
    for c in calls {
        let (body, status) = c.await.unwrap();
        match status {
            200 => {
                winners.insert(body);
            }
            422 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "every 200 answered the same request: {winners:?}");
    assert_eq!(balance(&app).await, 999);
}

#[tokio::test]
async fn a_refused_request_does_not_use_up_its_key() {
    let app = spawn_app_with(&[("FREE_CREDITS", "2")]).await;
    let key = signed_up_with_key(&app, "topup@example.com").await;
    let body = json!({ "text": "a".repeat(2500) }).to_string();
    assert_eq!(app.spend(Some(&key), &body, Some("retry-me")).await.status(), 402);
    tally::server::ledger::adjust(
        &mut app.pool.acquire().await.unwrap(),
        user_id(&app).await,
        5,
        "top-up",
        "adjust:test-top-up",
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    let res = app.spend(Some(&key), &body, Some("retry-me")).await;
    assert_eq!(res.status(), 200, "after a top-up the same key succeeds");
    assert_eq!(balance(&app).await, 4);
}

#[tokio::test]
async fn malformed_idempotency_keys_are_refused_not_ignored() {
    let app = spawn_app().await;
    let key = signed_up_with_key(&app, "badkey@example.com").await;
    let raw = |bytes: &[u8]| reqwest::header::HeaderValue::from_bytes(bytes).unwrap();
    for bad in [raw("a".repeat(256).as_bytes()), raw(b"tab\tkey"), raw("cl\u{e9}".as_bytes())] {
        let res = reqwest::Client::new()
            .post(format!("{}/api/v1/text/stats", app.address))
            .bearer_auth(&key)
            .header("idempotency-key", bad.clone())
            .body(r#"{"text":"x"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 422, "{bad:?}");
        let e: Value = res.json().await.unwrap();
        assert_eq!(e["error"]["code"], "invalid_idempotency_key");
    }
    assert_eq!(balance(&app).await, 1000);
}

#[tokio::test]
async fn a_client_key_can_never_collide_with_the_ledgers_own_continuation_keys() {
    // A spend under `k#2`, then a spend under `k` that burns two buckets (whose second entry
    // the ledger keys `…#2`): it minted credits before client keys had their own namespace.
    let app = spawn_app_with(&[("FREE_CREDITS", "1000")]).await;
    let key = signed_up_with_key(&app, "mint@example.com").await;
    let user = user_id(&app).await;
    tally::server::ledger::grant_pack(
        &mut app.pool.acquire().await.unwrap(),
        user,
        "pack-order",
        2,
        "product",
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(app.spend(Some(&key), r#"{"text":"x"}"#, Some("k#2")).await.status(), 200);
    let res = app.spend(Some(&key), &json!({ "text": "a".repeat(1500) }).to_string(), Some("k")).await;
    assert_eq!(res.status(), 200, "the two-bucket spend goes through");
    assert_eq!(res.headers()["x-credits-remaining"], "999");
    assert_eq!(balance(&app).await, 999);
    assert!(
        tally::server::ledger::problems(&app.pool, None).await.unwrap().is_empty(),
        "balance, buckets and entries agree"
    );
}

#[tokio::test]
async fn a_revoked_key_stops_working_at_once() {
    let app = spawn_app().await;
    let key = signed_up_with_key(&app, "rev@example.com").await;
    let list: Value = call(&app, "/api/keys/list", &[]).await.json().await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(list[0]["prefix"].as_str().unwrap().starts_with("tly_"));
    assert!(!list.to_string().contains(&key), "the full key is never listed");
    let id = list[0]["id"].as_str().unwrap().to_string();
    assert_eq!(call(&app, "/api/keys/revoke", &[("id", &id)]).await.status(), 200);
    assert_eq!(app.spend(Some(&key), r#"{"text":"x"}"#, None).await.status(), 401);
    // Nobody else can revoke (or even see) it.
    assert_eq!(call(&app, "/api/keys/revoke", &[("id", &id)]).await.status(), 404);
}

#[tokio::test]
async fn keys_are_stored_only_as_hashes() {
    let app = spawn_app().await;
    let key = signed_up_with_key(&app, "hash@example.com").await;
    let stored: Vec<u8> = sqlx::query_scalar("SELECT key_hash FROM api_keys").fetch_one(&app.pool).await.unwrap();
    assert_eq!(stored.len(), 32);
    let dump: String =
        sqlx::query_scalar("SELECT row_to_json(k)::text FROM api_keys k").fetch_one(&app.pool).await.unwrap();
    assert!(!dump.contains(&key[4..]), "no plaintext key at rest");
}

#[tokio::test]
async fn each_key_is_rate_limited_with_retry_after() {
    let app = spawn_app_with(&[("API_RATE_LIMIT_PER_MINUTE", "3")]).await;
    let key = signed_up_with_key(&app, "rate@example.com").await;
    for _ in 0..3 {
        assert_eq!(app.spend(Some(&key), r#"{"text":"x"}"#, None).await.status(), 200);
    }
    let res = app.spend(Some(&key), r#"{"text":"x"}"#, None).await;
    assert_eq!(res.status(), 429);
    let wait: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait));
    assert_eq!(balance(&app).await, 997, "the refused call spent nothing");
}

#[tokio::test]
async fn without_javascript_a_new_key_is_shown_once_on_the_settings_page() {
    let app = spawn_app().await;
    post_form(&app, "/api/signup", &[("email", "nojs@example.com"), ("password", "correct horse battery")]).await;
    let res = post_form(&app, "/api/keys/create", &[("name", "laptop")]).await;
    assert_eq!(res.status(), 302);
    let page = app.client.get(format!("{}/settings/billing", app.address)).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Copy it now"), "the key is revealed after the redirect: {page}");
    assert!(page.contains("tly_"));
    let again = app.client.get(format!("{}/settings/billing", app.address)).send().await.unwrap().text().await.unwrap();
    assert!(!again.contains("Copy it now"), "and only once");
    assert!(again.contains("laptop"));
}

#[tokio::test]
async fn key_management_requires_a_signed_in_user() {
    let app = spawn_app().await;
    assert_eq!(call(&app, "/api/keys/create", &[("name", "x")]).await.status(), 401);
    assert_eq!(call(&app, "/api/keys/list", &[]).await.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_account_cannot_hold_more_than_its_share_of_calls_in_flight() {
    let app = spawn_app_with(&[("API_MAX_IN_FLIGHT_PER_ACCOUNT", "2"), ("API_RATE_LIMIT_PER_MINUTE", "1000")]).await;
    let key = signed_up_with_key(&app, "greedy@example.com").await;
    // Long texts keep each call busy a little while; 40 at once from one account.
    let body = json!({ "text": "word ".repeat(1500) }).to_string();
    let mut calls = Vec::new();
    for _ in 0..40 {
        let (url, key, body) = (format!("{}/api/v1/text/stats", app.address), key.clone(), body.clone());
        calls.push(tokio::spawn(async move {
            reqwest::Client::new().post(url).bearer_auth(key).body(body).send().await.unwrap()
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for c in calls {
        let res = c.await.unwrap();
        match res.status().as_u16() {
            200 => ok += 1,
            429 => {
                let e: Value = res.json().await.unwrap();
                assert_eq!(e["error"]["code"], "too_many_in_flight");
                refused += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(ok >= 2 && refused > 0, "ok {ok}, refused {refused}");
    assert_eq!(balance(&app).await, 1000 - 8 * ok, "each answered call spent its 8 credits, the refused ones nothing");
}

/// 1,600 calls against 1,000 credits, alternating between two instances on one database,
/// with `SPEND_BATCH` as given; returns (200s, 402s, the transactions that wrote the spends).
async fn two_instances_spend(spend_batch: &str) -> (i32, i32, i64) {
    let limit = [
        ("FREE_CREDITS", "1000"),
        ("API_RATE_LIMIT_PER_MINUTE", "10000"),
        ("API_MAX_IN_FLIGHT_PER_ACCOUNT", "10000"),
        ("SPEND_BATCH", spend_batch),
    ];
    let a = spawn_app_with(&limit).await;
    let key = signed_up_with_key(&a, "two@example.com").await;
    // A second instance: its own HTTP server and pool, the same database.
    let pool_b = sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        .connect_with((*a.pool.connect_options()).clone())
        .await
        .unwrap();
    let b = spawn_app_on(pool_b, a.db_name.clone(), &limit).await;
    let client = reqwest::Client::new();
    let mut calls = Vec::new();
    for i in 0..1600 {
        let url = format!("{}/api/v1/text/stats", if i % 2 == 0 { &a.address } else { &b.address });
        let (key, client) = (key.clone(), client.clone());
        calls.push(tokio::spawn(async move {
            let res = client.post(url).bearer_auth(key).json(&json!({ "text": format!("call {i}") })).send().await;
            res.unwrap().status().as_u16()
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for c in calls {
        match c.await.unwrap() {
            200 => ok += 1,
            402 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(balance(&a).await, 0);
    assert!(tally::server::ledger::problems(&a.pool, None).await.unwrap().is_empty());
    let transactions: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT xmin::text) FROM credit_entries WHERE kind = 'spend'")
            .fetch_one(&a.pool)
            .await
            .unwrap();
    (ok, refused, transactions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_app_instances_on_one_database_never_overspend() {
    // Group commit (the default): many spends a transaction, still exactly the credits there were.
    let (ok, refused, transactions) = two_instances_spend("128").await;
    assert_eq!((ok, refused), (1000, 600), "exactly the 1,000 free credits were spent");
    assert!(transactions < 1000, "batched: 1,000 spends written by {transactions} transactions");
    // One transaction per spend, as before.
    assert_eq!(two_instances_spend("0").await, (1000, 600, 1000));
}

/// An endpoint of one's own, metered: its work and a `MeteredCall` (what docs/metered-api.md shows).
async fn word_count(
    call: tally::server::metered::MeteredCall,
) -> Result<axum::response::Response, tally::server::metered::ApiError> {
    let text = std::str::from_utf8(call.body())
        .map_err(|_| tally::server::metered::ApiError::invalid("body", "Send UTF-8 text."))?;
    let words = text.split_whitespace().count() as i64;
    call.charge(words.max(1), "text.words", json!({ "bytes": text.len() }), json!({ "words": words })).await
}

/// Metering is a piece any endpoint is built on: a word counter in a few lines gets the API
/// key, the spend through the ledger, the answer replayed for its Idempotency-Key and refused
/// for another request under it, and the API's error bodies.
#[tokio::test]
async fn an_endpoint_of_ones_own_is_metered_by_taking_a_metered_call() {
    let app = spawn_app().await;
    let key = signed_up_with_key(&app, "words@example.com").await;
    let state = tally::server::state::AppState::new(test_config(&[]), app.pool.clone()).unwrap();
    let router = axum::Router::new().route("/api/v1/words", axum::routing::post(word_count)).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/v1/words", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let post = |body: &'static str, key: Option<&str>, idempotency: Option<&str>| {
        let mut req = reqwest::Client::new().post(&url).body(body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(i) = idempotency {
            req = req.header("idempotency-key", i);
        }
        async move { req.send().await.unwrap() }
    };

    let res = post("three little words", None, None).await;
    assert_eq!(res.status(), 401);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "missing_api_key");
    assert_eq!(balance(&app).await, 1000, "nothing spent");

    let res = post("three little words", Some(&key), Some("w-1")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-credits-remaining"], "997");
    assert_eq!(res.json::<Value>().await.unwrap(), json!({ "words": 3, "credits_spent": 3 }));
    assert_eq!(balance(&app).await, 997);

    let again = post("three little words", Some(&key), Some("w-1")).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(balance(&app).await, 997, "a retry is answered, not charged");
    let other = post("four other little words", Some(&key), Some("w-1")).await;
    assert_eq!(other.status(), 422);
    assert_eq!(other.json::<Value>().await.unwrap()["error"]["code"], "idempotency_key_reused");

    let res = reqwest::Client::new().post(&url).bearer_auth(&key).body(vec![0xffu8, 0xfe]).send().await.unwrap();
    assert_eq!(res.status(), 422);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["field"], "body");
    assert_eq!(balance(&app).await, 997, "a refused request spends nothing");
    let metadata: Value =
        sqlx::query_scalar("SELECT metadata FROM credit_entries WHERE kind = 'spend' ORDER BY id DESC LIMIT 1")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(metadata["operation"], "text.words");
}

/// A body past the endpoint's limit (1 MB) is refused in the API's error shape before anything
/// is read or spent; without a key the call is refused first, and the body is never read.
#[tokio::test]
async fn an_oversized_body_is_refused_before_anything_is_spent() {
    let app = spawn_app().await;
    let key = signed_up_with_key(&app, "big@example.com").await;
    let body = json!({ "text": "a".repeat(1_100_000) }).to_string();
    let res = app.spend(Some(&key), &body, Some("big-1")).await;
    assert_eq!(res.status(), 413);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "body_too_large");
    assert_eq!(app.spend(None, &body, None).await.status(), 401, "no key: refused before the body is read");
    assert_eq!(balance(&app).await, 1000, "nothing spent");
}
