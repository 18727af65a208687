//! Spend throughput and latency against a real PostgreSQL, next to the database's own ceiling
//! for equivalent work measured by pgbench in the same run.
//!
//! Run: `scripts/bench` (or `cargo bench --features ssr --bench ledger_spend`).
//! Each workload runs alone (one transaction per spend) and batched (the metered API's group
//! commit, `metered::spender`), each workload also at 64 clients.
//! Knobs: BENCH_SECONDS (default 10), BENCH_CLIENTS (default 16), BENCH_ACCOUNTS (10000),
//! BENCH_SPEND_BATCH (128), BENCH_IN_FLIGHT (2), BENCH_WORKERS (the runtime's worker threads;
//! default one per core, as the app's), BENCH_ONLY (only the rows whose "workload, N clients"
//! contains it, e.g. `accounts, 16`; the usage outbox's rows only if it contains `outbox`),
//! TEST_DATABASE_URL (admin URL; default: the embedded cluster).
//!
//! "Equivalent work" for the ceiling: per spend, one round trip running a conditional
//! `UPDATE … SET balance = balance - 1 WHERE id = $1 AND balance >= 1` and an `INSERT` of an
//! entry with a unique key (one statement, a CTE), with the same clients, duration and
//! durability (synchronous_commit as the server has it).

// Benchmark code: a panic is how it reports a broken setup.
#![allow(clippy::unwrap_used)]

use chrono::Utc;
use serde_json::json;
use sqlx::PgPool;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally::server::ledger::batch::Spend;
use tally::server::metered::spender::Spender;
use uuid::Uuid;

mod support;
use support::{env_num, percentile, BenchDb};

