//! Usage billing: every spend mirrored to Polar's meters (the stand-in's) exactly once, over
//! real HTTP, whatever happens between the spend and Polar.

use crate::helpers::*;
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

/// The user's credits meter at the stand-in, as Polar's API answers it.
async fn polar_consumed(app: &TestApp, user: Uuid) -> Option<f64> {
    let page = app.polar_get(&format!("/v1/customer-meters/?external_customer_id={user}")).await;
    page["items"].as_array().unwrap().first().map(|m| m["consumed_units"].as_f64().unwrap())
}

/// Credits the ledger recorded as spent by `user`.
async fn ledger_spent(app: &TestApp, user: Uuid) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce(-sum(amount), 0)::bigint FROM credit_entries WHERE user_id = $1 AND kind = 'spend'",
    )
    .bind(user)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

async fn outbox(app: &TestApp, status: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM usage_outbox WHERE status = $1")
        .bind(status)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Waits until nothing is pending and Polar's meter reads `expected`.
async fn meter_reaches(app: &TestApp, user: Uuid, expected: i64) {
    eventually(&format!("nothing is pending and Polar's meter reads {expected}"), || async {
        let seen = polar_consumed(app, user).await;
        let pending = outbox(app, "pending").await;
        if pending == 0 && seen == Some(expected as f64) {
            Ok(())
        } else {
            Err((seen, pending))
        }
    })
    .await
}

async fn spender(app: &TestApp, email: &str) -> (Uuid, String) {
    let user = app.sign_up(email).await;
    let key = app.create_api_key("usage").await;
    (user, key)
}

async fn spend_chars(app: &TestApp, key: &str, chars: usize) {
    let res = app.spend(Some(key), &json!({ "text": "a".repeat(chars) }).to_string(), None).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
}

#[tokio::test]
async fn every_spend_reaches_polars_meter_once_even_when_sent_again() {
    let app = spawn_app().await;
    let (user, key) = spender(&app, "meter@example.com").await;
    for chars in [10, 2_000, 5_500, 1] {
        spend_chars(&app, &key, chars).await;
    }
    let spent = ledger_spent(&app, user).await;
    assert!(spent >= 4, "spends recorded: {spent}");
    meter_reaches(&app, user, spent).await;
    assert_eq!(outbox(&app, "failed").await, 0);

    // A crash between sending and marking: every row goes out again, and Polar counts
    // them as duplicates, not twice.
    sqlx::query("UPDATE usage_outbox SET status = 'pending', sent_at = NULL").execute(&app.pool).await.unwrap();
    meter_reaches(&app, user, spent).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(polar_consumed(&app, user).await, Some(spent as f64), "a resend is not counted twice");
}

#[tokio::test]
async fn a_spend_that_rolls_back_is_never_mirrored_and_the_outbox_matches_the_ledger() {
    let app = spawn_app_with(&[("FREE_CREDITS", "3")]).await;
    let (user, key) = spender(&app, "rollback@example.com").await;
    spend_chars(&app, &key, 10).await;
    // Out of credits: refused with 402, nothing spent, nothing to mirror.
    let res = app.spend(Some(&key), &json!({ "text": "a".repeat(3000) }).to_string(), None).await;
    assert_eq!(res.status(), 402);
    assert_eq!(ledger_spent(&app, user).await, 1);
    let rows: i64 = sqlx::query_scalar("SELECT coalesce(sum(units), 0)::bigint FROM usage_outbox WHERE user_id = $1")
        .bind(user)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows, ledger_spent(&app, user).await);
    let entries: i64 = sqlx::query_scalar("SELECT count(*) FROM credit_entries WHERE user_id = $1 AND kind = 'spend'")
        .bind(user)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let mirrored: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_outbox WHERE user_id = $1")
        .bind(user)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(entries, mirrored, "one outbox row per spend entry");
}

