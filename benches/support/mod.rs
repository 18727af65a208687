//! What the benchmarks share: a fresh database of their own, migrated, on the embedded
//! cluster (or `TEST_DATABASE_URL`, an admin URL), dropped again at the end.

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use std::process::Command;
use uuid::Uuid;

pub fn env_num(k: &str, d: u64) -> u64 {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

/// The `p` quantile (0–1) of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub struct BenchDb {
    admin: PgPool,
    name: String,
    /// The database's URL (pgbench connects to it in `ledger_spend`; unused by the others).
    #[allow(dead_code)]
    pub url: String,
    pub pool: PgPool,
}

impl BenchDb {
    /// Database `name`, created anew and migrated, with a pool of `connections` set up as the
    /// app sets up its own.
    pub async fn fresh(name: &str, connections: u32) -> BenchDb {
        let admin_url = match std::env::var("TEST_DATABASE_URL") {
            Ok(u) => u,
            Err(_) => tally::server::embedded_pg::EmbeddedPg::ensure(
                std::path::Path::new(".data/pg"),
                std::env::var("TALLY_PG_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(55439),
            )
            .expect("embedded PostgreSQL")
            .url("postgres"),
        };
        let admin = PgPoolOptions::new().max_connections(1).connect(&admin_url).await.unwrap();
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&admin).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await.unwrap();
        let url = format!("{}/{name}", admin_url.rsplit_once('/').unwrap().0);
        // The app's own pool (`db::connect`): no ping before a connection that was just in use.
        let settings = tally::server::db::PoolSettings { max_connections: connections, ..Default::default() };
        let pool = tally::server::db::connect(&url, settings).await.unwrap();
        tally::server::db::migrate(&pool).await.unwrap();
        BenchDb { admin, name: name.to_string(), url, pool }
    }

    /// Prints whether the ledger still adds up, then drops the database.
    pub async fn check_and_drop(self) {
        let problems = tally::server::ledger::problems(&self.pool, None).await.unwrap();
        println!();
        println!(
            "ledger check after the runs: {}",
            if problems.is_empty() { "consistent".to_string() } else { format!("{} PROBLEMS", problems.len()) }
        );
        self.pool.close().await;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).execute(&self.admin).await.unwrap();
    }
}

/// `accounts` users, each with a credit account holding a huge purchased balance (no spend is
/// ever refused), and the pgbench ceiling's own tables beside them ([`CEILING_TABLES`]).
#[allow(dead_code)]
pub async fn seed_accounts(pool: &PgPool, accounts: u64) -> Vec<Uuid> {
    let users: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO users (email, password_hash) SELECT 'bench' || g || '@example.com', 'x' FROM generate_series(1, $1) g RETURNING id",
    )
    .bind(accounts as i64)
    .fetch_all(pool)
    .await
    .unwrap();
    sqlx::query("SELECT credit_grant(id, 'purchase', 'purchase', 'order:bench', 1000000000, NULL, 'bench:' || id, '{}', now()) FROM users")
        .execute(pool)
        .await
        .unwrap();
    sqlx::raw_sql(&CEILING_TABLES.replace("{accounts}", &accounts.to_string())).execute(pool).await.unwrap();
    sqlx::query("VACUUM ANALYZE").execute(pool).await.unwrap();
    users
}

/// Switches one of `credit_entries`' triggers off or on again (to measure what it costs).
#[allow(dead_code)]
pub async fn set_trigger(pool: &PgPool, trigger: &str, on: bool) {
    let verb = if on { "ENABLE" } else { "DISABLE" };
    sqlx::query(&format!("ALTER TABLE credit_entries {verb} TRIGGER {trigger}")).execute(pool).await.unwrap();
}

/// The ceiling's tables: a balance and an entry with a unique key, nothing else.
const CEILING_TABLES: &str = "CREATE TABLE bench_accounts (id int PRIMARY KEY, balance bigint NOT NULL CHECK (balance >= 0));
     INSERT INTO bench_accounts SELECT g, 1000000000 FROM generate_series(1, {accounts}) g;
     CREATE TABLE bench_entries (id bigserial PRIMARY KEY, account_id int NOT NULL REFERENCES bench_accounts (id),
                                 amount bigint NOT NULL, idempotency_key text NOT NULL UNIQUE, created_at timestamptz NOT NULL DEFAULT now());
     CREATE SEQUENCE bench_keys;";

/// The ceiling's pgbench script: per transaction, one round trip running a conditional
/// `UPDATE` of a balance (account 1, or one of `accounts` at random) and an `INSERT` of an
/// entry with a unique key.
#[allow(dead_code)]
pub fn ceiling_script(hot: bool, accounts: u64) -> String {
    let aid = if hot { "1".to_string() } else { format!("random(1, {accounts})") };
    format!(
        "\\set aid {aid}\n\
         WITH u AS (UPDATE bench_accounts SET balance = balance - 1 WHERE id = :aid AND balance >= 1 RETURNING id)\n\
         INSERT INTO bench_entries (account_id, amount, idempotency_key) SELECT id, -1, 'k' || :client_id || '-' || nextval('bench_keys') FROM u;\n"
    )
}

/// What a pgbench run did: transactions, over how long, and their latency.
#[allow(dead_code)]
pub struct Pgbench {
    pub transactions: u64,
    pub secs: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[allow(dead_code)]
impl Pgbench {
    pub fn tps(&self) -> f64 {
        self.transactions as f64 / self.secs
    }
}

/// Runs `script` with pgbench (prepared statements, two threads) on `clients` connections for
/// `secs` seconds. Panics if pgbench fails or aborts a client (a run cut short is no figure).
#[allow(dead_code)]
pub fn pgbench(url: &str, script: &str, clients: u64, secs: u64) -> Pgbench {
    let dir = std::env::temp_dir();
    let file = dir.join(format!("tally-bench-{}.sql", std::process::id()));
    std::fs::write(&file, script).unwrap();
    let prefix = format!("tally-pgbench-{}", std::process::id());
    let pgbench = tally::server::embedded_pg::pg_tool("pgbench").expect("pgbench (from the postgresql package)");
    let out = Command::new(pgbench)
        .args(["-n", "-M", "prepared", "-c", &clients.to_string(), "-j", "2", "-T", &secs.to_string(), "-f"])
        .arg(&file)
        .arg("--log")
        .arg(format!("--log-prefix={}", dir.join(&prefix).display()))
        .arg(url)
        .output()
        .expect("run pgbench");
    let _ = std::fs::remove_file(&file);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    // pgbench exits with 2 when a client aborted: the run was cut short.
    assert!(out.status.success(), "pgbench failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    let transactions: u64 = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.trim().parse().ok())
        .expect("pgbench transaction count");
    // Per-transaction latencies from pgbench's log files (column 3 is microseconds).
    let mut lat = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            for line in std::fs::read_to_string(entry.path()).unwrap_or_default().lines() {
                if let Some(us) = line.split_whitespace().nth(2).and_then(|v| v.parse::<f64>().ok()) {
                    lat.push(us / 1000.0);
                }
            }
            let _ = std::fs::remove_file(entry.path());
        }
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Pgbench { transactions, secs: secs as f64, p50_ms: percentile(&lat, 0.5), p99_ms: percentile(&lat, 0.99) }
}
