//! Webhook bursts: how fast a burst of Polar webhooks is received and applied, and that none
//! is lost or applied twice, against a real PostgreSQL and the app as built for release
//! (`cargo bench` compiles it with optimizations), over real HTTP.
//!
//! Run: `scripts/bench webhooks` (or `cargo bench --features ssr --bench webhook_burst`).
//! Knobs: BENCH_EVENTS (10000), BENCH_CUSTOMERS (1000), BENCH_RATE (events sent a second,
//! 500), BENCH_SENDERS (concurrent senders, 64), TEST_DATABASE_URL (admin URL; default: the
//! embedded cluster), WEBHOOK_WORKERS / WEBHOOK_BATCH (the app's own settings).
//!
//! A renewal day, as Polar makes it: each customer gets, in this order, `subscription.created`,
//! then packs paid (`order.paid`), `subscription.updated` and `customer.state_changed` in turn,
//! customers interleaved (every customer's first event, then every customer's second…), each
//! signed under the Standard Webhooks scheme, sent by BENCH_SENDERS senders at BENCH_RATE a
//! second. Twice: to one app instance, then to two instances on one database (the senders
//! alternate between them). Reported per run:
//! - **receive**: events acknowledged a second (202s) over the send;
//! - **drain**: events applied a second, from the first receipt to the last commit;
//! - **applied − received** (`processed_at − received_at`, `processed_at` being taken as the
//!   worker's transaction commits), p50/p95/max, over the events received after the first
//!   second (the send rate settled), beside the goal (p95 < 500 ms);
//! - **exactly once**: every event stored once and applied (`done` or `skipped`), none
//!   pending or failed; the credits granted equal the packs paid (one purchase entry per
//!   order, 50 credits each); `credit_ledger_problems()` empty.

// Benchmark code: a panic is how it reports a broken setup.
#![allow(clippy::unwrap_used)]

use chrono::Utc;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally::server::config::Config;
use tally::server::polar::webhook_signature::{sign, KeyScheme};
use uuid::Uuid;

mod support;
use support::{env_num, percentile, BenchDb};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const PACK: &str = "11111111-1111-4111-8111-111111111150";
const PRO: &str = "22222222-2222-4222-8222-222222222201";
/// Credits of one pack (the catalogue's 50-credit pack).
const PACK_CREDITS: i64 = 50;

fn config() -> Config {
    let mut env: HashMap<String, String> = HashMap::new();
    for (k, v) in [
        ("LEPTOS_SITE_ADDR", "127.0.0.1:0"),
        ("SESSION_SECRET", "bench-session-secret-bench-session-secret"),
        ("POLAR_STANDIN_STATE_FILE", "off"),
        ("POLAR_WEBHOOK_SECRET", SECRET),
        ("POLAR_PRODUCT_PACK_50", PACK),
        ("POLAR_PRODUCT_PRO", PRO),
        ("POLAR_PRODUCT_BUSINESS", "22222222-2222-4222-8222-222222222202"),
    ] {
        env.insert(k.into(), v.into());
    }
    for k in ["WEBHOOK_WORKERS", "WEBHOOK_BATCH"] {
        if let Ok(v) = std::env::var(k) {
            env.insert(k.into(), v);
        }
    }
    Config::from_source(&env, || unreachable!("SESSION_SECRET is set")).unwrap()
}

/// Customer `user`'s `k`-th event of the burst: (event type, body).
fn event(k: usize, user: Uuid, customer: usize, now: chrono::DateTime<Utc>) -> (String, Value) {
    let customer_json = json!({
        "id": format!("c0ffee00-0000-4000-8000-{customer:012}"), "external_id": user.to_string(),
        "email": format!("bench{customer}@example.com")
    });
    let start = now - chrono::Duration::days(1);
    let subscription = |event: &str, modified: i64| {
        json!({
            "type": event, "timestamp": now,
            "data": {
                "id": format!("sub_{customer}"), "status": "active", "product_id": PRO, "amount": 1900, "currency": "usd",
                "recurring_interval": "month", "cancel_at_period_end": false,
                "current_period_start": start, "current_period_end": start + chrono::Duration::days(30),
                "created_at": start, "modified_at": start + chrono::Duration::seconds(modified),
                "canceled_at": null, "ended_at": null,
                "product": { "id": PRO, "metadata": {} }, "customer": customer_json
            }
        })
    };
    let body = match k % 3 {
        _ if k == 0 => subscription("subscription.created", 0),
        1 => json!({
            "type": "order.paid", "timestamp": now,
            "data": {
                "id": format!("ord_{customer}_{k}"), "status": "paid", "billing_reason": "purchase",
                "subtotal_amount": 500, "net_amount": 500, "tax_amount": 95, "total_amount": 595,
                "refunded_amount": 0, "refunded_tax_amount": 0, "currency": "usd", "product_id": PACK,
                "product": { "id": PACK, "name": "50 credits", "metadata": {} }, "customer": customer_json
            }
        }),
        2 => subscription("subscription.updated", k as i64),
        _ => json!({ "type": "customer.state_changed", "timestamp": now, "data": customer_json }),
    };
    (body["type"].as_str().unwrap().to_string(), body)
}

struct Run {
    received_per_sec: f64,
    drained_per_sec: f64,
    p50: f64,
    p95: f64,
    max: f64,
    measured: usize,
    lost: i64,
    doubled: i64,
    retried: i64,
    packs: i64,
    pack_credits: i64,
    problems: usize,
}