struct Run {
    /// The run's number: its spends' keys start `bench:<run>:`.
    run: u64,
    ops: u64,
    secs: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl Run {
    fn tps(&self) -> f64 {
        self.ops as f64 / self.secs
    }
}

/// CPU seconds this process has used (user + system), from /proc.
fn own_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// How the benchmark's clients spend: each on a connection of its own, one transaction per
/// spend (as the metered API with `SPEND_BATCH=0`), or through the app's batching [`Spender`].
#[derive(Clone)]
enum Mode {
    Alone,
    Batched(Spender),
}

async fn run_ours(pool: &PgPool, users: Arc<Vec<Uuid>>, hot: bool, clients: u64, secs: u64, mode: Mode) -> Run {
    // Every run spends under keys of its own (a repeated key is a replay, not a spend).
    static RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let run = RUN.fetch_add(1, Ordering::Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let start = Instant::now();
    for c in 0..clients {
        let pool = pool.clone();
        let users = users.clone();
        let stop = stop.clone();
        let mode = mode.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut conn = match mode {
                Mode::Alone => Some(pool.acquire().await.unwrap()),
                Mode::Batched(_) => None,
            };
            let mut i: u64 = 0;
            let mut rng = c.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            while !stop.load(Ordering::Relaxed) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let user = if hot { users[0] } else { users[(rng % users.len() as u64) as usize] };
                let key = format!("bench:{run}:{hot}:{c}:{i}");
                let t0 = Instant::now();
                let out = match (&mode, conn.as_mut()) {
                    (Mode::Batched(spender), _) => {
                        let spend = Spend { user_id: user, cost: 1, key, metadata: json!({}) };
                        spender.spend(spend, None).await.unwrap()
                    }
                    (Mode::Alone, Some(conn)) => {
                        tally::server::ledger::spend(conn, user, 1, &key, &json!({}), Utc::now()).await.unwrap()
                    }
                    (Mode::Alone, None) => unreachable!("a connection is taken for Alone"),
                };
                assert!(matches!(out, tally::server::ledger::SpendOutcome::Spent { .. }), "{out:?}");
                lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                i += 1;
            }
            lat
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Run { run, ops: all.len() as u64, secs: elapsed, p50_ms: percentile(&all, 0.5), p99_ms: percentile(&all, 0.99) }
}

fn main() {
    // BENCH_WORKERS: the runtime's worker threads (default: one per core, as the app's).
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = std::env::var("BENCH_WORKERS").ok().and_then(|w| w.parse().ok()) {
        runtime.worker_threads(workers);
    }
    runtime.enable_all().build().unwrap().block_on(bench());
}

async fn bench() {
    let secs = env_num("BENCH_SECONDS", 10);
    let clients = env_num("BENCH_CLIENTS", 16);
    let accounts = env_num("BENCH_ACCOUNTS", 10_000);
    // Connections for 64 clients spending alone, and for the batcher.
    let db = BenchDb::fresh("tally_bench", clients.max(64) as u32 + 4).await;
    let (pool, url) = (db.pool.clone(), db.url.clone());

    let sync: String = sqlx::query_scalar("SHOW synchronous_commit").fetch_one(&pool).await.unwrap();
    let fsync: String = sqlx::query_scalar("SHOW fsync").fetch_one(&pool).await.unwrap();
    let version: String = sqlx::query_scalar("SHOW server_version").fetch_one(&pool).await.unwrap();

    let users = support::seed_accounts(&pool, accounts).await;
    let users = Arc::new(users);
    let batch_max = env_num("BENCH_SPEND_BATCH", 128) as usize;
    let spender = Spender::batched_with(&pool, batch_max, env_num("BENCH_IN_FLIGHT", 2) as usize);
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    println!("Tally spend benchmark: PostgreSQL {version}, synchronous_commit={sync}, fsync={fsync}, {secs} s per run, {accounts} accounts, batches of at most {batch_max}, {} cores", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));
    println!();
    println!(
        "| workload | clients | Tally | spends/s | p50 ms | p99 ms | ceiling tx/s (pgbench) | p50 ms | p99 ms | Tally ÷ ceiling |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    let spread = format!("spread over {accounts} accounts");
    let workloads = [
        ("one hot account", true, clients),
        (&*spread, false, clients),
        ("one hot account", true, 64),
        (&*spread, false, 64),
    ];
    for (name, hot, clients) in workloads {
        if !only.is_empty() && !format!("{name}, {clients} clients").contains(only.as_str()) {
            continue;
        }
        let ceiling = support::pgbench(&url, &support::ceiling_script(hot, accounts), clients, secs);
        for (label, mode) in [("alone", Mode::Alone), ("batched", Mode::Batched(spender.clone()))] {
            let cpu0 = own_cpu_secs();

            let ours = run_ours(&pool, users.clone(), hot, clients, secs, mode).await;
            let client_cpu = (own_cpu_secs() - cpu0) / ours.secs;

            // Spends per transaction: the entries a transaction wrote share its xmin.
            let per_tx: f64 = sqlx::query_scalar(
                "SELECT count(*)::float8 / greatest(count(DISTINCT xmin::text), 1) FROM credit_entries WHERE idempotency_key LIKE $1",
            )
            .bind(format!("bench:{}:%", ours.run))
            .fetch_one(&pool)
            .await
            .unwrap();
            eprintln!(
                "({name}, {clients} clients, {label}: {per_tx:.1} spends a transaction; the benchmark's own process used {:.0}% of one core)",
                client_cpu * 100.0
            );
            println!(
                "| {name} | {clients} | {label} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} |",
                ours.tps(),
                ours.p50_ms,
                ours.p99_ms,
                ceiling.tps(),
                ceiling.p50_ms,
                ceiling.p99_ms,
                ours.tps() / ceiling.tps()
            );
        }
    }
    // The usage outbox's rows only when asked for (or when every row runs).
    if only.is_empty() || only.contains("outbox") {
        outbox_rows(&pool, users, accounts, clients, secs).await;
    }
    db.check_and_drop().await;
}

/// The usage outbox (a trigger on every spend entry, issue 13): the same runs with it switched
/// off and on again, to show what mirroring every spend to Polar costs.
async fn outbox_rows(pool: &PgPool, users: Arc<Vec<Uuid>>, accounts: u64, clients: u64, secs: u64) {
    println!();
    println!("| workload | usage outbox off spends/s | p99 ms | on spends/s | p99 ms | on ÷ off |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, hot) in [("one hot account", true), (&*format!("spread over {accounts} accounts"), false)] {
        support::set_trigger(pool, "credit_entries_usage_outbox", false).await;
        let off = run_ours(pool, users.clone(), hot, clients, secs, Mode::Alone).await;
        support::set_trigger(pool, "credit_entries_usage_outbox", true).await;
        let on = run_ours(pool, users.clone(), hot, clients, secs, Mode::Alone).await;
        println!(
            "| {name} | {:.0} | {:.2} | {:.0} | {:.2} | {:.2} |",
            off.tps(),
            off.p99_ms,
            on.tps(),
            on.p99_ms,
            on.tps() / off.tps()
        );
    }
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_outbox").fetch_one(pool).await.unwrap();
    let mirrored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM credit_entries WHERE kind = 'spend'").fetch_one(pool).await.unwrap();
    println!();
    println!("usage outbox rows: {outbox} for {mirrored} spend entries (the runs with the outbox off wrote none)");
}
