//! How a metered call's spend reaches the ledger: alone (one transaction per spend) or in a
//! batch with the calls in flight at the same moment (group commit, `SPEND_BATCH`).
//!
//! Batched, the spends that queue up while batches are in the database are shared among the
//! free slots (at most [`BATCHES_IN_FLIGHT`] batches at once, at most `SPEND_BATCH` spends
//! each) and each batch is one statement: `credit_spend_batch` (one lock per account, one
//! commit for all) and the keyed requests' recorded answers. A spend waits for no timer: with
//! a slot free, it goes after at most a few turns of the scheduler (given to the callers the
//! last batch answered, who mostly spend again at once). Each spend keeps its own outcome,
//! idempotency key and recorded answer, and every answer is given after the commit. A batch
//! the database refuses (it rolled back) is tried again spend by spend, so one spend's failure
//! is never its batch-mates'; if the connection fails while a batch is in the database,
//! whether it happened is unknown, and each caller gets an error (as a lone spend's caller
//! would).

use super::idempotency::{self, Answer, Record};
use crate::server::db;
use crate::server::ledger::{self, batch::Spend, SpendOutcome};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// What a successful call answers (and, for a keyed request, records): 200, the endpoint's
/// JSON with `credits_spent`, and `X-Credits-Remaining`.
pub fn spent_answer(answer: &Value, spent: i64, balance: i64) -> Answer {
    let mut answer = answer.clone();
    if let Some(obj) = answer.as_object_mut() {
        obj.insert("credits_spent".into(), json!(spent));
    }
    Answer {
        status: 200,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-credits-remaining".into(), balance.to_string()),
        ],
        body: serde_json::to_vec(&answer).unwrap_or_default(),
    }
}

/// Why a spend has no outcome.
#[derive(Debug, thiserror::Error)]
pub enum SpendError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// The spend itself raised an error in the database (its batch-mates went on).
    #[error("the spend was refused by the ledger: {0}")]
    Refused(String),
    /// The batch's connection failed while it was in the database: it may or may not have
    /// happened.
    #[error("the spend batch's connection failed: {0}")]
    Commit(String),
    #[error("the spend batcher stopped")]
    Stopped,
}

/// Spends alone or batched; cheap to clone.
#[derive(Clone)]
pub enum Spender {
    Alone(PgPool),
    Batched(mpsc::Sender<Job>),
}

pub struct Job {
    spend: Spend,
    record: Option<Record>,
    reply: oneshot::Sender<Result<SpendOutcome, SpendError>>,
}

/// How many batches may be in the database at once: while one waits for its commit to reach
/// the disk, another is written (spread over accounts, on the other core; on one account, it
/// waits for the account's lock). Measured in `scripts/bench`: 4 made smaller batches and
/// fewer spends a second than 2 (docs/benchmarks.md).
const BATCHES_IN_FLIGHT: usize = 2;

/// At most this many scheduler turns a free slot waits for just-answered callers to return.
const RETURN_TURNS: usize = 4;

impl Spender {
    /// One transaction per spend.
    pub fn alone(pool: PgPool) -> Spender {
        Spender::Alone(pool)
    }

    /// Group commit: spends queued while batches are written go together, at most `max` a
    /// batch. Starts the task that gathers them; it ends when the last clone of the spender is
    /// dropped.
    pub fn batched(pool: &PgPool, max: usize) -> Spender {
        Spender::batched_with(pool, max, BATCHES_IN_FLIGHT)
    }

    /// [`Spender::batched`] with at most `in_flight` batches in the database at once.
    ///
    /// The batches go through connections of their own (`in_flight` of them, beside `pool`),
    /// always the same ones: through the app's pool they went to whichever of its connections
    /// was idle longest, each with its own cold caches, and a batch took twice as long in the
    /// database (docs/benchmarks.md).
    pub fn batched_with(pool: &PgPool, max: usize, in_flight: usize) -> Spender {
        let max = max.max(1);
        let in_flight = in_flight.max(1);
        let pool = db::pool_beside(pool, in_flight as u32);
        let (jobs, mut queue) = mpsc::channel::<Job>(max * 16);
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(in_flight));
            // How many callers the last batch to end answered.
            let answered = Arc::new(AtomicUsize::new(0));
            while let Some(first) = queue.recv().await {
                // While every slot is busy, calls queue up: they make the next batches.
                let Ok(slot) = slots.clone().acquire_owned().await else { break };
                // The callers a batch has just answered mostly spend again at once. While fewer
                // calls are queued than that, give them a few turns of the scheduler (no timer)
                // to join this batch rather than make a small one of their own. Under heavy
                // load the queue is long and this costs nothing.
                for _ in 0..RETURN_TURNS {
                    if queue.len() + 1 >= answered.load(Ordering::Relaxed) {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                // What is queued now is shared among the free slots, so that batches are
                // written side by side rather than one after the other.
                let free = slots.available_permits() + 1;
                let share = (queue.len() + 1).div_ceil(free).clamp(1, max);
                let mut batch = vec![first];
                while batch.len() < share {
                    match queue.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let pool = pool.clone();
                let answered = answered.clone();
                tokio::spawn(async move {
                    let callers = batch.len();
                    run_batch(&pool, batch).await;
                    answered.store(callers, Ordering::Relaxed);
                    drop(slot);
                });
            }
        });
        Spender::Batched(jobs)
    }