#[tokio::test]
async fn while_polar_is_down_or_rate_limiting_usage_waits_and_nothing_is_parked() {
    let app = spawn_app().await;
    let (user, key) = spender(&app, "outage-usage@example.com").await;
    assert_eq!(control(&app, "/outage", json!({ "kind": "error", "count": 100000 })).await.status(), 204);
    spend_chars(&app, &key, 10).await;
    spend_chars(&app, &key, 10).await;
    // The shipper tries, fails and defers: the rows stay pending with their attempts counted.
    eventually("the shipper tries", || async {
        let attempts: i32 = sqlx::query_scalar("SELECT coalesce(max(attempts), 0) FROM usage_outbox")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        if attempts > 0 {
            Ok(())
        } else {
            Err(attempts)
        }
    })
    .await;
    assert_eq!(outbox(&app, "failed").await, 0, "an outage parks nothing");
    assert_eq!(outbox(&app, "pending").await, 2);

    // Then a 429 storm with Retry-After: still nothing parked.
    assert_eq!(
        control(&app, "/outage", json!({ "kind": "rate_limit", "retry_after": 1, "count": 100000 })).await.status(),
        204
    );
    sqlx::query("UPDATE usage_outbox SET next_attempt_at = now()").execute(&app.pool).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(outbox(&app, "failed").await, 0, "a 429 parks nothing");

    // Polar is back: everything arrives, once.
    end_outage(&app).await;
    sqlx::query("UPDATE usage_outbox SET next_attempt_at = now()").execute(&app.pool).await.unwrap();
    meter_reaches(&app, user, ledger_spent(&app, user).await).await;
}

#[tokio::test]
async fn two_instances_shipping_one_outbox_send_each_spend_once() {
    let app = spawn_app().await;
    // A second instance on the same database and the same Polar (the first one's stand-in).
    let polar = format!("{}/polar", app.address);
    let other = spawn_app_on(app.pool.clone(), app.db_name.clone(), &[("POLAR_API_URL", &polar)]).await;
    let (user, key) = spender(&app, "two@example.com").await;
    // Forty calls, alternating instances, a few at a time (under the per-account in-flight cap).
    for round in 0..8 {
        let calls = (0..5).map(|i| {
            let (a, b, key) = (&app, &other, key.clone());
            async move {
                let target = if (round * 5 + i) % 2 == 0 { a } else { b };
                spend_chars(target, &key, 1).await;
            }
        });
        futures::future::join_all(calls).await;
    }
    let spent = ledger_spent(&app, user).await;
    assert_eq!(spent, 40);
    // Both instances' shippers run against the one outbox; Polar's meter is the ledger's sum,
    // and the stand-in inserted each event once (no duplicates were needed to get there).
    meter_reaches(&app, user, spent).await;
    let sent_twice: i64 =
        sqlx::query_scalar("SELECT count(*) FROM usage_outbox WHERE attempts > 1").fetch_one(&app.pool).await.unwrap();
    assert_eq!(sent_twice, 0, "SKIP LOCKED: no row was claimed by both");
}

#[tokio::test]
async fn an_event_polar_refuses_is_parked_alone_and_the_rest_of_its_batch_goes_through() {
    let app = spawn_app().await;
    let (user, key) = spender(&app, "refused@example.com").await;
    // Hold the events back (Polar down) so that they leave as one batch.
    control(&app, "/outage", json!({ "kind": "error", "count": 100000 })).await;
    for _ in 0..3 {
        spend_chars(&app, &key, 10).await;
    }
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT external_id, units FROM usage_outbox ORDER BY id").fetch_all(&app.pool).await.unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(control(&app, "/events/refuse", json!({ "external_ids": [rows[1].0] })).await.status(), 204);
    end_outage(&app).await;
    sqlx::query("UPDATE usage_outbox SET next_attempt_at = now()").execute(&app.pool).await.unwrap();
    meter_reaches(&app, user, rows[0].1 + rows[2].1).await;
    let parked: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT external_id, last_error FROM usage_outbox WHERE status = 'failed'")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0].0, rows[1].0);
    assert!(parked[0].1.as_deref().unwrap_or_default().contains("refused"), "{parked:?}");
}

