//! Usage billing: how fast the outbox reaches Polar and how soon a spend's event is there, and
//! how soon a crossed alert is mailed, against a real PostgreSQL and the stand-in over HTTP
//! (with Polar's 500 requests a minute quota).
//!
//! Run: `scripts/bench usage` (or `cargo bench --features ssr --bench usage_shipping`).
//! Knobs: BENCH_BACKLOG (events queued before the shipper starts, default 100000),
//! BENCH_RATE (spends a second in the steady run, default 500), BENCH_SECONDS (default 20),
//! TEST_DATABASE_URL (admin URL; default: the embedded cluster).
//!
//! What is measured:
//! - **drain**: a backlog of events shipped by one shipper under a budget of 500 requests a
//!   minute (Polar's production quota, all of it): events per second until none is pending.
//! - **steady**: spends at a fixed rate while the shipper runs with the default budget (60
//!   requests a minute): spend → accepted by Polar (`sent_at − occurred_at`), p50/p95/max.
//!   What Polar then takes to recompute its meter (15 s to hours) is Polar's, not measured.
//! - **alerts**: spends crossing 80 % of an allotment on many accounts at once: spend → mail
//!   queued in the outbox (`outgoing_mail.created_at − usage_alerts.fired_at`), p50/p95, with
//!   the alert worker listening as it does in the app.

// Benchmark code: a panic is how it reports a broken setup.
#![allow(clippy::unwrap_used)]

use chrono::Utc;
use serde_json::json;
use sqlx::PgPool;
use std::time::{Duration, Instant};
use tally::server::config::Secret;
use tally::server::polar::client::PolarClient;
use tally::server::standin::{StandIn, StandinConfig};
use uuid::Uuid;

mod support;
use support::{env_num, percentile, BenchDb};