    /// Spends, and for a keyed request records its answer in the same transaction when it spent.
    pub async fn spend(&self, spend: Spend, record: Option<Record>) -> Result<SpendOutcome, SpendError> {
        match self {
            Spender::Alone(pool) => spend_alone(pool, &spend, record.as_ref()).await,
            Spender::Batched(jobs) => {
                let (reply, answer) = oneshot::channel();
                jobs.send(Job { spend, record, reply }).await.map_err(|_| SpendError::Stopped)?;
                answer.await.map_err(|_| SpendError::Stopped)?
            }
        }
    }
}

/// One spend in a transaction of its own, as before batching.
async fn spend_alone(pool: &PgPool, spend: &Spend, record: Option<&Record>) -> Result<SpendOutcome, SpendError> {
    let mut tx = pool.begin().await?;
    let outcome =
        ledger::spend(&mut tx, spend.user_id, spend.cost, &spend.key, &spend.metadata, chrono::Utc::now()).await?;
    if let (SpendOutcome::Spent { spent, balance }, Some(r)) = (outcome, record) {
        idempotency::record_many(&mut tx, &[(r, spent_answer(&r.answer, spent, balance))]).await?;
    }
    if matches!(outcome, SpendOutcome::Spent { .. }) {
        tx.commit().await?;
    } else {
        // Nothing to keep; the connection goes back at once (under many concurrent calls,
        // holding it while the caller asks for another could exhaust the pool).
        tx.rollback().await?;
    }
    Ok(outcome)
}

enum BatchFailure {
    /// Refused or never sent: nothing of the batch happened.
    Before(sqlx::Error),
    /// The connection failed while the batch was in the database: unknown whether it happened.
    Unknown(sqlx::Error),
}

async fn run_batch(pool: &PgPool, batch: Vec<Job>) {
    match write_batch(pool, &batch).await {
        Ok(results) => {
            for (job, result) in batch.into_iter().zip(results) {
                let _ = job.reply.send(result.map_err(SpendError::Refused));
            }
        }
        Err(BatchFailure::Before(e)) => {
            tracing::warn!(error = %e, spends = batch.len(), "a spend batch failed; its spends go one by one");
            for job in batch {
                let result = spend_alone(pool, &job.spend, job.record.as_ref()).await;
                let _ = job.reply.send(result);
            }
        }
        Err(BatchFailure::Unknown(e)) => {
            tracing::error!(error = %e, spends = batch.len(), "a spend batch's connection failed");
            for job in batch {
                let _ = job.reply.send(Err(SpendError::Commit(e.to_string())));
            }
        }
    }
}

/// The batch's spends and its keyed answers, in one statement: one round trip, and the
/// statement is its own transaction (committed when it ends, or not at all).
const WRITE_BATCH_SQL: &str = "WITH b AS MATERIALIZED (SELECT * FROM credit_spend_batch($1, $2, $3, $4, $5)),
recorded AS (
    INSERT INTO api_idempotency (api_key_id, client_key, request_hash, status_code, headers, body)
    SELECT r.api_key_id, r.client_key, r.hash, 200,
           jsonb_build_array(jsonb_build_array('content-type', 'application/json'),
                             jsonb_build_array('x-credits-remaining', b.balance::text)),
           r.body
      FROM unnest($6::int[], $7::uuid[], $8::text[], $9::bytea[], $10::bytea[]) AS r(ord, api_key_id, client_key, hash, body)
      JOIN b ON b.ord = r.ord
     WHERE b.status = 'spent'
)
SELECT ord, status, spent, balance, error FROM b";

async fn write_batch(pool: &PgPool, batch: &[Job]) -> Result<Vec<Result<SpendOutcome, String>>, BatchFailure> {
    let spends: Vec<Spend> = batch.iter().map(|j| j.spend.clone()).collect();
    // A keyed request's answer as `spent_answer` writes it: the body does not depend on the
    // balance (what is spent is the cost), the balance header is filled in by the statement.
    let keyed: Vec<(i32, &Record, Vec<u8>)> = batch
        .iter()
        .enumerate()
        .filter_map(|(i, job)| {
            let r = job.record.as_ref()?;
            Some((i as i32 + 1, r, spent_answer(&r.answer, job.spend.cost, 0).body))
        })
        .collect();
    let query = ledger::batch::bind_spends(sqlx::query_as(WRITE_BATCH_SQL), &spends, chrono::Utc::now())
        .bind(keyed.iter().map(|(o, ..)| *o).collect::<Vec<i32>>())
        .bind(keyed.iter().map(|(_, r, _)| r.api_key_id).collect::<Vec<_>>())
        .bind(keyed.iter().map(|(_, r, _)| r.client_key.as_str()).collect::<Vec<_>>())
        .bind(keyed.iter().map(|(_, r, _)| r.hash.as_slice()).collect::<Vec<_>>())
        .bind(keyed.iter().map(|(.., body)| body.as_slice()).collect::<Vec<_>>());
    let rows: Vec<ledger::batch::BatchRow> = query.fetch_all(pool).await.map_err(|e| match e {
        sqlx::Error::Database(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => BatchFailure::Before(e),
        e => BatchFailure::Unknown(e),
    })?;
    Ok(ledger::batch::outcomes(spends.len(), rows))
}
