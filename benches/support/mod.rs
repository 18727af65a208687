//! What the benchmarks share: a fresh database of their own, migrated, on the embedded
//! cluster (or `TEST_DATABASE_URL`, an admin URL), dropped again at the end.

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

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
