//! The `tally` command: `tally` (or `tally serve`) runs the app; `tally migrate` applies
//! migrations and exits; `tally db-url` starts the embedded PostgreSQL if needed and prints
//! the admin URL of its cluster (scripts and tests use it); `tally db-stop` stops it;
//! `tally credits …` inspects and corrects the credit ledger (see `credits_command`).

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
        "polar" => match connect_and_migrate(&config).await {
            Ok(pool) => polar_command(config, pool, &std::env::args().skip(2).collect::<Vec<_>>()).await,
            Err(e) => Err(e),
        },
        "webhooks" => match connect_and_migrate(&config).await {
            Ok(pool) => webhooks_command(&pool, &std::env::args().skip(2).collect::<Vec<_>>()).await,
            Err(e) => Err(e),
        },
        "usage" => match connect_and_migrate(&config).await {
            Ok(pool) => usage_command(&pool, &std::env::args().skip(2).collect::<Vec<_>>()).await,
            Err(e) => Err(e),
        },
        "account" => match connect_and_migrate(&config).await {
            Ok(pool) => account_command(config, pool, &std::env::args().skip(2).collect::<Vec<_>>()).await,
            Err(e) => Err(e),
        },
        "operator" => match connect_and_migrate(&config).await {
            Ok(pool) => operator_command(&pool, &std::env::args().skip(2).collect::<Vec<_>>()).await,
            Err(e) => Err(e),
        },
        "credits" => match connect_and_migrate(&config).await {
            Ok(pool) => credits_command(&pool, &std::env::args().skip(2).collect::<Vec<_>>()).await,
            Err(e) => Err(e),
        },
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
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

