//! How far group commit can go for a few callers, with no app in the way: the database alone,
//! driven by pgbench, applying the batches that 16 callers who each wait for their answer can
//! form (two batches of 8 in flight, as the metered API's batcher forms them), beside the
//! ceiling of `ledger_spend` (16 clients, one `UPDATE` and one `INSERT` a transaction).
//!
//! Run: `scripts/bench bound` (or `cargo bench --features ssr --bench spend_bound`).
//! Knobs: BENCH_SECONDS (default 10), BENCH_CLIENTS (16), BENCH_IN_FLIGHT (2; the batches are
//! BENCH_CLIENTS ÷ BENCH_IN_FLIGHT spends), BENCH_ACCOUNTS (10000), TEST_DATABASE_URL.
//!
//! Rows, all spread over the accounts at random, durable commits (`synchronous_commit` as the
//! server has it):
//! - **Tally**: `credit_spend_batch`, every check a spend makes;
//! - **bare**: a batch that writes only what any spend must, the entry and the new balances of
//!   its bucket and account, and checks nothing (a function of this benchmark's own);
//! - **bare without the usage rollup** (the billing page's chart, issue 24), then also without
//!   the usage outbox row (each spend's mirror to Polar, which issue 27 requires).
//!
//! The ceiling runs first and last; the ratios are to their mean.

// Benchmark code: a panic is how it reports a broken setup.
#![allow(clippy::unwrap_used)]

use sqlx::PgPool;

mod support;
use support::{env_num, BenchDb};

/// The bare batch, and the table that names each account (and its one bucket) by number.
const BARE: &str = "
CREATE TABLE bench_users AS
    SELECT row_number() OVER (ORDER BY u.id) AS n, u.id, b.id AS bucket
      FROM users u JOIN credit_buckets b ON b.user_id = u.id;
CREATE UNIQUE INDEX ON bench_users (n);
CREATE FUNCTION bench_bare_batch(p_users uuid[], p_buckets bigint[], p_keys text[], p_now timestamptz)
RETURNS TABLE (user_id uuid, balance bigint) LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM credit_accounts a WHERE a.user_id = ANY (p_users) ORDER BY a.user_id FOR NO KEY UPDATE;
    INSERT INTO credit_entries (user_id, bucket_id, kind, amount, idempotency_key, metadata, effective_at)
    SELECT t.u, t.b, 'spend', -1, t.k, '{}', p_now FROM unnest(p_users, p_buckets, p_keys) AS t(u, b, k);
    UPDATE credit_buckets b SET remaining = b.remaining - t.n
      FROM (SELECT id, count(*) AS n FROM unnest(p_buckets) AS id GROUP BY id) t WHERE b.id = t.id;
    RETURN QUERY
    UPDATE credit_accounts a SET balance = a.balance - t.n, updated_at = p_now
      FROM (SELECT u, count(*) AS n FROM unnest(p_users) AS u GROUP BY u) t WHERE a.user_id = t.u
    RETURNING a.user_id, a.balance;
END $$;
ANALYZE bench_users;";

/// A pgbench script: each transaction one call of `call` with `batch` accounts drawn at random,
/// each named by its position (`{users}`, `{buckets}`, `{keys}` in `call`).
fn batch_script(call: &str, batch: u64, accounts: u64) -> String {
    let each = |f: &dyn Fn(u64) -> String| (1..=batch).map(f).collect::<Vec<_>>().join(", ");
    let mut script: String = (1..=batch).map(|i| format!("\\set a{i} random(1, {accounts})\n")).collect();
    script += &call
        .replace("{users}", &each(&|i| format!("(SELECT id FROM bench_users WHERE n = :a{i})")))
        .replace("{buckets}", &each(&|i| format!("(SELECT bucket FROM bench_users WHERE n = :a{i})")))
        .replace("{keys}", &each(&|_| "'k' || :client_id || '-' || nextval('bench_keys')".into()))
        .replace("{batch}", &batch.to_string());
    script + ";\n"
}