#[tokio::test]
async fn a_kill_9_between_sending_and_marking_sends_again_and_polar_counts_it_once() {
    // Polar (the stand-in of an app of its own) outlives the process that is killed.
    let polar = spawn_app().await;
    let polar_url = format!("{}/polar", polar.address);
    let (pool, db) = fresh_database().await;
    let user: Uuid =
        sqlx::query_scalar("INSERT INTO users (email, password_hash) VALUES ('crash@example.com', 'x') RETURNING id")
            .fetch_one(&pool)
            .await
            .unwrap();
    let res = reqwest::Client::new()
        .post(format!("{polar_url}/v1/customers/"))
        .bearer_auth(standin_token())
        .json(&json!({ "email": "crash@example.com", "external_id": user.to_string() }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let now = chrono::Utc::now();
    let mut conn = pool.acquire().await.unwrap();
    tally::server::ledger::grant_pack(&mut conn, user, "ord_crash", 100, "prod_pack", now).await.unwrap();
    for (i, cost) in [3, 5, 7].into_iter().enumerate() {
        tally::server::ledger::spend(&mut conn, user, cost, &format!("crash-{i}"), &json!({}), now).await.unwrap();
    }
    drop(conn);

    let port = free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", database_url(&db))
        .env("LEPTOS_SITE_ADDR", format!("127.0.0.1:{port}"))
        .env("SESSION_SECRET", "test-session-secret-test-session-secret")
        .env("POLAR_API_URL", &polar_url)
        .env("POLAR_STANDIN_STATE_FILE", "off")
        .env("RUST_LOG", "warn")
        .env("TALLY_TEST_FAILPOINT", "usage-before-commit")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the tally binary");
    let stderr = child.stderr.take().unwrap();
    let reached = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let lines = std::io::BufReader::new(stderr).lines().map_while(Result::ok);
        for line in lines {
            if line.contains("failpoint usage-before-commit reached with 3 events") {
                return true;
            }
        }
        false
    });
    let reached = tokio::time::timeout(Duration::from_secs(60), reached).await.expect("in time").unwrap();
    assert!(reached, "the shipper sent the batch and stopped before committing its mark");
    // Polar has the three events already.
    eventually("Polar has the three events", || async {
        let seen = polar_consumed(&polar, user).await;
        if seen == Some(15.0) {
            Ok(())
        } else {
            Err(seen)
        }
    })
    .await;

    child.kill().unwrap();
    child.wait().unwrap();
    // PostgreSQL drops the killed process's transaction: the rows are pending again.
    eventually("the mark does not survive the kill: the rows are pending again", || async {
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM usage_outbox WHERE status = 'pending' AND attempts = 0")
                .fetch_one(&pool)
                .await
                .unwrap();
        if pending == 3 {
            Ok(())
        } else {
            Err(pending)
        }
    })
    .await;

    // Another instance sends them again; Polar counts them as duplicates.
    let app = spawn_app_on(pool, db, &[("POLAR_API_URL", &polar_url)]).await;
    eventually("another instance sends them again", || async {
        let sent: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_outbox WHERE status = 'sent'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        if sent == 3 {
            Ok(())
        } else {
            Err(sent)
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(polar_consumed(&polar, user).await, Some(15.0), "sent twice, counted once");
}

#[tokio::test]
async fn every_instance_shares_one_budget_of_ingestion_requests() {
    let budget = [("USAGE_INGEST_REQUESTS_PER_MINUTE", "5")];
    let app = spawn_app_with(&budget).await;
    let polar = format!("{}/polar", app.address);
    let other =
        spawn_app_on(app.pool.clone(), app.db_name.clone(), &[budget[0], ("POLAR_API_URL", polar.as_str())]).await;
    let (user, key) = spender(&app, "budget@example.com").await;
    // Another instance has used this minute's budget (and the next one's, so that the test
    // cannot straddle a window).
    sqlx::query(
        "INSERT INTO rate_counters (scope, subject, window_start, count)
         SELECT 'polar_ingest', 'token', to_timestamp(floor(extract(epoch FROM now()) / 60) * 60 + w * 60), 5
           FROM generate_series(0, 1) AS w",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    spend_chars(&app, &key, 10).await;
    spend_chars(&other, &key, 10).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(outbox(&app, "sent").await, 0, "neither instance sends past the shared budget");
    assert_eq!(outbox(&app, "pending").await, 2);
    let deferred: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_outbox WHERE next_attempt_at > now()")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(deferred, 2, "they wait for the next window");

    // A new minute: they go.
    sqlx::query("DELETE FROM rate_counters WHERE scope = 'polar_ingest'").execute(&app.pool).await.unwrap();
    sqlx::query("UPDATE usage_outbox SET next_attempt_at = now()").execute(&app.pool).await.unwrap();
    meter_reaches(&app, user, ledger_spent(&app, user).await).await;
}

#[tokio::test]
async fn reconcile_reports_drift_when_polar_misses_an_event_and_none_when_it_has_all() {
    let app = spawn_app_with(&[("METRICS_TOKEN", "metrics-token-for-tests")]).await;
    let (user, key) = spender(&app, "drift@example.com").await;
    for chars in [3_000, 1] {
        spend_chars(&app, &key, chars).await;
    }
    let spent = ledger_spent(&app, user).await;
    meter_reaches(&app, user, spent).await;
    let polar = tally::server::polar::client::PolarClient::new(
        url::Url::parse(&format!("{}/polar", app.address)).unwrap(),
        tally::server::config::Secret::new(standin_token()),
    );
    let measure = || tally::server::usage::reconcile::measure(&app.pool, &polar, user, chrono::Utc::now());
    let drifts = measure().await.unwrap();
    assert_eq!(drifts[0].event, "credits.spent");
    assert_eq!((drifts[0].ledger, drifts[0].polar, drifts[0].unexplained()), (spent, spent, 0));
    assert_eq!(drifts[1].unexplained(), 0, "no overage on either side");

    // A spend whose event was lost (marked sent while Polar was down, so never delivered):
    // reported as drift, and on /metrics.
    assert_eq!(control(&app, "/outage", json!({ "kind": "error", "count": 100000 })).await.status(), 204);
    let lost = app.spend(Some(&key), &json!({ "text": "lost" }).to_string(), None).await;
    assert_eq!(lost.status(), 200);
    let marked = sqlx::query("UPDATE usage_outbox SET status = 'sent', sent_at = now() WHERE status = 'pending'")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(marked.rows_affected(), 1);
    end_outage(&app).await;
    let drifts = measure().await.unwrap();
    assert_eq!((drifts[0].ledger, drifts[0].polar, drifts[0].in_flight, drifts[0].parked), (spent + 1, spent, 0, 0));
    assert_eq!(drifts[0].unexplained(), 1, "{drifts:?}");
    let metrics = metrics(&app, "metrics-token-for-tests").await;
    assert!(metrics.contains("tally_usage_drift_credits 1\n"), "{metrics}");
    assert!(metrics.contains("tally_usage_drift_accounts 1\n"), "{metrics}");
}

#[tokio::test]
async fn events_carry_the_databases_clock_and_parked_events_can_be_sent_again_once() {
    let app = spawn_app().await;
    let (user, key) = spender(&app, "clock@example.com").await;
    // The stand-in refuses an event dated in the future, as Polar does.
    let ahead = chrono::Utc::now() + chrono::Duration::hours(1);
    let res = reqwest::Client::new()
        .post(format!("{}/polar/v1/events/ingest", app.address))
        .bearer_auth(standin_token())
        .json(&json!({ "events": [{ "name": "credits.spent", "external_customer_id": user.to_string(),
                                    "timestamp": ahead.to_rfc3339(), "metadata": { "credits": 1 } }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["detail"][0]["loc"], json!(["body", "events", 0, "timestamp"]), "{body}");

    // An app server whose clock runs an hour ahead records a spend dated in the future: it is
    // sent stamped with the database's clock, and counted, not parked.
    let mut conn = app.pool.acquire().await.unwrap();
    let spent = tally::server::ledger::spend(&mut conn, user, 5, "clock-ahead", &json!({}), ahead).await.unwrap();
    assert!(matches!(spent, tally::server::ledger::SpendOutcome::Spent { .. }), "{spent:?}");
    meter_reaches(&app, user, 5).await;
    assert_eq!(outbox(&app, "failed").await, 0);

    // An event Polar refused is parked; once the cause is gone an operator sends it again
    // (`tally usage retry`), and Polar counts it once however often it goes out.
    spend_chars(&app, &key, 3000).await;
    let (id, external): (i64, String) =
        sqlx::query_as("SELECT id, external_id FROM usage_outbox ORDER BY id DESC LIMIT 1")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    sqlx::query("UPDATE usage_outbox SET status = 'failed', last_error = 'Event refused.' WHERE id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    use tally::server::usage::shipper::{retry_parked, Retry};
    assert_eq!(retry_parked(&app.pool, &Retry::One("no-such-event".into())).await.unwrap(), 0);
    assert_eq!(retry_parked(&app.pool, &Retry::One(external.clone())).await.unwrap(), 1);
    meter_reaches(&app, user, 8).await;
    // Sent again (as after a crash): still counted once.
    sqlx::query("UPDATE usage_outbox SET status = 'failed' WHERE id = $1").bind(id).execute(&app.pool).await.unwrap();
    assert_eq!(retry_parked(&app.pool, &Retry::All).await.unwrap(), 1);
    meter_reaches(&app, user, 8).await;
    assert_eq!(outbox(&app, "failed").await, 0);
    assert_eq!(ledger_spent(&app, user).await, 8);
}