const USAGE: &str = "usage: tally [serve | migrate | db-url | db-stop | credits … | polar … | webhooks …]
  tally credits balance EMAIL            credits of an account, by source
  tally credits adjust EMAIL DELTA REASON  add (DELTA > 0) or remove credits; REASON is required
  tally credits check                    verify that every balance equals its ledger entries
  tally credits rebuild-usage EMAIL      rebuild an account's usage per day from its entries
  tally polar reconcile EMAIL|--all      re-sync users from Polar (customer link, Customer State, subscriptions)
                                         and report usage drift against Polar's meters
  tally webhooks list                    events waiting or parked, with their last error
  tally webhooks retry ID|--failed       put a parked event (or every one) back in the queue, due now
  tally usage retry --all|EVENT_ID       send parked usage events again (by outbox id or external id);
                                         Polar still counts each once
  tally operator add|remove EMAIL        give or take the operator role (the console at /admin)
  tally operator list                    every operator, since when
  tally account delete EMAIL [--with-unbilled-overage]
                                         delete an account as its owner would (Polar's customer first);
                                         refused while this period has overage Polar has not billed,
                                         unless the flag says to go ahead (logged)";

/// `tally operator add|remove EMAIL`, `tally operator list`: the only way the operator role is
/// given or taken.
pub async fn operator_command(pool: &sqlx::PgPool, args: &[String]) -> Result<(), String> {
    use crate::server::admin;
    match args {
        [cmd, email] if cmd == "add" => {
            let added = admin::add(pool, email).await?;
            tracing::info!(%email, added, "operator role given from the command line");
            println!(
                "{}",
                if added { format!("{email} is now an operator") } else { format!("{email} already was an operator") }
            );
            Ok(())
        }
        [cmd, email] if cmd == "remove" => {
            let removed = admin::remove(pool, email).await?;
            tracing::info!(%email, removed, "operator role taken from the command line");
            println!(
                "{}",
                if removed {
                    format!("{email} is no longer an operator")
                } else {
                    format!("{email} was not an operator")
                }
            );
            Ok(())
        }
        [cmd] if cmd == "list" => {
            let operators = admin::list(pool).await.map_err(|e| e.to_string())?;
            if operators.is_empty() {
                println!("no operators; make one with `tally operator add EMAIL`");
            }
            for (email, since) in operators {
                println!("{email}  (since {})", since.format("%Y-%m-%d %H:%M UTC"));
            }
            Ok(())
        }
        _ => Err(format!("usage: tally operator add|remove EMAIL | tally operator list\n{USAGE}")),
    }
}

/// `tally usage retry --all|EVENT_ID`: re-queues parked usage events.
pub async fn usage_command(pool: &sqlx::PgPool, args: &[String]) -> Result<(), String> {
    use crate::server::usage::shipper::{retry_parked, Retry};
    let which = match args {
        [cmd, all] if cmd == "retry" && all == "--all" => Retry::All,
        [cmd, id] if cmd == "retry" && !id.starts_with('-') => Retry::One(id.clone()),
        _ => return Err(format!("usage: tally usage retry --all|EVENT_ID\n{USAGE}")),
    };
    let n = retry_parked(pool, &which).await.map_err(|e| e.to_string())?;
    tracing::info!(?which, requeued = n, "parked usage events re-queued by an operator");
    match (n, &which) {
        (0, Retry::One(id)) => Err(format!("no parked usage event {id}")),
        _ => {
            println!("{n} parked usage event(s) queued again; the shipper sends them within seconds");
            Ok(())
        }
    }
}

/// `tally account delete EMAIL [--with-unbilled-overage]`: deletes an account as settings
/// does; the flag lets an operator delete one whose overage Polar has not billed yet.
pub async fn account_command(config: Config, pool: sqlx::PgPool, args: &[String]) -> Result<(), String> {
    let (email, how) = match args {
        [cmd, email] if cmd == "delete" => (email, crate::server::billing::Deletion::Customer),
        [cmd, email, flag] if cmd == "delete" && flag == "--with-unbilled-overage" => {
            (email, crate::server::billing::Deletion::OperatorKeepsOverage)
        }
        _ => return Err(format!("usage: tally account delete EMAIL [--with-unbilled-overage]\n{USAGE}")),
    };
    let user: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM users WHERE lower(email) = lower($1) AND deleted_at IS NULL")
            .bind(email)
            .fetch_optional(&pool)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no account with email {email}"))?;
    let state = crate::server::state::AppState::new(config, pool).map_err(|e| e.to_string())?;
    crate::server::billing::delete_account(&state.billing, user, how).await.map_err(|e| e.to_string())?;
    tracing::info!(%user, ?how, "account deleted from the command line");
    println!("{email}: deleted");
    Ok(())
}

/// `tally polar reconcile EMAIL|--all`: re-reads users from Polar and applies what it says.
pub async fn polar_command(config: Config, pool: sqlx::PgPool, args: &[String]) -> Result<(), String> {
    let target = match args {
        [cmd, t] if cmd == "reconcile" => t.clone(),
        _ => return Err(format!("usage: tally polar reconcile EMAIL|--all\n{USAGE}")),
    };
    let users: Vec<(uuid::Uuid, String)> = if target == "--all" {
        sqlx::query_as("SELECT id, email FROM users WHERE deleted_at IS NULL ORDER BY created_at")
            .fetch_all(&pool)
            .await
            .map_err(|e| e.to_string())?
    } else {
        sqlx::query_as("SELECT id, email FROM users WHERE lower(email) = lower($1) AND deleted_at IS NULL")
            .bind(&target)
            .fetch_all(&pool)
            .await
            .map_err(|e| e.to_string())?
    };
    if users.is_empty() {
        return Err(format!("no account matches {target}"));
    }
    let state = crate::server::state::AppState::new(config, pool).map_err(|e| e.to_string())?;
    let mut failed = 0;
    for (id, email) in users {
        match crate::server::billing::reconcile(&state.billing, id).await {
            Ok(plan) => println!("{email}: {plan}"),
            Err(e) => {
                failed += 1;
                println!("{email}: failed: {e}");
                continue;
            }
        }
        // Usage: the ledger against Polar's meters (see `usage::reconcile`).
        let Some(polar) = state.billing.polar.as_ref() else { continue };
        match crate::server::usage::reconcile::measure(&state.pool, polar, id, chrono::Utc::now()).await {
            Ok(drifts) => {
                for d in drifts {
                    println!(
                        "  {}: ledger {}, Polar {}, in flight {}, parked {}, drift {}",
                        d.event,
                        d.ledger,
                        d.polar,
                        d.in_flight,
                        d.parked,
                        d.unexplained()
                    );
                }
            }
            Err(e) => {
                failed += 1;
                println!("  usage: failed: {e}");
            }
        }
    }
    if failed > 0 {
        return Err(format!("{failed} account(s) could not be reconciled"));
    }
    Ok(())
}

/// `tally webhooks list|retry ID|--failed`: the operator's view of the webhook inbox.
pub async fn webhooks_command(pool: &sqlx::PgPool, args: &[String]) -> Result<(), String> {
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["list"] => {
            #[derive(sqlx::FromRow)]
            struct Waiting {
                webhook_id: String,
                event_type: String,
                status: String,
                attempts: i32,
                last_error: Option<String>,
            }
            let rows: Vec<Waiting> = sqlx::query_as(
                "SELECT webhook_id, event_type, status, attempts, last_error FROM webhook_events
                  WHERE status IN ('pending', 'failed') ORDER BY received_at LIMIT 500",
            )
            .fetch_all(pool)
            .await
            .map_err(|e| e.to_string())?;
            if rows.is_empty() {
                println!("nothing waiting or parked");
            }
            for Waiting { webhook_id: id, event_type: kind, status, attempts, last_error: error } in rows {
                println!("{id}  {kind}  {status}  {attempts} attempt(s)  {}", error.unwrap_or_default());
            }
            Ok(())
        }
        ["retry", target] => {
            use crate::server::webhooks::inbox::{requeue_parked, Requeue};
            let which = if *target == "--failed" { Requeue::All } else { Requeue::One(target) };
            let n = requeue_parked(pool, which).await.map_err(|e| e.to_string())?;
            if n == 0 && *target != "--failed" {
                return Err(format!("no parked event {target} with a payload (see `tally webhooks list`)"));
            }
            tracing::info!(requeued = n, "parked webhook events put back in the queue");
            println!("{n} event(s) queued again; a running app applies them within seconds");
            Ok(())
        }
        _ => Err(format!("usage: tally webhooks list | tally webhooks retry ID|--failed\n{USAGE}")),
    }
}

