//! How a metered call's spend reaches the ledger: alone (one transaction per spend) or in a
//! batch with the calls in flight at the same moment (group commit, `SPEND_BATCHING`).
//!
//! Batched, the spends that arrive while the previous batch is being written are applied
//! together by [`ledger::batch::spend_batch`]: one transaction, each account locked once, one
//! commit. A spend waits for no timer: the first one goes at once, and only what queues up
//! while a batch is in the database joins the next (at most [`Spender::batched`]'s `max`).
//! Each spend keeps its own outcome, idempotency key and recorded answer; every answer is
//! given after the commit. Should the batch fail before its commit (rolled back), each of its
//! spends is tried again alone, so one spend's failure is never its batch-mates'; should the
//! commit itself fail, whether it happened is unknown, and each caller gets an error.

use super::idempotency::{self, Answer, Record};
use crate::server::ledger::{self, batch::Spend, SpendOutcome};
use serde_json::{json, Value};
use sqlx::PgPool;
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
    /// The batch's commit failed: it may or may not have happened.
    #[error("the batch's commit failed: {0}")]
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

/// How many batches may be in the database at once: one being written while the next one
/// waits for its accounts' locks (or, spread over accounts, runs beside it).
const BATCHES_IN_FLIGHT: usize = 2;

impl Spender {
    /// One transaction per spend.
    pub fn alone(pool: PgPool) -> Spender {
        Spender::Alone(pool)
    }

    /// Group commit: spends queued while a batch is written go together, at most `max` a batch.
    /// Starts the task that gathers them; it ends when the last clone of the spender is dropped.
    pub fn batched(pool: PgPool, max: usize) -> Spender {
        let max = max.max(1);
        let (jobs, mut queue) = mpsc::channel::<Job>(max * 16);
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
            while let Some(first) = queue.recv().await {
                // While every slot is busy, calls queue up: they make the next batch.
                let Ok(slot) = slots.clone().acquire_owned().await else { break };
                let mut batch = vec![first];
                while batch.len() < max {
                    match queue.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let pool = pool.clone();
                tokio::spawn(async move {
                    run_batch(&pool, batch).await;
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
    /// Rolled back: nothing of the batch happened.
    Before(sqlx::Error),
    /// Unknown whether it happened.
    AtCommit(sqlx::Error),
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
        Err(BatchFailure::AtCommit(e)) => {
            tracing::error!(error = %e, spends = batch.len(), "a spend batch's commit failed");
            for job in batch {
                let _ = job.reply.send(Err(SpendError::Commit(e.to_string())));
            }
        }
    }
}

async fn write_batch(pool: &PgPool, batch: &[Job]) -> Result<Vec<Result<SpendOutcome, String>>, BatchFailure> {
    let spends: Vec<Spend> = batch.iter().map(|j| j.spend.clone()).collect();
    let mut tx = pool.begin().await.map_err(BatchFailure::Before)?;
    let results =
        ledger::batch::spend_batch(&mut tx, &spends, chrono::Utc::now()).await.map_err(BatchFailure::Before)?;
    let answers: Vec<(&Record, Answer)> = batch
        .iter()
        .zip(&results)
        .filter_map(|(job, result)| match (job.record.as_ref(), result) {
            (Some(r), Ok(SpendOutcome::Spent { spent, balance })) => {
                Some((r, spent_answer(&r.answer, *spent, *balance)))
            }
            _ => None,
        })
        .collect();
    idempotency::record_many(&mut tx, &answers).await.map_err(BatchFailure::Before)?;
    tx.commit().await.map_err(BatchFailure::AtCommit)?;
    Ok(results)
}