async fn users(pool: &PgPool, n: i64, prefix: &str) -> Vec<Uuid> {
    sqlx::query_scalar(
        "INSERT INTO users (email, password_hash) SELECT $2 || g || '@example.com', 'x' FROM generate_series(1, $1) g RETURNING id",
    )
    .bind(n)
    .bind(prefix)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn pending(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM usage_outbox WHERE status = 'pending'").fetch_one(pool).await.unwrap()
}

#[tokio::main]
async fn main() {
    let backlog = env_num("BENCH_BACKLOG", 100_000) as i64;
    let rate = env_num("BENCH_RATE", 500);
    let secs = env_num("BENCH_SECONDS", 20);
    let db = BenchDb::fresh("tally_usage_bench", 20).await;
    let pool = db.pool.clone();

    // The stand-in, over HTTP, with Polar's production quota.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let polar_url = format!("http://{}", listener.local_addr().unwrap());
    let token = "polar_oat_bench";
    let mut config = StandinConfig::new(&polar_url, token);
    config.rate_limit_per_minute = Some(500);
    let standin = StandIn::start(config);
    tokio::spawn(standin.clone().serve(listener));
    let polar = PolarClient::new(url::Url::parse(&polar_url).unwrap(), Secret::new(token));

    println!(
        "Usage billing benchmark: {} cores, stand-in over HTTP with a 500 requests/min quota",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!();

    // Drain: a backlog, as after an outage, under the whole quota.
    let accounts = users(&pool, 1000, "drain").await;
    sqlx::query(
        "INSERT INTO usage_outbox (user_id, external_id, units, occurred_at)
         SELECT u, 'bench:' || g, 1, now() FROM generate_series(1, $1) g, LATERAL (SELECT ($2::uuid[])[1 + g % 1000] AS u) x",
    )
    .bind(backlog)
    .bind(&accounts)
    .execute(&pool)
    .await
    .unwrap();
    let started = Instant::now();
    let mut requests = 0;
    while pending(&pool).await > 0 {
        match tally::server::usage::shipper::ship_due(&pool, &polar, 500, Utc::now()).await.unwrap() {
            tally::server::usage::shipper::Shipped::Deferred { wait, .. } => {
                tokio::time::sleep(wait.to_std().unwrap_or(Duration::from_millis(100)).min(Duration::from_secs(1)))
                    .await
            }
            tally::server::usage::shipper::Shipped::Nothing => tokio::time::sleep(Duration::from_millis(50)).await,
            tally::server::usage::shipper::Shipped::Sent { .. } => requests += 1,
        }
    }
    let drain_secs = started.elapsed().as_secs_f64();
    println!("| run | events | requests | seconds | events/s |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| drain a backlog (budget 500 requests/min) | {backlog} | {requests} | {drain_secs:.1} | {:.0} |",
        backlog as f64 / drain_secs
    );

    // Steady: spends at `rate` per second with the shipper running on the default budget (a
    // fresh budget: the drain used this minute's).
    sqlx::query("DELETE FROM rate_counters WHERE scope = 'polar_ingest'").execute(&pool).await.unwrap();
    let spenders = users(&pool, 100, "steady").await;
    sqlx::query("SELECT credit_grant(id, 'purchase', 'purchase', 'order:' || id, 1000000000, NULL, 'bench:' || id, '{}', now()) FROM users WHERE email LIKE 'steady%'")
        .execute(&pool)
        .await
        .unwrap();
    let shipper = tokio::spawn(tally::server::usage::shipper::run(pool.clone(), polar.clone(), 60, Default::default()));
    let started = Instant::now();
    let mut n = 0u64;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut tick = tokio::time::interval(interval);
    let mut spends = vec![];
    while started.elapsed() < Duration::from_secs(secs) {
        tick.tick().await;
        let pool = pool.clone();
        let user = spenders[(n % spenders.len() as u64) as usize];
        spends.push(tokio::spawn(async move {
            let mut conn = pool.acquire().await.unwrap();
            tally::server::ledger::spend(&mut conn, user, 1, &format!("steady:{n}"), &json!({}), Utc::now())
                .await
                .unwrap();
        }));
        n += 1;
    }
    for s in spends {
        s.await.unwrap();
    }
    let spend_secs = started.elapsed().as_secs_f64();
    while pending(&pool).await > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shipper.abort();
    let mut lat: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM sent_at - occurred_at)::float8 FROM usage_outbox WHERE external_id LIKE 'steady:%'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    lat.sort_by(|a, b| a.total_cmp(b));
    println!();
    println!("| steady run | spends | spends/s | spend → at Polar p50 s | p95 s | max s |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| {rate}/s for {secs} s, shipper budget 60 requests/min | {} | {:.0} | {:.2} | {:.2} | {:.2} |",
        lat.len(),
        lat.len() as f64 / spend_secs,
        percentile(&lat, 0.5),
        percentile(&lat, 0.95),
        lat.last().copied().unwrap_or(0.0)
    );

    // Alerts: 200 accounts each cross 80 % of a 100-credit allotment, 50 spends a second.
    let mailer = tally::server::mail::Mailer::dev_mailbox("Tally <bench@example.com>").unwrap();
    let alerts = tokio::spawn(tally::server::usage::alerts::run(
        pool.clone(),
        mailer,
        "http://bench.test".into(),
        // The app's default per-account cap (ALERT_MAILS_PER_DAY): each account crosses once here.
        10,
        Default::default(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let crossing = users(&pool, 200, "alert").await;
    let now = Utc::now();
    for u in &crossing {
        let mut conn = pool.acquire().await.unwrap();
        let key = format!("allotment:bench-{u}");
        sqlx::query("SELECT credit_grant($1, 'allotment', 'allotment', $2, 100, $3, $2, '{}', $4)")
            .bind(u)
            .bind(&key)
            .bind(now + chrono::Duration::days(30))
            .bind(now)
            .execute(&mut *conn)
            .await
            .unwrap();
        let period = tally::server::ledger::period::PeriodStart {
            key: &tally::server::ledger::period::key(&format!("bench-{u}"), now - chrono::Duration::days(1)),
            start: now - chrono::Duration::days(1),
            end: now + chrono::Duration::days(29),
            allotment: 100,
            overage: None,
            open: false,
            default_cap_cents: 0,
        };
        tally::server::ledger::period::start(&mut conn, *u, &period).await.unwrap();
        tally::server::ledger::spend(&mut conn, *u, 79, &format!("pre:{u}"), &json!({}), now).await.unwrap();
    }
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for u in &crossing {
        tick.tick().await;
        let mut conn = pool.acquire().await.unwrap();
        tally::server::ledger::spend(&mut conn, *u, 1, &format!("cross:{u}"), &json!({}), Utc::now()).await.unwrap();
    }
    let mut queued = 0;
    for _ in 0..100 {
        queued = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outgoing_mail WHERE kind = 'usage_alert'")
            .fetch_one(&pool)
            .await
            .unwrap();
        if queued == crossing.len() as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    alerts.abort();
    let mut lat: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM m.created_at - a.fired_at)::float8 FROM usage_alerts a
           JOIN outgoing_mail m ON m.user_id = a.user_id AND m.kind = 'usage_alert'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    lat.sort_by(|a, b| a.total_cmp(b));
    println!();
    println!("| alerts | crossed | mailed once | spend → mail queued p50 s | p95 s | max s |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| 200 accounts crossing 80 %, 50 a second | {} | {} | {:.3} | {:.3} | {:.3} |",
        crossing.len(),
        queued,
        percentile(&lat, 0.5),
        percentile(&lat, 0.95),
        lat.last().copied().unwrap_or(0.0)
    );

    db.check_and_drop().await;
}
