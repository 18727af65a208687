//! What is kept, and for how long. Every ten minutes (and on demand, `run_once`) the janitor
//! deletes, in batches:
//! - sessions past their expiry;
//! - failed sign-ins older than the limiter's window, and throttle windows older than a day;
//! - account tokens a week after they expired or were used;
//! - recorded metered-API answers older than `metered::idempotency::RETENTION_DAYS`;
//! - dev-mailbox mail older than a week;
//! - usage events Polar has had for `usage::RETENTION_DAYS` (pending and parked ones stay);
//!
//! and it writes the credit releases and expiries that fell due on accounts that have not spent
//! since (pages read them without writing), and it erases the payload of webhook events processed more than
//! `WEBHOOK_PAYLOAD_RETENTION_DAYS` ago (the row and its `webhook-id` stay, so a late
//! redelivery is still recognised as a duplicate). Deleting twice is harmless, so instances
//! need not coordinate.

use crate::server::config::Config;
use chrono::{DateTime, Duration, Utc};
use sqlx::PgPool;

/// Rows removed (or payloads erased) by one pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub sessions: u64,
    pub login_failures: u64,
    pub rate_counters: u64,
    pub account_tokens: u64,
    pub api_answers: u64,
    pub webhook_payloads: u64,
    pub dev_mail: u64,
    pub usage_events: u64,
}

/// Runs `sql` (which must delete or update at most one batch, bound `$1` = cutoff) until it
/// touches nothing more.
async fn drain(pool: &PgPool, sql: &str, cutoff: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let n = sqlx::query(sql).bind(cutoff).execute(pool).await?.rows_affected();
        total += n;
        if n < 5000 {
            return Ok(total);
        }
    }
}

pub async fn run_once(pool: &PgPool, config: &Config, now: DateTime<Utc>) -> Result<Pruned, sqlx::Error> {
    let window = Duration::minutes(crate::server::auth::rate_limit::WINDOW_MINUTES);
    Ok(Pruned {
        sessions: drain(pool, "DELETE FROM sessions WHERE ctid IN (SELECT ctid FROM sessions WHERE expires_at < $1 LIMIT 5000)", now).await?,
        login_failures: drain(pool, "DELETE FROM login_failures WHERE id IN (SELECT id FROM login_failures WHERE failed_at < $1 LIMIT 5000)", now - window).await?,
        rate_counters: drain(pool, "DELETE FROM rate_counters WHERE ctid IN (SELECT ctid FROM rate_counters WHERE window_start < $1 LIMIT 5000)", now - Duration::days(1)).await?,
        account_tokens: drain(
            pool,
            "DELETE FROM account_tokens WHERE token_hash IN (SELECT token_hash FROM account_tokens WHERE coalesce(used_at, expires_at) < $1 LIMIT 5000)",
            now - Duration::days(7),
        )
        .await?,
        api_answers: drain(
            pool,
            "DELETE FROM api_idempotency WHERE ctid IN (SELECT ctid FROM api_idempotency WHERE created_at < $1 LIMIT 5000)",
            now - Duration::days(crate::server::metered::idempotency::RETENTION_DAYS),
        )
        .await?,
        webhook_payloads: drain(
            pool,
            "UPDATE webhook_events SET payload = NULL, raw_body = NULL WHERE webhook_id IN (
                 SELECT webhook_id FROM webhook_events WHERE status IN ('done', 'skipped') AND processed_at < $1
                    AND (payload IS NOT NULL OR raw_body IS NOT NULL) LIMIT 5000)",
            now - Duration::days(config.webhook_payload_retention_days),
        )
        .await?,
        dev_mail: drain(pool, "DELETE FROM dev_mailbox WHERE id IN (SELECT id FROM dev_mailbox WHERE created_at < $1 LIMIT 5000)", now - Duration::days(7)).await?,
        usage_events: drain(
            pool,
            "DELETE FROM usage_outbox WHERE id IN (SELECT id FROM usage_outbox WHERE status = 'sent' AND sent_at < $1 LIMIT 5000)",
            now - Duration::days(crate::server::usage::RETENTION_DAYS),
        )
        .await?,
    })
}

/// Runs for ever, a pass every ten minutes.
pub async fn run(pool: PgPool, config: std::sync::Arc<Config>, heartbeat: crate::server::supervisor::Heartbeat) {
    loop {
        heartbeat.beat();
        match run_once(&pool, &config, Utc::now()).await {
            Ok(p) if p != Pruned::default() => tracing::info!(?p, "janitor pruned old rows"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "janitor pass failed"),
        }
        // Releases and expiries that fell due on accounts that did not spend since: pages
        // read them without writing (`ledger::balance`), so they are written here.
        match crate::server::ledger::maintain_due(&pool, Utc::now(), 5000).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(accounts = n, "janitor applied due credit releases and expiries"),
            Err(e) => tracing::warn!(error = %e, "janitor could not apply due credit releases"),
        }
        for _ in 0..60 {
            heartbeat.beat();
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
        }
    }
}
