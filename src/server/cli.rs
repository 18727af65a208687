//! The `tally` command: `tally` (or `tally serve`) runs the app; `tally migrate` applies
//! migrations and exits; `tally db-url` starts the embedded PostgreSQL if needed and prints
//! the admin URL of its cluster (scripts and tests use it); `tally db-stop` stops it.

use crate::server::config::{Config, ProcessEnv};
use crate::server::embedded_pg::EmbeddedPg;
use crate::server::startup::Application;
use crate::server::{db, util};
use std::path::Path;
use std::process::ExitCode;

pub async fn main() -> ExitCode {
    // `.env` is a development convenience; real deployments set the environment.
    let _ = dotenvy::dotenv();
    init_tracing();
    let cmd = std::env::args().nth(1).unwrap_or_else(|| "serve".into());
    let config = match Config::from_source(&ProcessEnv, local_session_secret) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}\nSee .env.example for every variable and what it expects.");
            return ExitCode::from(2);
        }
    };
    let result = match cmd.as_str() {
        "serve" => serve(config).await,
        "migrate" => connect_and_migrate(&config).await.map(|_| ()),
        "db-url" => embedded(&config).map(|pg| println!("{}", pg.url("postgres"))),
        "db-stop" => embedded(&config).and_then(|pg| pg.stop().map_err(|e| e.to_string())),
        "help" | "--help" | "-h" => {
            println!("usage: tally [serve | migrate | db-url | db-stop]");
            Ok(())
        }
        other => Err(format!("unknown command `{other}`; try `tally help`")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).try_init();
}

fn embedded(config: &Config) -> Result<EmbeddedPg, String> {
    EmbeddedPg::ensure(&config.embedded_pg_dir, config.embedded_pg_port).map_err(|e| format!("embedded PostgreSQL: {e}"))
}

/// Connects to `DATABASE_URL`, or to the embedded cluster's `tally` database, and migrates.
async fn connect_and_migrate(config: &Config) -> Result<sqlx::PgPool, String> {
    let url = match &config.database_url {
        Some(url) => url.expose().to_string(),
        None => {
            let pg = embedded(config)?;
            tracing::info!(port = pg.port, dir = %pg.data_dir.display(), "using the embedded PostgreSQL (DATABASE_URL is not set)");
            db::create_database_if_missing(&pg.url("postgres"), "tally").await.map_err(|e| format!("creating database tally: {e}"))?;
            pg.url("tally")
        }
    };
    let pool = db::connect(&url, 20).await.map_err(|e| format!("connecting to PostgreSQL: {e}"))?;
    db::migrate(&pool).await.map_err(|e| format!("applying migrations: {e}"))?;
    Ok(pool)
}

async fn serve(config: Config) -> Result<(), String> {
    for warning in config.startup_warnings(!cfg!(debug_assertions)) {
        tracing::warn!("{}", "!".repeat(72));
        tracing::warn!("{warning}");
        tracing::warn!("{}", "!".repeat(72));
    }
    let pool = connect_and_migrate(&config).await?;
    let app_url = config.app_url.clone();
    let mode = config.polar.mode;
    let app = Application::build(config, pool).await.map_err(|e| format!("binding the HTTP port: {e}"))?;
    tracing::info!(polar_mode = mode.as_str(), port = app.port(), "Tally is ready");
    println!("\n  Tally is running at {app_url}\n");
    app.run().await.map_err(|e| e.to_string())
}

/// In local mode with no `SESSION_SECRET`, a random one is kept in `.data/session_secret` so
/// sessions survive restarts.
fn local_session_secret() -> String {
    let path = Path::new(".data/session_secret");
    if let Ok(s) = std::fs::read_to_string(path) {
        if s.trim().len() >= 32 {
            return s.trim().to_string();
        }
    }
    let secret = util::random_token(32);
    let _ = std::fs::create_dir_all(".data");
    if std::fs::write(path, &secret).is_ok() {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
    }
    secret
}