async fn run(instances: usize, events: usize, customers: usize, rate: u64, senders: usize) -> Run {
    let db = BenchDb::fresh("tally_webhook_bench", 40).await;
    let pool = db.pool.clone();
    let users: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO users (email, password_hash) SELECT 'bench' || g || '@example.com', 'x' FROM generate_series(1, $1) g RETURNING id",
    )
    .bind(customers as i64)
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut addresses = Vec::new();
    for _ in 0..instances {
        // Each instance its own pool, as separate processes would have.
        let own = sqlx::postgres::PgPoolOptions::new().max_connections(20).connect(&db.url).await.unwrap();
        let app = tally::server::startup::Application::build(config(), own).await.unwrap();
        addresses.push(format!("http://127.0.0.1:{}/api/webhooks/polar", app.port()));
        tokio::spawn(app.run_until_stopped());
    }

    // Interleaved: every customer's k-th event before anyone's (k+1)-th.
    let now = Utc::now();
    let burst: Arc<Vec<(String, String)>> = Arc::new(
        (0..events)
            .map(|i| {
                let (customer, k) = (i % customers, i / customers);
                let (_, body) = event(k, users[customer], customer, now);
                (format!("msg_{customer}_{k}"), body.to_string())
            })
            .collect(),
    );
    let packs = (0..events).filter(|i| i / customers > 0 && (i / customers) % 3 == 1).count() as i64;

    let next = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let client = reqwest::Client::builder().pool_max_idle_per_host(senders).build().unwrap();
    let mut tasks = Vec::new();
    for _ in 0..senders {
        let (burst, next, accepted, client, addresses) =
            (burst.clone(), next.clone(), accepted.clone(), client.clone(), addresses.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= burst.len() {
                    return;
                }
                // A fixed rate: event i leaves at i / rate seconds.
                tokio::time::sleep_until(tokio::time::Instant::from_std(started + interval * i as u32)).await;
                let (id, body) = &burst[i];
                let ts = Utc::now().timestamp();
                let signature = sign(SECRET, KeyScheme::Standard, id, ts, body.as_bytes()).unwrap();
                let res = client
                    .post(&addresses[i % addresses.len()])
                    .header("content-type", "application/json")
                    .header("webhook-id", id)
                    .header("webhook-timestamp", ts.to_string())
                    .header("webhook-signature", signature)
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 202, "{id}");
                accepted.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let sent_in = started.elapsed().as_secs_f64();
    // Wait for the workers to apply everything (or give up after two minutes).
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_events WHERE status = 'pending'")
            .fetch_one(&pool)
            .await
            .unwrap();
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (first, last): (chrono::DateTime<Utc>, chrono::DateTime<Utc>) =
        sqlx::query_as("SELECT min(received_at), max(processed_at) FROM webhook_events")
            .fetch_one(&pool)
            .await
            .unwrap();
    let mut lag: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM processed_at - received_at)::float8 * 1000 FROM webhook_events
          WHERE processed_at IS NOT NULL AND received_at >= $1 ORDER BY 1",
    )
    .bind(first + chrono::Duration::seconds(1))
    .fetch_all(&pool)
    .await
    .unwrap();
    lag.sort_by(|a, b| a.total_cmp(b));
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_events WHERE status IN ('done', 'skipped')")
        .fetch_one(&pool)
        .await
        .unwrap();
    let retried: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_events WHERE attempts > 1").fetch_one(&pool).await.unwrap();
    // One purchase entry per pack order sent: more is a double grant, fewer a lost one.
    let (entries, credits): (i64, i64) =
        sqlx::query_as("SELECT count(*), coalesce(sum(amount), 0)::bigint FROM credit_entries WHERE kind = 'purchase'")
            .fetch_one(&pool)
            .await
            .unwrap();
    let problems = tally::server::ledger::problems(&pool, None).await.unwrap().len();
    let drained = stored as f64 / ((last - first).num_milliseconds() as f64 / 1000.0).max(0.001);
    let result = Run {
        received_per_sec: accepted.load(Ordering::Relaxed) as f64 / sent_in,
        drained_per_sec: drained,
        p50: percentile(&lag, 0.50),
        p95: percentile(&lag, 0.95),
        max: lag.last().copied().unwrap_or(0.0),
        measured: lag.len(),
        lost: (events as i64 - stored) + (packs - entries).max(0),
        doubled: (entries - packs).max(0),
        retried,
        packs,
        pack_credits: credits,
        problems,
    };
    db.check_and_drop().await;
    result
}

#[tokio::main]
async fn main() {
    let events = env_num("BENCH_EVENTS", 10_000) as usize;
    let customers = env_num("BENCH_CUSTOMERS", 1_000) as usize;
    let rate = env_num("BENCH_RATE", 500);
    let senders = env_num("BENCH_SENDERS", 64) as usize;
    let c = config();
    println!(
        "Webhook burst: {events} events for {customers} customers, {senders} senders at {rate} events/s; \
         {} workers per instance, batches of {}; {} cores",
        c.webhook_workers,
        c.webhook_batch,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    for instances in [1, 2] {
        let r = run(instances, events, customers, rate, senders).await;
        println!();
        println!("{instances} instance(s) on one database");
        println!("  received            {:>9.0} events/s", r.received_per_sec);
        println!("  drained             {:>9.0} events/s", r.drained_per_sec);
        println!(
            "  applied − received  p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms over {} events   goal: p95 < 500 ms",
            r.p50, r.p95, r.max, r.measured
        );
        println!(
            "  exactly once        lost {}, doubled {}, retried {}; {} packs paid, {} credits granted ({} expected); ledger problems {}   goal: 0 lost, 0 doubled",
            r.lost,
            r.doubled,
            r.retried,
            r.packs,
            r.pack_credits,
            r.packs * PACK_CREDITS,
            r.problems
        );
    }
}
