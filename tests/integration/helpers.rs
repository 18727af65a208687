//! Test harness: every test gets its own fresh database on a real PostgreSQL and the real
//! application listening on port 0.
//!
//! The server is `TEST_DATABASE_URL` (an admin URL) when set, otherwise the project's embedded
//! cluster, started on first use exactly as the app starts it.

use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::OnceLock;
use tally::server::config::Config;
use tally::server::startup::Application;

/// How long [`eventually`] waits before it gives up. Generous, because a loaded CI machine
/// runs many tests at once; a passing test goes on as soon as its condition holds.
pub const EVENTUALLY: std::time::Duration = std::time::Duration::from_secs(15);

/// Polls `probe` every 100 ms (a probe may spend the user's budget of Polar calls) until it
/// answers `Ok`, and returns that. After [`EVENTUALLY`], fails the test with `what` (what should
/// have happened) and the last `Err` (what was seen instead).
/// For what happens in the background: webhooks, the outboxes, mail, Polar's lag.
pub async fn eventually<T, E, F, Fut>(what: &str, probe: F) -> T
where
    E: std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    eventually_within(EVENTUALLY, what, probe).await
}

/// [`eventually`] with its own limit.
pub async fn eventually_within<T, E, F, Fut>(within: std::time::Duration, what: &str, mut probe: F) -> T
where
    E: std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let seen = match probe().await {
            Ok(done) => return done,
            Err(seen) => seen,
        };
        if tokio::time::Instant::now() >= deadline {
            panic!("{what}: not so after {within:?}; last seen: {seen:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

pub struct TestApp {
    pub address: String,
    pub pool: PgPool,
    /// A client with a cookie jar that does not follow redirects.
    pub client: reqwest::Client,
    pub db_name: String,
}

pub fn admin_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
            return url;
        }
        let dir = std::env::var("TALLY_PG_DIR").unwrap_or_else(|_| ".data/pg".into());
        let pg = tally::server::embedded_pg::EmbeddedPg::ensure(
            std::path::Path::new(&dir),
            std::env::var("TALLY_PG_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(55439),
        )
        .expect("start the embedded PostgreSQL");
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

/// Test databases are named `tally_test_<unix seconds>_<uuid>`. A test cannot drop its own
/// (there is no async drop, and a failing test should leave its data to look at), so the first
/// test of each run drops, in a thread of its own, what earlier runs left: databases named more
/// than an hour ago (no run takes that long), and those named before the time was in the name.
/// Without this, every run left ~200 databases behind (20 GB after a few days).
fn drop_leftovers_once() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let admin = admin_url();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            runtime.block_on(drop_leftover_databases(&admin, chrono::Utc::now().timestamp()));
        });
    });
}

/// Whether test database `name` was left by an earlier run, as of `now` (unix seconds).
pub fn leftover(name: &str, now: i64) -> bool {
    let Some(rest) = name.strip_prefix("tally_test_") else { return false };
    match rest.split_once('_') {
        Some((secs, _)) => secs.parse::<i64>().is_ok_and(|t| t < now - 3600),
        None => rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_hexdigit()),
    }
}

/// Drops the test databases earlier runs left (see [`leftover`]); returns how many.
pub async fn drop_leftover_databases(admin: &str, now: i64) -> usize {
    let Ok(pool) = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(admin).await else { return 0 };
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'tally\\_test\\_%'")
            .fetch_all(&pool)
            .await
            .unwrap_or_default();
    let mut dropped = 0;
    for name in names.into_iter().filter(|n| leftover(n, now)) {
        let stmt = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", name.replace('"', "\"\""));
        if sqlx::query(&stmt).execute(&pool).await.is_ok() {
            dropped += 1;
        }
    }
    dropped
}

/// A fresh, migrated database of its own.
pub async fn fresh_database() -> (PgPool, String) {
    let admin = admin_url();
    drop_leftovers_once();
    let name = format!("tally_test_{}_{}", chrono::Utc::now().timestamp(), uuid::Uuid::new_v4().simple());
    tally::server::db::create_database_if_missing(&admin, &name).await.expect("create test database");
    let pool = tally::server::db::connect(&with_db(&admin, &name), tally::server::db::PoolSettings::default())
        .await
        .expect("connect test database");
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
    // A circuit breaker that closes again quickly, so outage tests end in seconds.
    env.insert("POLAR_CIRCUIT_OPEN_MS".into(), "300".into());
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    Config::from_source(&env, || unreachable!("SESSION_SECRET is set")).expect("valid test config")
}

/// The bearer token of the test app's stand-in controls.
pub fn controls_token() -> String {
    test_config(&[]).polar.standin.expect("local mode").controls_token.expose().to_string()
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
    TestApp { address, pool, client: browser(), db_name }
}