async fn spends(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM credit_entries WHERE kind = 'spend'").fetch_one(pool).await.unwrap()
}

#[tokio::main]
async fn main() {
    let secs = env_num("BENCH_SECONDS", 10);
    let clients = env_num("BENCH_CLIENTS", 16);
    let in_flight = env_num("BENCH_IN_FLIGHT", 2).max(1);
    let batch = (clients / in_flight).max(1);
    let accounts = env_num("BENCH_ACCOUNTS", 10_000);
    let db = BenchDb::fresh("tally_bench_bound", 4).await;
    let (pool, url) = (db.pool.clone(), db.url.clone());
    support::seed_accounts(&pool, accounts).await;
    sqlx::raw_sql(BARE).execute(&pool).await.unwrap();
    let version: String = sqlx::query_scalar("SHOW server_version").fetch_one(&pool).await.unwrap();
    let sync: String = sqlx::query_scalar("SHOW synchronous_commit").fetch_one(&pool).await.unwrap();
    println!("Group commit's bound, the database alone: PostgreSQL {version}, synchronous_commit={sync}, {secs} s per run, {accounts} accounts, {} cores", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));
    println!("{clients} callers who each wait for their answer: {in_flight} batches of {batch} in flight, each batch one pgbench transaction on a connection of its own");
    println!();

    let tally =
        "SELECT status, count(*) FROM credit_spend_batch(ARRAY[{users}], array_fill(1::bigint, ARRAY[{batch}]), \
                 ARRAY[{keys}], array_fill('{}'::jsonb, ARRAY[{batch}]), now()) GROUP BY status";
    let bare = "SELECT count(*) FROM bench_bare_batch(ARRAY[{users}], ARRAY[{buckets}], ARRAY[{keys}], now())";
    let ceiling_script = support::ceiling_script(false, accounts);
    let first = support::pgbench(&url, &ceiling_script, clients, secs);
    let mut rows = Vec::new();
    for (name, call, off) in [
        ("Tally: credit_spend_batch, every check", tally, &[][..]),
        ("bare: entry, bucket and account only, no check", bare, &[][..]),
        ("bare, without the usage rollup", bare, &["credit_entries_usage_days"][..]),
        (
            "bare, without the rollup and the usage outbox",
            bare,
            &["credit_entries_usage_days", "credit_entries_usage_outbox"][..],
        ),
    ] {
        for trigger in off {
            support::set_trigger(&pool, trigger, false).await;
        }
        let before = spends(&pool).await;
        let run = support::pgbench(&url, &batch_script(call, batch, accounts), in_flight, secs);
        // Every spend of every batch was applied (none refused, none errored).
        let written = spends(&pool).await - before;
        assert_eq!(written as u64, run.transactions * batch, "{name}: spends written");
        for trigger in off {
            support::set_trigger(&pool, trigger, true).await;
        }
        rows.push((name, run));
    }
    let last = support::pgbench(&url, &ceiling_script, clients, secs);
    let ceiling = (first.tps() + last.tps()) / 2.0;

    println!("| row | spends/s | batch p50 ms | batch p99 ms | ÷ ceiling |");
    println!("|---|---:|---:|---:|---:|");
    for (name, run) in &rows {
        let rate = run.tps() * batch as f64;
        println!("| {name} | {rate:.0} | {:.2} | {:.2} | {:.2} |", run.p50_ms, run.p99_ms, rate / ceiling);
    }
    println!(
        "| ceiling: {clients} clients, one UPDATE + one INSERT a transaction (first run; last run) | {:.0}; {:.0} | {:.2}; {:.2} | {:.2}; {:.2} | 1.00 |",
        first.tps(),
        last.tps(),
        first.p50_ms,
        last.p50_ms,
        first.p99_ms,
        last.p99_ms
    );
    // The rows without the rollup left it short of their spends: rebuilt, so the check holds.
    sqlx::query("SELECT credit_usage_rebuild(user_id) FROM credit_accounts").execute(&pool).await.unwrap();
    db.check_and_drop().await;
}
