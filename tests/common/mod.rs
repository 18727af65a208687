//! Test harness: every test gets its own fresh database on a real PostgreSQL and the real
//! application listening on port 0.
//!
//! The server is `TEST_DATABASE_URL` (an admin URL) when set, otherwise the project's embedded
//! cluster, started on first use exactly as the app starts it.
#![allow(dead_code)]

use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::OnceLock;
use tally::server::config::Config;
use tally::server::startup::Application;

pub struct TestApp {
    pub address: String,
    pub pool: PgPool,
    /// A client with a cookie jar that does not follow redirects.
    pub client: reqwest::Client,
    pub db_name: String,
}

fn admin_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
            return url;
        }
        let dir = std::env::var("TALLY_PG_DIR").unwrap_or_else(|_| ".data/pg".into());
        let pg = tally::server::embedded_pg::EmbeddedPg::ensure(std::path::Path::new(&dir), std::env::var("TALLY_PG_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(55439)).expect("start the embedded PostgreSQL");
        pg.url("postgres")
    })
    .clone()
}

/// The URL of test database `db`.
pub fn database_url(db: &str) -> String {
    with_db(&admin_url(), db)
}

fn with_db(admin: &str, db: &str) -> String {
    let (base, _) = admin.rsplit_once('/').expect("admin URL has a database path");
    format!("{base}/{db}")
}

/// A fresh, migrated database of its own.
pub async fn fresh_database() -> (PgPool, String) {
    let admin = admin_url();
    let name = format!("tally_test_{}", uuid::Uuid::new_v4().simple());
    tally::server::db::create_database_if_missing(&admin, &name).await.expect("create test database");
    let pool = tally::server::db::connect(&with_db(&admin, &name), 10).await.expect("connect test database");
    tally::server::db::migrate(&pool).await.expect("migrate test database");
    (pool, name)
}

pub fn test_config(extra: &[(&str, &str)]) -> Config {
    let mut env: HashMap<String, String> = HashMap::new();
    env.insert("LEPTOS_SITE_ADDR".into(), "127.0.0.1:0".into());
    env.insert("SESSION_SECRET".into(), "test-session-secret-test-session-secret".into());
    env.insert("LOGIN_MAX_FAILURES".into(), "3".into());
    // The built-in Polar stand-in: in memory, fast, retrying quickly.
    env.insert("POLAR_STANDIN_STATE_FILE".into(), "off".into());
    env.insert("POLAR_STANDIN_PAYMENT_DELAY_MS".into(), "0".into());
    env.insert("POLAR_STANDIN_INVOICE_DELAY_MS".into(), "300".into());
    env.insert("POLAR_STANDIN_RETRY_BASE_MS".into(), "200".into());
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    Config::from_source(&env, || unreachable!("SESSION_SECRET is set")).expect("valid test config")
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

pub async fn spawn_app_with(extra: &[(&str, &str)]) -> TestApp {
    let (pool, db_name) = fresh_database().await;
    spawn_app_on(pool, db_name, extra).await
}

/// Another app instance on an existing database (for multi-instance tests).
pub async fn spawn_app_on(pool: PgPool, db_name: String, extra: &[(&str, &str)]) -> TestApp {
    let app = Application::build(test_config(extra), pool.clone()).await.expect("build app");
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    // A hung request fails its test after 30 s instead of stalling the whole run.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap();
    TestApp { address, pool, client, db_name }
}

/// A browser-like form post: URL-encoded, `Accept: text/html`, same-origin `Origin`.
pub async fn post_form(app: &TestApp, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
    app.client
        .post(format!("{}{path}", app.address))
        .header("accept", "text/html")
        .header("origin", &app.address)
        .header("referer", format!("{}/signup", app.address))
        .form(form)
        .send()
        .await
        .expect("request")
}

/// A server-function call as the hydrated app makes it; errors come back as JSON `AppError`.
pub async fn call(app: &TestApp, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
    app.client
        .post(format!("{}{path}", app.address))
        .header("origin", &app.address)
        .form(form)
        .send()
        .await
        .expect("request")
}

pub async fn app_error(res: reqwest::Response) -> tally::error::AppError {
    let text = res.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not an AppError ({e}): {text}"))
}

pub async fn user_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&app.pool).await.unwrap()
}

/// A throwaway `redis-server` (Debian's `redis-server` package) on a free port, without
/// persistence; stopped when dropped.
pub struct RedisServer {
    pub url: String,
    child: std::process::Child,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is needed for the REDIS_URL tests: apt-get install redis-server (.ci/run installs it)");
        // Owned at once, so it is stopped (and reaped) even if it never comes up.
        let server = RedisServer { url: format!("redis://127.0.0.1:{port}/0"), child };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("redis-server did not start on port {port}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