/// `tally credits …`: the administrator's view of the ledger.
pub async fn credits_command(pool: &sqlx::PgPool, args: &[String]) -> Result<(), String> {
    let user_by_email = |email: String| async move {
        sqlx::query_scalar::<_, uuid::Uuid>("SELECT id FROM users WHERE lower(email) = lower($1)")
            .bind(&email)
            .fetch_optional(pool)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no account with email {email}"))
    };
    match args.first().map(String::as_str) {
        Some("balance") if args.len() == 2 => {
            let user = user_by_email(args[1].clone()).await?;
            let b = crate::server::ledger::balance(pool, user, chrono::Utc::now()).await.map_err(|e| e.to_string())?;
            println!(
                "total {}  (allotment {}, purchased {}, free {}, adjustment {}; pending allotment {})",
                b.total, b.allotment, b.purchased, b.free, b.adjustment, b.pending_allotment
            );
            Ok(())
        }
        Some("adjust") if args.len() >= 4 => {
            let user = user_by_email(args[1].clone()).await?;
            let delta: i64 =
                args[2].parse().map_err(|_| format!("DELTA must be a whole number of credits, got `{}`", args[2]))?;
            let reason = args[3..].join(" ");
            let key = format!("adjust:{}", uuid::Uuid::new_v4());
            let mut conn = pool.acquire().await.map_err(|e| e.to_string())?;
            let balance = crate::server::ledger::adjust(&mut conn, user, delta, &reason, &key, chrono::Utc::now())
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(%user, delta, %reason, %key, "credit adjustment");
            println!("adjusted by {delta}; balance now {balance} (entry {key})");
            Ok(())
        }
        Some("rebuild-usage") if args.len() == 2 => {
            let user = user_by_email(args[1].clone()).await?;
            let days: i32 = sqlx::query_scalar("SELECT credit_usage_rebuild($1)")
                .bind(user)
                .fetch_one(pool)
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(%user, days, "usage rollup rebuilt from the ledger by an operator");
            println!("usage per day rebuilt from the ledger: {days} day(s)");
            Ok(())
        }
        Some("check") if args.len() == 1 => {
            let problems = crate::server::ledger::problems(pool, None).await.map_err(|e| e.to_string())?;
            if problems.is_empty() {
                println!("ledger consistent: every balance equals the sum of its entries");
                Ok(())
            } else {
                for (user, p) in &problems {
                    println!("{user}: {p}");
                }
                Err(format!("{} ledger problem(s)", problems.len()))
            }
        }
        _ => Err(USAGE.to_string()),
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).try_init();
}

