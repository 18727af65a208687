//! The connection pool and migrations.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use std::str::FromStr;
use std::time::Duration;

/// The migrations compiled into the binary (`migrations/`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How every connection of a pool behaves.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    pub max_connections: u32,
    /// `statement_timeout`: no query runs longer (a stuck one would hold its connection and
    /// its locks).
    pub statement_timeout_ms: u64,
    /// `lock_timeout`: no query waits longer for a row lock.
    pub lock_timeout_ms: u64,
}

impl PoolSettings {
    pub fn of(config: &crate::server::config::Config) -> PoolSettings {
        PoolSettings {
            max_connections: config.database_pool_size,
            statement_timeout_ms: config.database_statement_timeout_ms,
            lock_timeout_ms: config.database_lock_timeout_ms,
        }
    }
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings { max_connections: 10, statement_timeout_ms: 10_000, lock_timeout_ms: 5_000 }
    }
}

/// Opens a pool on `url`. Statement logging is turned down: queries carry emails and tokens.
pub async fn connect(url: &str, settings: PoolSettings) -> Result<PgPool, sqlx::Error> {
    let opts = PgConnectOptions::from_str(url)?
        .options([
            ("statement_timeout", format!("{}ms", settings.statement_timeout_ms)),
            ("lock_timeout", format!("{}ms", settings.lock_timeout_ms)),
        ])
        .log_statements(tracing::log::LevelFilter::Trace)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500));
    pool_options(settings.max_connections).connect_with(opts).await
}

/// A pool of its own of at most `max` connections, to `pool`'s database with `pool`'s
/// connection options (connected on first use): for a task that keeps a few connections busy
/// all the time, such as the spend batcher. Its connections come on top of `pool`'s.
pub fn pool_beside(pool: &PgPool, max: u32) -> PgPool {
    pool_options(max).connect_lazy_with((*pool.connect_options()).clone())
}

fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        // sqlx pings every connection it hands out by default: one more round trip per query,
        // which doubled a page's round trips. A connection in use within the last
        // `PING_IDLE_AFTER` is handed out as it is (a server restart since then fails that one
        // query, and sqlx drops the broken connection); one idle for longer is pinged first.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IDLE_AFTER {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

/// How long a pooled connection may sit idle before it is pinged when next handed out.
const PING_IDLE_AFTER: Duration = Duration::from_secs(5);

/// Creates database `name` on the server at `admin_url` if it does not exist yet.
pub async fn create_database_if_missing(admin_url: &str, name: &str) -> Result<(), sqlx::Error> {
    let pool = PgPoolOptions::new().max_connections(1).connect(admin_url).await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&pool)
        .await?;
    if !exists {
        // Identifiers cannot be bound as parameters; `name` is ours, quote it anyway.
        let stmt = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        match sqlx::query(&stmt).execute(&pool).await {
            Ok(_) => {}
            // Another process created it between our check and our CREATE.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e),
        }
    }
    pool.close().await;
    Ok(())
}

/// Applies pending migrations. A failure must stop the process: running against a schema we
/// do not understand risks money.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Whether every migration compiled into this binary has been applied successfully.
pub async fn migrations_applied(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(pool)
        .await?;
    Ok(MIGRATOR.iter().filter(|m| !m.migration_type.is_down_migration()).all(|m| applied.contains(&m.version)))
}