/// A browser's HTTP client: its own cookies, redirects not followed. A hung request fails its
/// test after 30 s instead of stalling the whole run.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap()
}

impl TestApp {
    /// Another browser (its own cookies) on the same app instance.
    pub fn another_browser(&self) -> TestApp {
        TestApp {
            address: self.address.clone(),
            pool: self.pool.clone(),
            client: browser(),
            db_name: self.db_name.clone(),
        }
    }

    /// Revokes a subscription at Polar now, as from its dashboard (`DELETE /v1/subscriptions/{id}`).
    pub async fn revoke_at_polar(&self, subscription: &str) {
        let res = reqwest::Client::new()
            .delete(format!("{}/polar/v1/subscriptions/{subscription}", self.address))
            .bearer_auth(standin_token())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    }

    /// The same browser (the same cookies), for another task.
    pub fn same_browser(&self) -> TestApp {
        TestApp {
            address: self.address.clone(),
            pool: self.pool.clone(),
            client: self.client.clone(),
            db_name: self.db_name.clone(),
        }
    }
}

/// Waits until the usage outbox has shipped everything (Polar has every event).
pub async fn usage_drained(app: &TestApp) {
    eventually("the usage outbox drains", || async {
        let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_outbox WHERE status <> 'sent'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        if pending == 0 {
            Ok(())
        } else {
            Err(format!("{pending} not sent"))
        }
    })
    .await
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

/// The mail the app delivered to its dev mailbox for `to`, newest first (local mode without
/// SMTP), read over HTTP as a developer's browser would.
pub async fn mailbox(app: &TestApp, to: &str) -> Vec<serde_json::Value> {
    let res = reqwest::Client::new()
        .get(format!("{}/dev/mailbox", app.address))
        .query(&[("format", "json"), ("to", to)])
        .bearer_auth(controls_token())
        .send()
        .await
        .expect("dev mailbox");
    assert_eq!(res.status(), 200, "the dev mailbox answers with the controls token");
    let body: serde_json::Value = res.json().await.unwrap();
    body["mails"].as_array().cloned().unwrap_or_default()
}

/// Waits for a mail to `to` whose subject contains `subject`; returns its text.
pub async fn wait_for_mail(app: &TestApp, to: &str, subject: &str) -> String {
    eventually(&format!("a mail to {to} about {subject:?} arrives"), || async {
        let mails = mailbox(app, to).await;
        match mails.iter().find(|m| m["subject"].as_str().is_some_and(|s| s.contains(subject))) {
            Some(m) => Ok(m["text"].as_str().unwrap_or_default().to_string()),
            None => Err(mails.iter().map(|m| m["subject"].to_string()).collect::<Vec<_>>()),
        }
    })
    .await
}

/// The link in a mail's text that starts with `prefix` (say `http://…/verify-email?token=`).
pub fn link_in(text: &str, path: &str) -> String {
    text.split_whitespace()
        .find(|w| w.contains(path))
        .unwrap_or_else(|| panic!("no {path} link in: {text}"))
        .to_string()
}

/// The `token` query value of a link.
pub fn token_of(link: &str) -> String {
    url::Url::parse(link)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .expect("a token")
}

/// Confirms `email` the way its owner does: the link from the mail, then the page's button.
pub async fn confirm_email(app: &TestApp, email: &str) {
    let text = wait_for_mail(app, email, "Confirm your email").await;
    let token = token_of(&link_in(&text, "/verify-email?token="));
    let res = post_form(app, "/api/confirm-email", &[("token", &token)]).await;
    assert!(res.status().is_redirection(), "confirming answers with a redirect: {}", res.status());
}

/// The token the app's stand-in accepts (derived from the test session secret).
pub fn standin_token() -> String {
    test_config(&[]).polar.effective_token().unwrap().expose().to_string()
}

/// Polar answers again.
pub async fn end_outage(app: &TestApp) {
    let res = reqwest::Client::new()
        .delete(format!("{}/polar/_standin/outage", app.address))
        .bearer_auth(controls_token())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
}

/// Calls one of the stand-in's test controls.
pub async fn control(app: &TestApp, path: &str, body: serde_json::Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/polar/_standin{path}", app.address))
        .bearer_auth(controls_token())
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// `/metrics` as a scraper with `token` reads it.
pub async fn metrics(app: &TestApp, token: &str) -> String {
    reqwest::Client::new()
        .get(format!("{}/metrics", app.address))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// What tests do as a customer, a client of the metered API, or as Polar, each named once.
impl TestApp {
    /// Signs up (a browser without JavaScript) and confirms the address, so the account holds
    /// its free credits; returns the user id.
    pub async fn sign_up(&self, email: &str) -> uuid::Uuid {
        let res = post_form(self, "/api/signup", &[("email", email), ("password", "correct horse battery")]).await;
        assert!(res.status().is_redirection(), "sign-up: {}", res.status());
        confirm_email(self, email).await;
        sqlx::query_scalar("SELECT id FROM users WHERE lower(email) = lower($1)")
            .bind(email)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Calls a server function as the hydrated page does and expects 200; returns the URL it
    /// answers (where the page would navigate).
    pub async fn go(&self, path: &str, form: &[(&str, &str)]) -> String {
        let res = call(self, path, form).await;
        assert_eq!(res.status(), 200, "{path}: {}", res.text().await.unwrap());
        res.json::<String>().await.unwrap()
    }

    /// Pays on the stand-in's hosted checkout page; returns the checkout id from the redirect,
    /// or `None` when the payment was refused.
    pub async fn pay(&self, checkout_url: &str, card: &str) -> Option<String> {
        let res = self
            .client
            .post(format!("{checkout_url}/confirm"))
            .form(&[
                ("email", "payer@example.com"),
                ("billing_name", "Ada Lovelace"),
                ("country", "DE"),
                ("line1", "Unter den Linden 1"),
                ("postal_code", "10117"),
                ("city", "Berlin"),
                ("card", card),
            ])
            .send()
            .await
            .unwrap();
        if res.status() != 303 {
            return None;
        }
        let to = res.headers()["location"].to_str().unwrap().to_string();
        assert!(to.starts_with(&format!("{}/billing/success?checkout_id=", self.address)), "{to}");
        Some(to.rsplit('=').next().unwrap().to_string())
    }

    /// What the success page's status call answers for `checkout_id`.
    pub async fn checkout_status(&self, checkout_id: &str) -> (u16, serde_json::Value) {
        let res = call(self, "/api/billing/checkout-status", &[("checkout_id", checkout_id)]).await;
        let code = res.status().as_u16();
        (code, res.json().await.unwrap())
    }

    /// Polls the checkout's status until it is no longer `Processing`.
    pub async fn wait_ready(&self, checkout_id: &str) -> serde_json::Value {
        eventually(&format!("checkout {checkout_id} is no longer processing"), || async {
            let (code, v) = self.checkout_status(checkout_id).await;
            assert_eq!(code, 200, "{v}");
            if v != serde_json::Value::String("Processing".into()) {
                Ok(v)
            } else {
                Err(v)
            }
        })
        .await
    }

    /// `GET` of Polar's API (the app's stand-in) at `path_and_query` (`/v1/orders/?…`).
    pub async fn polar_get(&self, path_and_query: &str) -> serde_json::Value {
        let res = reqwest::Client::new()
            .get(format!("{}/polar{path_and_query}", self.address))
            .bearer_auth(standin_token())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "GET {path_and_query}");
        res.json().await.unwrap()
    }

    /// Buys `item` with the test card and waits until the purchase is confirmed.
    pub async fn buy(&self, item: &str) -> serde_json::Value {
        let url = self.go("/api/billing/checkout", &[("item", item)]).await;
        let id = self.pay(&url, "4242424242424242").await.unwrap();
        self.wait_ready(&id).await
    }

    /// Creates an API key for the signed-in user; returns the secret, shown only this once.
    pub async fn create_api_key(&self, name: &str) -> String {
        let res = call(self, "/api/keys/create", &[("name", name)]).await;
        assert_eq!(res.status(), 200);
        let created: serde_json::Value = res.json().await.unwrap();
        let key = created["key"].as_str().unwrap().to_string();
        assert!(key.starts_with("tly_"));
        key
    }

    /// Spends through the metered API (`POST /api/v1/text/stats` with a JSON `body`), as an
    /// outside client does: its own connection, no cookies.
    pub async fn spend(&self, key: Option<&str>, body: &str, idempotency_key: Option<&str>) -> reqwest::Response {
        let mut req = reqwest::Client::new()
            .post(format!("{}/api/v1/text/stats", self.address))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        if let Some(i) = idempotency_key {
            req = req.header("idempotency-key", i);
        }
        req.send().await.unwrap()
    }

    /// Delivers a webhook as Polar does: `body` signed with `secret` under `scheme` at `ts`.
    pub async fn deliver_webhook(
        &self,
        id: &str,
        body: &str,
        secret: &str,
        scheme: tally::server::polar::webhook_signature::KeyScheme,
        ts: i64,
    ) -> reqwest::Response {
        let sig = tally::server::polar::webhook_signature::sign(secret, scheme, id, ts, body.as_bytes()).unwrap();
        reqwest::Client::new()
            .post(format!("{}/api/webhooks/polar", self.address))
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    /// The page at `path` as this client's browser gets it.
    pub async fn page(&self, path: &str) -> String {
        self.client.get(format!("{}{path}", self.address)).send().await.unwrap().text().await.unwrap()
    }

    /// `user`'s balance now, read from the ledger.
    pub async fn balance(&self, user: uuid::Uuid) -> tally::domain::credits::Balance {
        tally::server::ledger::balance(&self.pool, user, chrono::Utc::now()).await.unwrap()
    }
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
            .expect(
                "redis-server is needed for the REDIS_URL tests: apt-get install redis-server (.ci/run installs it)",
            );
        // Owned at once, so it is stopped (and reaped) even if it never comes up.
        let server = RedisServer { url: format!("redis://127.0.0.1:{port}/0"), child };
        wait_for_port(port, "redis-server");
        server
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free TCP port on loopback (for servers that must be told their port up front).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for_port(port: u16, what: &str) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("{what} did not start on port {port}");
}

/// A real SMTP server (aiosmtpd from PyPI, `tests/support/smtp_sink.py`) on a free port,
/// keeping every message it receives as a file; stopped when dropped.
pub struct SmtpSink {
    pub url: String,
    dir: std::path::PathBuf,
    child: std::process::Child,
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        SmtpSink::start_on(free_port())
    }

    pub fn start_on(port: u16) -> SmtpSink {
        let dir = std::env::temp_dir().join(format!("tally-smtp-{}", uuid::Uuid::new_v4().simple()));
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_sink.py");
        let child = std::process::Command::new("python3")
            .arg(script)
            .args(["--port", &port.to_string(), "--dir"])
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect(
                "python3 with aiosmtpd is needed for the SMTP tests: pip install aiosmtpd (scripts/test installs it)",
            );
        let sink = SmtpSink { url: format!("smtp://127.0.0.1:{port}"), dir, child };
        wait_for_port(port, "the SMTP sink");
        sink
    }

    /// Every message received so far, as raw RFC 5322 text, oldest first.
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<_> = std::fs::read_dir(&self.dir)
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e == "eml"));
        files.sort_by_key(|p| p.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0));
        files.iter().filter_map(|p| std::fs::read_to_string(p).ok()).collect()
    }

    /// Waits for a message to `to` about `subject`; returns its body with quoted-printable
    /// soft line breaks undone.
    pub async fn wait_for(&self, to: &str, subject: &str) -> String {
        eventually(&format!("a mail to {to} about {subject:?} reaches the SMTP server"), || async {
            let messages = self.messages();
            match messages.iter().find(|m| m.contains(&format!("X-Envelope-To: {to}")) && m.contains(subject)) {
                Some(m) => Ok(m.replace("=\r\n", "").replace("=\n", "").replace("=3D", "=")),
                None => Err(format!("{} other messages", messages.len())),
            }
        })
        .await
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A real nginx (Debian's package) reverse proxy on `port` in front of `upstream`, configured
/// as docs/deploying.md shows: it appends the client to `X-Forwarded-For` and,
/// like nginx by default, rewrites `Host` to the upstream's. Stopped when dropped.
pub struct Nginx {
    dir: std::path::PathBuf,
    child: std::process::Child,
}

impl Nginx {
    pub fn start(port: u16, upstream: &str) -> Nginx {
        let dir = std::env::temp_dir().join(format!("tally-nginx-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf =
            std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/nginx.conf"))
                .unwrap()
                .replace("{listen}", &format!("127.0.0.1:{port}"))
                .replace("{upstream}", upstream)
                .replace("{dir}", dir.to_str().unwrap());
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let nginx = ["/usr/sbin/nginx", "nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists() || *p == "nginx")
            .unwrap();
        let child = std::process::Command::new(nginx)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nginx is needed for the reverse-proxy tests: apt-get install nginx (scripts/test installs it)");
        let proxy = Nginx { dir, child };
        wait_for_port(port, "nginx");
        proxy
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The app behind a real nginx, as deployed: `APP_URL` is the proxy's URL and the proxy is a
/// trusted one. `address` (and the stand-in's URL, and webhook deliveries) go through nginx.
pub async fn spawn_app_behind_nginx(extra: &[(&str, &str)]) -> (TestApp, Nginx) {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut env: Vec<(&str, &str)> = vec![("APP_URL", url.as_str()), ("TRUSTED_PROXIES", "127.0.0.1/32")];
    env.extend_from_slice(extra);
    let (pool, db_name) = fresh_database().await;
    let app = Application::build(test_config(&env), pool.clone()).await.expect("build app");
    let upstream = format!("127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let nginx = Nginx::start(port, &upstream);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap();
    (TestApp { address: url, pool, client, db_name }, nginx)
}
