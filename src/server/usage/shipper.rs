//! Sends the usage outbox to Polar (see the module above for the guarantees).

use super::{BATCH, UNITS_PROPERTY};
use crate::server::polar::client::{PolarClient, UsageEvent};
use crate::server::polar::PolarError;
use crate::server::throttle::{self, Throttle};
use chrono::{DateTime, Duration, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// One outbox row, as the shipper claims it.
#[derive(Debug, Clone, sqlx::FromRow)]
struct Due {
    id: i64,
    user_id: Uuid,
    external_id: String,
    units: i64,
    occurred_at: DateTime<Utc>,
    attempts: i32,
    /// `credits.spent` or `credits.overage` (`super::EVENT_NAME`, `super::OVERAGE_EVENT_NAME`).
    event: String,
}

/// What one round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shipped {
    /// Nothing was due.
    Nothing,
    /// `sent` events reached Polar (inserted or already there), `parked` were refused alone.
    Sent { sent: usize, parked: usize },
    /// Polar could not take them now; they are due again after `wait` (nothing parked).
    Deferred { sent: usize, wait: Duration },
}

fn event(d: &Due) -> UsageEvent {
    let mut metadata = serde_json::Map::new();
    metadata.insert(UNITS_PROPERTY.into(), d.units.into());
    UsageEvent {
        name: d.event.clone(),
        external_customer_id: d.user_id.to_string(),
        external_id: d.external_id.clone(),
        timestamp: Some(d.occurred_at),
        metadata,
    }
}

/// Retry delay after `attempts` transient failures: 2 s doubling, at most 5 minutes.
pub fn backoff(attempts: i32) -> Duration {
    Duration::seconds(2i64.saturating_pow(attempts.clamp(1, 16) as u32).min(300))
}

/// The share of Polar's quota usage ingestion of all instances may take
/// (`USAGE_INGEST_REQUESTS_PER_MINUTE`), and the one subject it is counted under.
pub fn ingest_budget(per_minute: u32) -> (Throttle, &'static str) {
    (Throttle { scope: "polar_ingest", limit: per_minute, window_secs: 60 }, "token")
}

/// Claims up to [`BATCH`] due rows (`FOR UPDATE SKIP LOCKED`, so instances never send the
/// same rows at once), sends them and records the outcome, in one transaction: a crash
/// before the commit leaves them pending, and their resend is deduplicated by Polar.
///
/// Each request first takes a slot of `per_minute`, counted in PostgreSQL and so shared by
/// every instance; without one the batch waits for the next minute.
pub async fn ship_due(
    pool: &PgPool,
    polar: &PolarClient,
    per_minute: u32,
    now: DateTime<Utc>,
) -> Result<Shipped, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Stamped from the database's clock, never later than now: Polar refuses an event dated
    // in the future (an app server whose clock runs ahead would otherwise have its events
    // parked for good).
    let due: Vec<Due> = sqlx::query_as(
        "SELECT id, user_id, external_id, units, least(occurred_at, clock_timestamp()) AS occurred_at, attempts, event
           FROM usage_outbox
          WHERE status = 'pending' AND next_attempt_at <= $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(now)
    .bind(BATCH)
    .fetch_all(&mut *tx)
    .await?;
    if due.is_empty() {
        return Ok(Shipped::Nothing);
    }
    let (budget, _) = ingest_budget(per_minute);
    let outcome = send(&mut tx, pool, polar, budget, &due, now).await?;
    failpoint_before_commit(due.len()).await;
    tx.commit().await?;
    Ok(outcome)
}

/// Test builds only: with `TALLY_TEST_FAILPOINT=usage-before-commit` the shipper stops for
/// good after Polar has the batch and the rows are marked sent, before the mark commits, so a
/// test can `kill -9` the process exactly there (`tests/integration/usage.rs`).
#[cfg(debug_assertions)]
async fn failpoint_before_commit(events: usize) {
    if std::env::var("TALLY_TEST_FAILPOINT").as_deref() == Ok("usage-before-commit") {
        eprintln!("failpoint usage-before-commit reached with {events} events");
        std::future::pending::<()>().await;
    }
}

#[cfg(not(debug_assertions))]
async fn failpoint_before_commit(_: usize) {}

/// The events a 422 names (`loc` = `["body", "events", i, …]`), as indices into the batch.
fn refused_indices(e: &PolarError, len: usize) -> Vec<usize> {
    let PolarError::Invalid { issues, .. } = e else { return vec![] };
    let mut found: Vec<usize> = issues
        .iter()
        .filter(|i| i.loc.first().and_then(|v| v.as_str()) == Some("body"))
        .filter(|i| i.loc.get(1).and_then(|v| v.as_str()) == Some("events"))
        .filter_map(|i| i.loc.get(2).and_then(|v| v.as_u64()))
        .map(|i| i as usize)
        .filter(|i| *i < len)
        .collect();
    found.sort_unstable();
    found.dedup();
    found
}