fn embedded(config: &Config) -> Result<EmbeddedPg, String> {
    EmbeddedPg::ensure(&config.embedded_pg_dir, config.embedded_pg_port)
        .map_err(|e| format!("embedded PostgreSQL: {e}"))
}

/// Connects to `DATABASE_URL`, or to the embedded cluster's `tally` database, and migrates.
async fn connect_and_migrate(config: &Config) -> Result<sqlx::PgPool, String> {
    let url = match &config.database_url {
        Some(url) => url.expose().to_string(),
        None => {
            let pg = embedded(config)?;
            tracing::info!(port = pg.port, dir = %pg.data_dir.display(), "using the embedded PostgreSQL (DATABASE_URL is not set)");
            db::create_database_if_missing(&pg.url("postgres"), "tally")
                .await
                .map_err(|e| format!("creating database tally: {e}"))?;
            pg.url("tally")
        }
    };
    let pool =
        db::connect(&url, db::PoolSettings::of(config)).await.map_err(|e| format!("connecting to PostgreSQL: {e}"))?;
    db::migrate(&pool).await.map_err(|e| format!("applying migrations: {e}"))?;
    Ok(pool)
}

async fn serve(config: Config) -> Result<(), String> {
    config
        .check_release(!cfg!(debug_assertions))
        .map_err(|e| format!("{e}\nSee .env.example for every variable and what it expects."))?;
    for warning in config.startup_warnings() {
        tracing::warn!("{}", "!".repeat(72));
        tracing::warn!("{warning}");
        tracing::warn!("{}", "!".repeat(72));
    }
    let pool = connect_and_migrate(&config).await?;
    let app_url = config.app_url.clone();
    let mode = config.polar.mode;
    let local = config.polar.standin.clone();
    let mail_to_dev_mailbox = config.smtp_url.is_none();
    let app = Application::build(config, pool).await.map_err(|e| format!("binding the HTTP port: {e}"))?;
    tracing::info!(polar_mode = mode.as_str(), port = app.port(), "Tally is ready");
    println!("\n  Tally is running at {app_url}\n");
    if let Some(standin) = &local {
        // Local mode only, on the terminal (never in the logs): where a developer reads the
        // mail the app sends, and the token the stand-in's controls ask for.
        let base = app_url.as_str().trim_end_matches('/');
        if mail_to_dev_mailbox {
            println!("  Mail goes to the dev mailbox: {base}/dev/mailbox?token={}", standin.controls_token.expose());
        }
        println!("  Stand-in controls (tests, demos): Authorization: Bearer {}\n", standin.controls_token.expose());
    }
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
