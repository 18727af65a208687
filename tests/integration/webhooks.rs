//! The Polar webhook receiver and worker, over real HTTP against a real PostgreSQL.

use crate::helpers::*;
use serde_json::{json, Value};
use std::time::Duration;
use tally::server::polar::webhook_signature::{sign, KeyScheme};
use uuid::Uuid;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async fn app() -> TestApp {
    spawn_app_with(&[
        ("POLAR_WEBHOOK_SECRET", SECRET),
        ("POLAR_PRODUCT_PACK_50", "11111111-1111-4111-8111-111111111150"),
    ])
    .await
}

async fn deliver(app: &TestApp, id: &str, body: &str) -> reqwest::Response {
    app.deliver_webhook(id, body, SECRET, KeyScheme::Legacy, chrono::Utc::now().timestamp()).await
}

async fn user(app: &TestApp) -> Uuid {
    sqlx::query_scalar("INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id")
        .bind(format!("{}@example.com", Uuid::new_v4()))
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// A 50-credit pack's order as Polar sends it: 5.00 net plus 19 % German VAT (5.95 in all);
/// `refunded` is the net refunded so far, with its share of the tax.
pub(crate) fn pack_order(event: &str, order_id: &str, user: Uuid, refunded: i64) -> String {
    let status = match refunded {
        0 => "paid",
        r if r >= 500 => "refunded",
        _ => "partially_refunded",
    };
    json!({
        "type": event,
        "timestamp": "2026-11-22T10:00:00Z",
        "data": {
            "id": order_id, "status": status, "billing_reason": "purchase",
            "subtotal_amount": 500, "net_amount": 500, "tax_amount": 95, "total_amount": 595,
            "refunded_amount": refunded, "refunded_tax_amount": refunded * 95 / 500, "currency": "usd",
            "product_id": "11111111-1111-4111-8111-111111111150",
            "product": { "id": "11111111-1111-4111-8111-111111111150", "name": "50 credits", "metadata": {} },
            "customer": { "id": "c0ffee00-0000-4000-8000-000000000001", "external_id": user.to_string(), "email": "jane@example.com" }
        }
    })
    .to_string()
}

async fn status(app: &TestApp, id: &str) -> Option<String> {
    sqlx::query_scalar("SELECT status FROM webhook_events WHERE webhook_id = $1")
        .bind(id)
        .fetch_optional(&app.pool)
        .await
        .unwrap()
}

/// Waits until the background worker has finished with an event.
async fn processed(app: &TestApp, id: &str) -> String {
    eventually(&format!("event {id} is processed"), || async {
        match status(app, id).await {
            Some(s) if s != "pending" => Ok(s),
            other => Err(other),
        }
    })
    .await
}

async fn credits(app: &TestApp, user: Uuid) -> i64 {
    credits_in(&app.pool, user).await
}

async fn stored(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM webhook_events").fetch_one(&app.pool).await.unwrap()
}

#[tokio::test]
async fn a_paid_pack_delivered_five_times_grants_its_credits_once() {
    let app = app().await;
    let u = user(&app).await;
    let body = pack_order("order.paid", "ord_1", u, 0);
    for _ in 0..5 {
        let res = deliver(&app, "msg_1", &body).await;
        assert_eq!(res.status(), 202);
    }
    assert_eq!(processed(&app, "msg_1").await, "done");
    // The same order under other webhook ids (Polar redelivering as new events) changes nothing.
    deliver(&app, "msg_1b", &body).await;
    assert_eq!(processed(&app, "msg_1b").await, "done");
    assert_eq!(credits(&app, u).await, 50);
    assert_eq!(stored(&app).await, 2);
    assert!(tally::server::ledger::problems(&app.pool, None).await.unwrap().is_empty());
}

#[tokio::test]
async fn both_polar_key_schemes_are_accepted() {
    let app = app().await;
    let now = chrono::Utc::now().timestamp();
    let body = json!({ "type": "checkout.created", "data": {} }).to_string();
    assert_eq!(app.deliver_webhook("msg_legacy", &body, SECRET, KeyScheme::Legacy, now).await.status(), 202);
    assert_eq!(app.deliver_webhook("msg_std", &body, SECRET, KeyScheme::Standard, now).await.status(), 202);
    assert_eq!(processed(&app, "msg_std").await, "skipped", "types without a handler are stored and skipped");
}

#[tokio::test]
async fn bad_signatures_and_timestamps_are_refused_and_nothing_is_stored() {
    let app = app().await;
    let body = json!({ "type": "order.paid", "data": {} }).to_string();
    let now = chrono::Utc::now().timestamp();
    assert_eq!(
        app.deliver_webhook("m1", &body, "whsec_c29tZW90aGVyc2VjcmV0", KeyScheme::Legacy, now).await.status(),
        403
    );
    // A minute past the five-minute tolerance either way (the exact boundary is the unit tests'
    // in webhook_signature.rs): one second past it made this test fail whenever the requests
    // before took a second, as they can under a full parallel suite on two cores.
    let now = chrono::Utc::now().timestamp();
    assert_eq!(app.deliver_webhook("m2", &body, SECRET, KeyScheme::Legacy, now - 360).await.status(), 401);
    let now = chrono::Utc::now().timestamp();
    assert_eq!(app.deliver_webhook("m3", &body, SECRET, KeyScheme::Legacy, now + 360).await.status(), 401);
    // A valid signature over a different body (tampering in transit).
    let sig = sign(SECRET, KeyScheme::Legacy, "m4", now, body.as_bytes()).unwrap();
    let res = reqwest::Client::new()
        .post(format!("{}/api/webhooks/polar", app.address))
        .header("webhook-id", "m4")
        .header("webhook-timestamp", now.to_string())
        .header("webhook-signature", sig)
        .body(body.replace("order.paid", "order.refunded"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let res = reqwest::Client::new()
        .post(format!("{}/api/webhooks/polar", app.address))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "missing headers");
    assert_eq!(stored(&app).await, 0);
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_413() {
    let app = app().await;
    let big = json!({ "type": "order.paid", "data": { "pad": "x".repeat(1_100_000) } }).to_string();
    assert_eq!(deliver(&app, "big", &big).await.status(), 413);
    assert_eq!(stored(&app).await, 0);
}

#[tokio::test]
async fn a_verified_but_unparseable_body_is_acknowledged_and_parked() {
    let app = app().await;
    assert_eq!(deliver(&app, "junk", "not json at all").await.status(), 202);
    let (status, raw): (String, Option<String>) =
        sqlx::query_as("SELECT status, raw_body FROM webhook_events WHERE webhook_id = 'junk'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(status, "failed");
    assert_eq!(raw.as_deref(), Some("not json at all"));
}

#[tokio::test]
async fn a_full_refund_of_a_taxed_order_claws_back_what_is_unspent_once() {
    let app = app().await;
    let u = user(&app).await;
    deliver(&app, "paid", &pack_order("order.paid", "ord_7", u, 0)).await;
    assert_eq!(processed(&app, "paid").await, "done");
    // Refunded in full: 5.00 net (and its 0.95 tax). Polar's refunded_amount is net of tax, so
    // it never reaches total_amount (5.95); comparing the two took every full refund for partial.
    for id in ["refund-a", "refund-b"] {
        deliver(&app, id, &pack_order("order.refunded", "ord_7", u, 500)).await;
        assert_eq!(processed(&app, id).await, "done");
    }
    assert_eq!(credits(&app, u).await, 0);
    assert!(tally::server::ledger::problems(&app.pool, None).await.unwrap().is_empty());
}

#[tokio::test]
async fn partial_refunds_take_back_their_share_of_the_pack_rounded_down() {
    let app = app().await;
    let u = user(&app).await;
    deliver(&app, "paid", &pack_order("order.paid", "ord_8", u, 0)).await;
    processed(&app, "paid").await;
    // 1.05 of 5.00 is 10.5 credits' worth: 10 go back.
    deliver(&app, "partial-1", &pack_order("order.refunded", "ord_8", u, 105)).await;
    assert_eq!(processed(&app, "partial-1").await, "done");
    assert_eq!(credits(&app, u).await, 40);
    // Delivered again, and the refund of the rest: the whole pack, each credit once.
    deliver(&app, "partial-1-again", &pack_order("order.refunded", "ord_8", u, 105)).await;
    processed(&app, "partial-1-again").await;
    assert_eq!(credits(&app, u).await, 40);
    deliver(&app, "rest", &pack_order("order.refunded", "ord_8", u, 500)).await;
    processed(&app, "rest").await;
    assert_eq!(credits(&app, u).await, 0);
    assert!(tally::server::ledger::problems(&app.pool, None).await.unwrap().is_empty());
}

#[tokio::test]
async fn absurd_credit_metadata_is_refused_with_a_clear_error_never_a_wrap() {
    let app = sub_app().await;
    let u = user(&app).await;
    let start = chrono::Utc::now() - chrono::Duration::days(1);
    // A yearly plan whose monthly_credits × 12 would overflow i64, and one whose yearly total
    // is merely out of range.
    for (id, monthly) in [("huge", i64::MAX / 6), ("yearly", 200_000_000)] {
        let mut body: Value = serde_json::from_str(&subscription(
            "subscription.active",
            u,
            "22222222-2222-4222-8222-222222222299",
            "active",
            start,
            start,
            None,
        ))
        .unwrap();
        body["data"]["recurring_interval"] = json!("year");
        body["data"]["product"]["metadata"] = json!({ "plan": "pro", "monthly_credits": monthly });
        deliver(&app, id, &body.to_string()).await;
    }
    let mut body: Value = serde_json::from_str(&pack_order("order.paid", "ord_huge", u, 0)).unwrap();
    body["data"]["product"]["metadata"] = json!({ "credits": "-5" });
    deliver(&app, "negative", &body.to_string()).await;
    for id in ["huge", "yearly", "negative"] {
        let error = eventually(&format!("{id} is tried"), || async {
            let (st, err, attempts): (String, Option<String>, i32) =
                sqlx::query_as("SELECT status, last_error, attempts FROM webhook_events WHERE webhook_id = $1")
                    .bind(id)
                    .fetch_one(&app.pool)
                    .await
                    .unwrap();
            if attempts > 0 {
                Ok((st, err))
            } else {
                Err(st)
            }
        })
        .await;
        assert_eq!(error.0, "pending", "retried, then parked for a person");
        let error = error.1;
        let error = error.unwrap();
        assert!(
            error.contains("credits") && error.contains("not a whole number from 1") || error.contains("× 12"),
            "{id}: {error}"
        );
    }
    assert_eq!(credits(&app, u).await, 0);
    assert_eq!(scheduled_allotment(&app).await, 0);
}

#[tokio::test]
async fn a_refund_delivered_before_its_payment_still_takes_the_pack_back_once() {
    let app = app().await;
    let u = user(&app).await;
    deliver(&app, "refund-first", &pack_order("order.refunded", "ord_9", u, 500)).await;
    assert_eq!(processed(&app, "refund-first").await, "done");
    for id in ["paid-late", "paid-late-again"] {
        deliver(&app, id, &pack_order("order.paid", "ord_9", u, 0)).await;
        assert_eq!(processed(&app, id).await, "done");
    }
    assert_eq!(credits(&app, u).await, 0, "granted, then taken back at once");
    assert!(tally::server::ledger::problems(&app.pool, None).await.unwrap().is_empty());
}

#[tokio::test]
async fn handler_errors_never_reach_polar_and_are_retried_then_parked() {
    let (pool, _) = fresh_database().await;
    let config = test_config(&[("POLAR_WEBHOOK_SECRET", SECRET)]);
    let body: Value = serde_json::from_str(&pack_order("order.paid", "ord_x", Uuid::new_v4(), 0)).unwrap();
    let body = {
        let mut b = body;
        b["data"]["product"]["metadata"]["credits"] = json!(10);
        // A payload the handler cannot apply (no order id): an error to retry, then park.
        b["data"].as_object_mut().unwrap().remove("id");
        b
    };
    sqlx::query("INSERT INTO webhook_events (webhook_id, event_type, payload) VALUES ('orphan', 'order.paid', $1)")
        .bind(&body)
        .execute(&pool)
        .await
        .unwrap();
    let mut now = chrono::Utc::now();
    for attempt in 1..=tally::server::webhooks::worker::MAX_ATTEMPTS {
        assert!(tally::server::webhooks::worker::process_one(&pool, &config, now).await.unwrap());
        let (status, attempts, err): (String, i32, Option<String>) =
            sqlx::query_as("SELECT status, attempts, last_error FROM webhook_events").fetch_one(&pool).await.unwrap();
        assert_eq!(attempts, attempt);
        let err = err.unwrap();
        assert!(
            err.contains("the order cannot be read") && err.contains("`id`"),
            "the error is kept for a human: {err}"
        );
        assert_eq!(status, if attempt == tally::server::webhooks::worker::MAX_ATTEMPTS { "failed" } else { "pending" });
        // What the health page and /metrics count: retrying, then parked; failed this hour.
        let b = tally::server::health::backlogs(&pool).await.unwrap();
        let parked = attempt == tally::server::webhooks::worker::MAX_ATTEMPTS;
        assert_eq!((b.retrying, b.failed, b.failed_last_hour), (i64::from(!parked), i64::from(parked), 1));
        // Not due again until its backoff has passed.
        assert!(!tally::server::webhooks::worker::process_one(&pool, &config, now).await.unwrap());
        now += chrono::Duration::hours(2);
    }
    assert!(
        !tally::server::webhooks::worker::process_one(&pool, &config, now).await.unwrap(),
        "a parked event is left alone"
    );
}

#[tokio::test]
async fn a_handler_that_panics_is_retried_then_parked_not_stuck() {
    let (pool, _) = fresh_database().await;
    let u = user_in(&pool).await;
    sqlx::query("INSERT INTO webhook_events (webhook_id, event_type, payload, received_at) VALUES ('poison', 'tally.test.panic', '{}', now() - interval '1 minute')").execute(&pool).await.unwrap();
    let good: Value = serde_json::from_str(&pack_order("order.paid", "ord_behind", u, 0)).unwrap();
    sqlx::query("INSERT INTO webhook_events (webhook_id, event_type, payload) VALUES ('behind', 'order.paid', $1)")
        .bind(&good)
        .execute(&pool)
        .await
        .unwrap();
    let config = test_config(&[("POLAR_PRODUCT_PACK_50", "11111111-1111-4111-8111-111111111150")]);
    for round in 0..tally::server::webhooks::worker::MAX_ATTEMPTS {
        sqlx::query("UPDATE webhook_events SET next_attempt_at = now() WHERE status = 'pending'")
            .execute(&pool)
            .await
            .unwrap();
        while tally::server::webhooks::worker::process_one(&pool, &config, chrono::Utc::now()).await.unwrap() {}
        let (status, attempts, error): (String, i32, Option<String>) =
            sqlx::query_as("SELECT status, attempts, last_error FROM webhook_events WHERE webhook_id = 'poison'")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(attempts, round + 1, "each panic is a counted attempt");
        assert!(error.unwrap().contains("panicked"));
        if round + 1 == tally::server::webhooks::worker::MAX_ATTEMPTS {
            assert_eq!(status, "failed", "parked after the last attempt");
        }
    }
    let behind: String = sqlx::query_scalar("SELECT status FROM webhook_events WHERE webhook_id = 'behind'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(behind, "done", "the event behind it was not held up");
}

async fn user_in(pool: &sqlx::PgPool) -> Uuid {
    sqlx::query_scalar("INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id")
        .bind(format!("{}@example.com", Uuid::new_v4()))
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_workers_on_one_inbox_apply_each_event_once() {
    let (pool, _) = fresh_database().await;
    let config = std::sync::Arc::new(test_config(&[("POLAR_PRODUCT_PACK_50", "11111111-1111-4111-8111-111111111150")]));
    let u: Uuid =
        sqlx::query_scalar("INSERT INTO users (email, password_hash) VALUES ('w@example.com', 'x') RETURNING id")
            .fetch_one(&pool)
            .await
            .unwrap();
    for i in 0..40 {
        let body: Value = serde_json::from_str(&pack_order("order.paid", &format!("ord_{}", i % 20), u, 0)).unwrap();
        sqlx::query("INSERT INTO webhook_events (webhook_id, event_type, payload) VALUES ($1, 'order.paid', $2)")
            .bind(format!("m{i}"))
            .bind(&body)
            .execute(&pool)
            .await
            .unwrap();
    }
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (pool, config) = (pool.clone(), config.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0;
            while tally::server::webhooks::worker::process_one(&pool, &config, chrono::Utc::now()).await.unwrap() {
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for w in workers {
        total += w.await.unwrap();
    }
    assert_eq!(total, 40, "every event processed exactly once");
    let balance: i64 = sqlx::query_scalar("SELECT balance FROM credit_accounts").fetch_one(&pool).await.unwrap();
    assert_eq!(balance, 20 * 50, "20 distinct orders, each granted once");
    assert!(tally::server::ledger::problems(&pool, None).await.unwrap().is_empty());
}

const PRO: &str = "22222222-2222-4222-8222-222222222201";
const BUSINESS: &str = "22222222-2222-4222-8222-222222222202";

async fn sub_app() -> TestApp {
    spawn_app_with(&[
        ("POLAR_WEBHOOK_SECRET", SECRET),
        ("POLAR_PRODUCT_PRO", PRO),
        ("POLAR_PRODUCT_BUSINESS", BUSINESS),
        ("POLAR_PRODUCT_PACK_50", "11111111-1111-4111-8111-111111111150"),
    ])
    .await
}

fn subscription(
    event: &str,
    user: Uuid,
    product: &str,
    status: &str,
    start: chrono::DateTime<chrono::Utc>,
    modified: chrono::DateTime<chrono::Utc>,
    ended: Option<chrono::DateTime<chrono::Utc>>,
) -> String {
    json!({
        "type": event,
        "timestamp": modified,
        "data": {
            "id": "sub_1", "status": status, "product_id": product, "amount": 1900, "currency": "usd",
            "recurring_interval": "month", "cancel_at_period_end": false,
            "current_period_start": start, "current_period_end": start + chrono::Duration::days(30),
            "created_at": start, "modified_at": modified, "canceled_at": ended, "ended_at": ended,
            "product": { "id": product, "metadata": {} },
            "customer": { "id": "c0ffee00-0000-4000-8000-000000000001", "external_id": user.to_string() }
        }
    })
    .to_string()
}

async fn scheduled_allotment(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT coalesce(sum(amount), 0)::bigint FROM credit_accruals")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_subscription_period_grants_its_allotment_once_however_often_it_is_signalled() {
    let app = sub_app().await;
    let u = user(&app).await;
    let start = chrono::Utc::now() - chrono::Duration::days(2);
    for (i, event) in [
        "subscription.created",
        "subscription.active",
        "subscription.updated",
        "subscription.updated",
        "subscription.active",
    ]
    .iter()
    .enumerate()
    {
        let id = format!("s{i}");
        deliver(
            &app,
            &id,
            &subscription(event, u, PRO, "active", start, start + chrono::Duration::seconds(i as i64), None),
        )
        .await;
        assert_eq!(processed(&app, &id).await, "done");
    }
    assert_eq!(scheduled_allotment(&app).await, 5000, "one Pro allotment for the period");
    let buckets: i64 = sqlx::query_scalar("SELECT count(*) FROM credit_buckets WHERE kind = 'allotment'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(buckets, 1);
    let (plan, status): (String, String) =
        sqlx::query_as("SELECT plan, status FROM subscriptions").fetch_one(&app.pool).await.unwrap();
    assert_eq!((plan.as_str(), status.as_str()), ("pro", "active"));
    let b = tally::server::ledger::balance(&app.pool, u, chrono::Utc::now()).await.unwrap();
    assert!(b.allotment > 0 && b.allotment < 5000, "accrued day by day: {b:?}");
    assert!(tally::server::ledger::problems(&app.pool, None).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_older_event_arriving_late_changes_nothing() {
    let app = sub_app().await;
    let u = user(&app).await;
    let start = chrono::Utc::now() - chrono::Duration::days(1);
    let newer =
        subscription("subscription.updated", u, BUSINESS, "active", start, start + chrono::Duration::hours(5), None);
    let older = subscription("subscription.created", u, PRO, "active", start, start + chrono::Duration::hours(1), None);
    deliver(&app, "new", &newer).await;
    assert_eq!(processed(&app, "new").await, "done");
    deliver(&app, "old", &older).await;
    assert_eq!(processed(&app, "old").await, "skipped");
    let plan: String = sqlx::query_scalar("SELECT plan FROM subscriptions").fetch_one(&app.pool).await.unwrap();
    assert_eq!(plan, "business");
    assert_eq!(scheduled_allotment(&app).await, 15000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_older_state_racing_the_first_stored_one_cannot_overwrite_it() {
    // Two writers of one new subscription (two instances, or the worker against a refresh):
    // the newer state's transaction inserts the row first; the older one waits on it, then
    // must not overwrite it when the newer commits.
    let app = sub_app().await;
    let u = user(&app).await;
    let config = test_config(&[("POLAR_PRODUCT_PRO", PRO), ("POLAR_PRODUCT_BUSINESS", BUSINESS)]);
    let start = chrono::Utc::now() - chrono::Duration::days(1);
    let newer: Value = serde_json::from_str(&subscription(
        "subscription.updated",
        u,
        BUSINESS,
        "active",
        start,
        start + chrono::Duration::hours(5),
        None,
    ))
    .unwrap();
    let older: Value = serde_json::from_str(&subscription(
        "subscription.created",
        u,
        PRO,
        "active",
        start,
        start + chrono::Duration::hours(1),
        None,
    ))
    .unwrap();
    let handle = tally::server::webhooks::handlers::handle;
    let mut first = app.pool.begin().await.unwrap();
    handle(&mut first, &config, "subscription.updated", &newer, chrono::Utc::now()).await.unwrap();
    let (pool, config2) = (app.pool.clone(), config.clone());
    let racer = tokio::spawn(async move {
        let mut tx = pool.begin().await.unwrap();
        let outcome = handle(&mut tx, &config2, "subscription.created", &older, chrono::Utc::now()).await.unwrap();
        tx.commit().await.unwrap();
        outcome
    });
    // Let the older writer reach the row the newer one holds.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!racer.is_finished(), "the older writer waits for the newer one");
    first.commit().await.unwrap();
    assert_eq!(racer.await.unwrap(), tally::server::webhooks::handlers::Outcome::Skipped);
    let (plan, modified): (String, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("SELECT plan, polar_modified_at FROM subscriptions").fetch_one(&app.pool).await.unwrap();
    assert_eq!(plan, "business");
    assert_eq!(modified.timestamp(), (start + chrono::Duration::hours(5)).timestamp());
    assert_eq!(scheduled_allotment(&app).await, 15000);
}

#[tokio::test]
async fn an_upgrade_mid_period_adds_the_rest_of_the_difference_once() {
    let app = sub_app().await;
    let u = user(&app).await;
    let now = chrono::Utc::now();
    let start = now - chrono::Duration::days(15);
    deliver(&app, "pro", &subscription("subscription.active", u, PRO, "active", start, start, None)).await;
    processed(&app, "pro").await;
    let upgrade = subscription("subscription.updated", u, BUSINESS, "active", start, now, None);
    for id in ["up1", "up2", "up3"] {
        deliver(&app, id, &upgrade).await;
        processed(&app, id).await;
    }
    let extra = scheduled_allotment(&app).await - 5000;
    // (15,000 − 5,000) × 15 of 30 days remaining, give or take the seconds the test took.
    assert!((4990..=5000).contains(&extra), "extra {extra}");
    assert!(tally::server::ledger::problems(&app.pool, None).await.unwrap().is_empty());
}

#[tokio::test]
async fn revocation_ends_the_allotment_at_once_and_keeps_purchased_credits() {
    let app = sub_app().await;
    let u = user(&app).await;
    let now = chrono::Utc::now();
    let start = now - chrono::Duration::days(3);
    deliver(&app, "a", &subscription("subscription.active", u, PRO, "active", start, start, None)).await;
    processed(&app, "a").await;
    deliver(&app, "p", &pack_order("order.paid", "ord_p", u, 0)).await;
    processed(&app, "p").await;
    assert!(tally::server::ledger::balance(&app.pool, u, now).await.unwrap().allotment > 0);
    deliver(&app, "r", &subscription("subscription.revoked", u, PRO, "canceled", start, now, Some(now))).await;
    assert_eq!(processed(&app, "r").await, "done");
    let b = tally::server::ledger::balance(&app.pool, u, chrono::Utc::now()).await.unwrap();
    assert_eq!((b.allotment, b.purchased, b.pending_allotment), (0, 50, 0));
    let status: String = sqlx::query_scalar("SELECT status FROM subscriptions").fetch_one(&app.pool).await.unwrap();
    assert_eq!(status, "canceled");
    assert!(tally::server::ledger::problems(&app.pool, None).await.unwrap().is_empty());
}

#[tokio::test]
async fn events_for_customers_who_are_not_tally_users_are_acknowledged_and_skipped() {
    let (pool, _) = fresh_database().await;
    let config = test_config(&[("POLAR_WEBHOOK_SECRET", SECRET)]);
    for (i, external) in ["not-a-uuid", &Uuid::new_v4().to_string()].into_iter().enumerate() {
        let mut body: Value =
            serde_json::from_str(&pack_order("order.paid", &format!("ord_{i}"), Uuid::new_v4(), 0)).unwrap();
        body["data"]["customer"]["external_id"] = json!(external);
        body["data"]["product"]["metadata"]["credits"] = json!(10);
        sqlx::query("INSERT INTO webhook_events (webhook_id, event_type, payload) VALUES ($1, 'order.paid', $2)")
            .bind(format!("x{i}"))
            .bind(&body)
            .execute(&pool)
            .await
            .unwrap();
    }
    while tally::server::webhooks::worker::process_one(&pool, &config, chrono::Utc::now()).await.unwrap() {}
    let statuses: Vec<(String, i32)> =
        sqlx::query_as("SELECT status, attempts FROM webhook_events ORDER BY webhook_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(statuses, vec![("skipped".to_string(), 1), ("skipped".to_string(), 1)]);
}

/// Signs with the official `standardwebhooks` npm package (installed in end2end/ by
/// scripts/test): the standard scheme as `new Webhook(secret)`, and Polar's legacy scheme the
/// way Polar's own 0.x SDKs call it, `new Webhook(base64(utf8(secret)))`.
fn npm_signatures(secret: &str, id: &str, ts: i64, body: &str) -> (String, String) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("end2end");
    assert!(dir.join("node_modules/standardwebhooks").exists(), "run `npm ci` in end2end/ first (scripts/test does)");
    let script = r#"
        const { Webhook } = require("standardwebhooks");
        const [secret, id, ts, body] = process.argv.slice(1);
        const at = new Date(Number(ts) * 1000);
        const standard = new Webhook(secret).sign(id, at, body);
        const legacy = new Webhook(Buffer.from(secret, "utf-8").toString("base64")).sign(id, at, body);
        console.log(JSON.stringify({ standard, legacy }));
    "#;
    let out = std::process::Command::new("node")
        .arg("-e")
        .arg(script)
        .args([secret, id, &ts.to_string(), body])
        .current_dir(dir)
        .output()
        .expect("run node");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    (v["standard"].as_str().unwrap().to_string(), v["legacy"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn signatures_made_by_the_official_standardwebhooks_package_verify_under_both_schemes() {
    let app = app().await;
    let body = json!({ "type": "checkout.updated", "data": { "id": "x" } }).to_string();
    let ts = chrono::Utc::now().timestamp();
    let (standard, legacy) = npm_signatures(SECRET, "npm-1", ts, &body);
    for (id, sig, expected) in [("npm-1", &standard, 202), ("npm-1", &legacy, 202), ("npm-2", &standard, 403)] {
        // npm-2: a signature made for another message id does not verify.
        let res = reqwest::Client::new()
            .post(format!("{}/api/webhooks/polar", app.address))
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig.as_str())
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), expected, "{id} {sig}");
    }
    // Ours and the package's agree byte for byte.
    assert_eq!(sign(SECRET, KeyScheme::Standard, "npm-1", ts, body.as_bytes()).unwrap(), standard);
    assert_eq!(sign(SECRET, KeyScheme::Legacy, "npm-1", ts, body.as_bytes()).unwrap(), legacy);
}

/// The real server binary in a child process, on database `db`, with the failpoint that
/// stops its worker between an event's effects and their commit.
fn spawn_binary_paused_before_commit(db: &str) -> (std::process::Child, String, std::sync::mpsc::Receiver<String>) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", database_url(db))
        .env("LEPTOS_SITE_ADDR", format!("127.0.0.1:{port}"))
        .env("SESSION_SECRET", "test-session-secret-test-session-secret")
        .env("POLAR_WEBHOOK_SECRET", SECRET)
        .env("POLAR_PRODUCT_PACK_50", "11111111-1111-4111-8111-111111111150")
        .env("POLAR_STANDIN_STATE_FILE", "off")
        .env("RUST_LOG", "warn")
        .env("TALLY_TEST_FAILPOINT", "worker-before-commit")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the tally binary");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, format!("http://127.0.0.1:{port}"), rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_between_effect_and_done_mark_loses_nothing_and_applies_nothing_twice() {
    let (pool, db) = fresh_database().await;
    let (mut child, address, lines) = spawn_binary_paused_before_commit(&db);
    eventually_within(Duration::from_secs(30), "the binary comes up", || async {
        match reqwest::get(format!("{address}/readyz")).await {
            Ok(res) if res.status() == 200 => Ok(()),
            Ok(res) => Err(res.status().to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    let crashed =
        TestApp { address: address.clone(), pool: pool.clone(), client: reqwest::Client::new(), db_name: db.clone() };
    let u = user(&crashed).await;
    let body = pack_order("order.paid", "ord_crash", u, 0);
    assert_eq!(deliver(&crashed, "msg_crash", &body).await.status(), 202, "acknowledged before processing");

    // The worker has written the grant and the done-mark, and stopped before committing.
    let reached = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            if line.contains("failpoint worker-before-commit reached for msg_crash") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap();
    assert!(reached, "the worker reached the failpoint");
    let in_flight: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state = 'idle in transaction'",
    )
    .bind(&db)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(in_flight >= 1, "the event's transaction is open in the killed process");

    // kill -9: no destructor, no rollback from the process; PostgreSQL drops the transaction.
    child.kill().unwrap();
    let exit = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(exit.signal(), Some(9));
    eventually("PostgreSQL drops the killed process's transaction", || async {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state = 'idle in transaction'",
        )
        .bind(&db)
        .fetch_one(&pool)
        .await
        .unwrap();
        if open == 0 {
            Ok(())
        } else {
            Err(open)
        }
    })
    .await;
    let attempts: (String, i32) =
        sqlx::query_as("SELECT status, attempts FROM webhook_events WHERE webhook_id = 'msg_crash'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(attempts, ("pending".to_string(), 0), "the event is still stored, untouched");
    assert_eq!(credits(&crashed, u).await, 0, "and none of its effect survived");

    // A new instance on the same database processes it: exactly once.
    let app = spawn_app_on(
        pool,
        db,
        &[("POLAR_WEBHOOK_SECRET", SECRET), ("POLAR_PRODUCT_PACK_50", "11111111-1111-4111-8111-111111111150")],
    )
    .await;
    assert_eq!(processed(&app, "msg_crash").await, "done");
    assert_eq!(deliver(&app, "msg_crash", &body).await.status(), 202, "Polar's retry of it");
    assert_eq!(credits(&app, u).await, 50);
    let entries: i64 = sqlx::query_scalar("SELECT count(*) FROM credit_entries WHERE user_id = $1")
        .bind(u)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(entries, 1);
    assert!(tally::server::ledger::problems(&app.pool, None).await.unwrap().is_empty());
}

/// Batched claims: one transaction handles many events, each in a savepoint of its own. A
/// failing event in the middle rolls back alone and is recorded for a retry; the events
/// before and after it are applied and marked done in the same commit.
#[tokio::test]
async fn a_failing_event_in_a_batch_never_undoes_the_others() {
    let (pool, _) = fresh_database().await;
    let u = user_in(&pool).await;
    let config = test_config(&[("POLAR_PRODUCT_PACK_50", "11111111-1111-4111-8111-111111111150")]);
    for (i, (id, event_type, payload)) in [
        ("first", "order.paid", serde_json::from_str::<Value>(&pack_order("order.paid", "ord_a", u, 0)).unwrap()),
        ("poison", "tally.test.panic", json!({})),
        ("unreadable", "order.paid", json!({ "type": "order.paid", "data": { "status": "paid" } })),
        ("last", "order.paid", serde_json::from_str::<Value>(&pack_order("order.paid", "ord_b", u, 0)).unwrap()),
    ]
    .into_iter()
    .enumerate()
    {
        sqlx::query("INSERT INTO webhook_events (webhook_id, event_type, payload, user_id, received_at) VALUES ($1, $2, $3, $4, now() - make_interval(secs => 10 - $5))")
            .bind(id)
            .bind(event_type)
            .bind(&payload)
            .bind(tally::server::webhooks::handlers::event_user(event_type, &payload))
            .bind(i as f64)
            .execute(&pool)
            .await
            .unwrap();
    }
    let now = chrono::Utc::now();
    let claimed = tally::server::webhooks::worker::process_batch(&pool, &config, None, now, 32).await.unwrap();
    assert_eq!(claimed, 4, "one claim took all four");
    let rows: Vec<(String, String, i32)> =
        sqlx::query_as("SELECT webhook_id, status, attempts FROM webhook_events ORDER BY received_at")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![
            ("first".into(), "done".into(), 1),
            ("poison".into(), "pending".into(), 1),
            ("unreadable".into(), "pending".into(), 1),
            ("last".into(), "done".into(), 1),
        ]
    );
    assert_eq!(credits_in(&pool, u).await, 100, "both packs granted, once");
    assert_eq!(
        tally::server::webhooks::worker::process_batch(&pool, &config, None, now, 32).await.unwrap(),
        0,
        "the failed ones wait for their backoff"
    );
    assert!(tally::server::ledger::problems(&pool, None).await.unwrap().is_empty());
}

async fn credits_in(pool: &sqlx::PgPool, user: Uuid) -> i64 {
    sqlx::query_scalar("SELECT coalesce((SELECT balance FROM credit_accounts WHERE user_id = $1), 0)")
        .bind(user)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Four workers claiming batches of 8 from one inbox of 400 events for 4 customers, whose
/// batches name the same customers in opposite orders (orders delivered twice under other
/// ids): every event is applied once, every order granted once, and no worker deadlocks
/// another (a deadlock would show as a retried event).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_claiming_batches_apply_each_event_once_without_deadlocks() {
    let (pool, _) = fresh_database().await;
    let config = std::sync::Arc::new(test_config(&[("POLAR_PRODUCT_PACK_50", "11111111-1111-4111-8111-111111111150")]));
    let mut users = Vec::new();
    for _ in 0..4 {
        users.push(user_in(&pool).await);
    }
    for i in 0..400 {
        // 200 orders of 4 customers, each delivered twice (the second time under another
        // webhook id). In each run of 8 events the customers come in turn, one run ascending
        // (0 1 2 3 0 1 2 3), the next descending: batches claimed side by side name the same
        // customers in opposite orders.
        let order = i % 200;
        let turn = order % 4;
        let customer = if (order / 8) % 2 == 0 { turn } else { 3 - turn };
        let body: Value =
            serde_json::from_str(&pack_order("order.paid", &format!("ord_{order}"), users[customer], 0)).unwrap();
        sqlx::query(
            "INSERT INTO webhook_events (webhook_id, event_type, payload, user_id) VALUES ($1, 'order.paid', $2, $3)",
        )
        .bind(format!("m{i}"))
        .bind(&body)
        .bind(tally::server::webhooks::handlers::event_user("order.paid", &body))
        .execute(&pool)
        .await
        .unwrap();
    }
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (pool, config) = (pool.clone(), config.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0;
            loop {
                match tally::server::webhooks::worker::process_batch(&pool, &config, None, chrono::Utc::now(), 8)
                    .await
                    .unwrap()
                {
                    0 => return n,
                    k => n += k,
                }
            }
        }));
    }
    let mut total = 0;
    for w in workers {
        total += w.await.unwrap();
    }
    assert_eq!(total, 400, "every event claimed exactly once");
    let (done, retried): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'done'), count(*) FILTER (WHERE attempts > 1) FROM webhook_events",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((done, retried), (400, 0), "all applied at the first attempt: no deadlock, no failure");
    let (entries, credits): (i64, i64) =
        sqlx::query_as("SELECT count(*), sum(amount)::bigint FROM credit_entries WHERE kind = 'purchase'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((entries, credits), (200, 200 * 50), "200 distinct orders, each granted once");
    assert!(tally::server::ledger::problems(&pool, None).await.unwrap().is_empty());
}

/// The claim reads the first due rows of an index in its own order: no sort of the backlog,
/// however long (a backlog of n events used to drain in O(n²)).
#[tokio::test]
async fn the_claim_reads_an_index_in_its_order_not_a_sorted_backlog() {
    let (pool, _) = fresh_database().await;
    sqlx::query(
        "INSERT INTO webhook_events (webhook_id, event_type, payload, received_at)
         SELECT 'm' || g, 'checkout.updated', '{}', now() - make_interval(secs => g) FROM generate_series(1, 20000) g",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("UPDATE webhook_events SET status = 'done' WHERE webhook_id LIKE 'm1%'").execute(&pool).await.unwrap();
    sqlx::query("ANALYZE webhook_events").execute(&pool).await.unwrap();
    let claim = tally::server::webhooks::worker::CLAIM_SQL.replace("$1", "now()").replace("$2", "32");
    let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {claim}")).fetch_all(&pool).await.unwrap();
    let plan = plan.join("\n");
    assert!(plan.contains("webhook_events_claim_idx"), "{plan}");
    assert!(!plan.contains("Sort"), "{plan}");
}