/// Sends `rows`. Polar validates a batch as a whole: when it refuses one, the events its
/// answer names are parked and the rest sent again; when it names none, the batch is halved
/// until the refused event is alone.
async fn send(
    tx: &mut PgConnection,
    pool: &PgPool,
    polar: &PolarClient,
    budget: Throttle,
    rows: &[Due],
    now: DateTime<Utc>,
) -> Result<Shipped, sqlx::Error> {
    let (mut sent, mut parked) = (0, 0);
    let mut parts: Vec<Vec<&Due>> = vec![rows.iter().collect()];
    while let Some(part) = parts.pop() {
        if part.is_empty() {
            continue;
        }
        if let Err(secs) = throttle::hit(pool, budget, ingest_budget(0).1, now).await? {
            let rest: Vec<i64> = part.iter().chain(parts.iter().flatten()).map(|d| d.id).collect();
            let wait = Duration::seconds(secs as i64);
            sqlx::query("UPDATE usage_outbox SET next_attempt_at = $2 WHERE id = ANY($1)")
                .bind(&rest)
                .bind(now + wait)
                .execute(&mut *tx)
                .await?;
            tracing::info!(events = rest.len(), wait_s = secs, "usage ingestion budget used up for this minute");
            return Ok(Shipped::Deferred { sent, wait });
        }
        let events: Vec<UsageEvent> = part.iter().map(|d| event(d)).collect();
        match polar.ingest_events(&events).await {
            Ok(r) => {
                mark_sent(tx, &part, now).await?;
                sent += part.len();
                if r.duplicates > 0 {
                    tracing::info!(
                        duplicates = r.duplicates,
                        "usage events already at Polar (a resend), not counted twice"
                    );
                }
            }
            Err(e @ PolarError::Invalid { .. }) => {
                let named = refused_indices(&e, part.len());
                if named.is_empty() && part.len() > 1 {
                    let (a, b) = part.split_at(part.len() / 2);
                    parts.push(b.to_vec());
                    parts.push(a.to_vec());
                    continue;
                }
                let refused: Vec<usize> = if named.is_empty() { vec![0] } else { named };
                for &i in &refused {
                    park(tx, part[i], &e).await?;
                    parked += 1;
                }
                parts.push(part.iter().enumerate().filter(|(i, _)| !refused.contains(i)).map(|(_, d)| *d).collect());
            }
            Err(e) => {
                // Not the events' fault: everything not yet sent waits, nothing is parked.
                let rest: Vec<i64> = part.iter().chain(parts.iter().flatten()).map(|d| d.id).collect();
                let attempts = part.iter().map(|d| d.attempts).max().unwrap_or(0) + 1;
                let wait = match &e {
                    PolarError::RateLimited { retry_after: Some(s) } => Duration::seconds((*s).min(3600) as i64),
                    _ => backoff(attempts),
                };
                sqlx::query(
                    "UPDATE usage_outbox SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3 WHERE id = ANY($1)",
                )
                .bind(&rest)
                .bind(e.to_string())
                .bind(now + wait)
                .execute(&mut *tx)
                .await?;
                tracing::warn!(events = rest.len(), error = %e, wait_s = wait.num_seconds(), "usage events not sent; will retry");
                return Ok(Shipped::Deferred { sent, wait });
            }
        }
    }
    Ok(Shipped::Sent { sent, parked })
}

async fn park(tx: &mut PgConnection, d: &Due, e: &PolarError) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE usage_outbox SET status = 'failed', attempts = attempts + 1, last_error = $2 WHERE id = $1")
        .bind(d.id)
        .bind(e.to_string())
        .execute(&mut *tx)
        .await?;
    tracing::error!(outbox_id = d.id, external_id = %d.external_id, error = %e, "usage event refused by Polar; parked");
    Ok(())
}

async fn mark_sent(tx: &mut PgConnection, rows: &[&Due], now: DateTime<Utc>) -> Result<(), sqlx::Error> {
    let ids: Vec<i64> = rows.iter().map(|d| d.id).collect();
    sqlx::query("UPDATE usage_outbox SET status = 'sent', sent_at = $2, attempts = attempts + 1, last_error = NULL WHERE id = ANY($1)")
        .bind(&ids)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Runs forever: ships while a full batch keeps coming, otherwise every second.
pub async fn run(pool: PgPool, polar: PolarClient, per_minute: u32, heartbeat: crate::server::supervisor::Heartbeat) {
    loop {
        heartbeat.beat();
        match ship_due(&pool, &polar, per_minute, Utc::now()).await {
            Ok(Shipped::Sent { sent, parked }) if (sent + parked) as i64 == BATCH => continue,
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "usage shipper: database error"),
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_422_names_the_events_it_refuses() {
        let issue = |loc: serde_json::Value| crate::server::polar::client::ValidationIssue {
            kind: "value_error".into(),
            loc: loc.as_array().unwrap().clone(),
            msg: "bad".into(),
        };
        let e = PolarError::Invalid {
            code: None,
            issues: vec![
                issue(serde_json::json!(["body", "events", 3, "name"])),
                issue(serde_json::json!(["body", "events", 3, "metadata"])),
                issue(serde_json::json!(["body", "events", 0, "external_customer_id"])),
                issue(serde_json::json!(["body", "events", 99, "name"])),
                issue(serde_json::json!(["body", "other"])),
            ],
        };
        assert_eq!(refused_indices(&e, 10), vec![0, 3]);
        assert!(refused_indices(&PolarError::Invalid { code: None, issues: vec![] }, 10).is_empty());
        assert!(refused_indices(&PolarError::RateLimited { retry_after: None }, 10).is_empty());
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::seconds(2));
        assert_eq!(backoff(3), Duration::seconds(8));
        assert_eq!(backoff(40), Duration::seconds(300));
    }

    #[test]
    fn an_event_carries_the_entry_key_the_user_and_the_credits() {
        let d = Due {
            id: 1,
            user_id: Uuid::nil(),
            external_id: "api:k:abc#2".into(),
            units: 7,
            occurred_at: DateTime::from_timestamp(0, 0).unwrap(),
            attempts: 0,
            event: super::super::EVENT_NAME.into(),
        };
        let v = serde_json::to_value(event(&d)).unwrap();
        assert_eq!(v["name"], "credits.spent");
        assert_eq!(v["external_id"], "api:k:abc#2");
        assert_eq!(v["external_customer_id"], Uuid::nil().to_string());
        assert_eq!(v["metadata"]["credits"], 7);
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00Z");
    }
}

/// Which parked events to send again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retry {
    /// Every parked event.
    All,
    /// One, by its outbox id or its `external_id` (the ledger entry's key).
    One(String),
    /// One, by its outbox id, only if it is `user`'s.
    OneOf(Uuid, i64),
}

/// Puts parked (`failed`) events back in the queue, due now, with their attempts reset; their
/// `external_id` is unchanged, so Polar still counts each once however often it is sent.
/// Returns how many were re-queued.
pub async fn retry_parked<'e>(db: impl sqlx::PgExecutor<'e>, which: &Retry) -> Result<u64, sqlx::Error> {
    let (all, id, external, user): (bool, Option<i64>, Option<&str>, Option<Uuid>) = match which {
        Retry::All => (true, None, None, None),
        Retry::One(x) => (false, x.parse().ok(), Some(x.as_str()), None),
        Retry::OneOf(user, id) => (false, Some(*id), None, Some(*user)),
    };
    let done = sqlx::query(
        "UPDATE usage_outbox SET status = 'pending', attempts = 0, next_attempt_at = now(),
                last_error = 'retried by an operator after: ' || coalesce(last_error, 'no error recorded')
          WHERE status = 'failed' AND ($1 OR id = $2 OR external_id = $3) AND ($4::uuid IS NULL OR user_id = $4)",
    )
    .bind(all)
    .bind(id)
    .bind(external)
    .bind(user)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// A usage event not sent yet, as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Waiting {
    pub id: i64,
    /// The ledger entry's key: Polar's `external_id`.
    pub external_id: String,
    pub event: String,
    pub units: i64,
    pub occurred_at: DateTime<Utc>,
    /// `pending` (queued) or `failed` (parked).
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
}

/// `user`'s newest `limit` usage events still to send, queued or parked, newest first. (Sent
/// ones are not looked up per customer: nothing indexes them by account, and the spend path
/// is not slowed down to index them. Polar's meter shows them.)
pub async fn waiting_of<'e>(
    db: impl sqlx::PgExecutor<'e>,
    user: Uuid,
    limit: i64,
) -> Result<Vec<Waiting>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, external_id, event, units, occurred_at, status, attempts, last_error FROM usage_outbox
          WHERE status IN ('pending', 'failed') AND user_id = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(user)
    .bind(limit)
    .fetch_all(db)
    .await
}
