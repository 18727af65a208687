//! Many spends in one call (`credit_spend_batch`, `migrations/…_spend_batches.sql`): one lock
//! per account and one commit for the lot. Each spend keeps its own outcome, as [`super::spend`]
//! would have given it one by one in the batch's order, and a spend that fails (a key of the
//! wrong shape, or another account's) fails alone.

use super::SpendOutcome;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

/// One spend of a batch: like [`super::spend`]'s arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Spend {
    pub user_id: Uuid,
    pub cost: i64,
    pub key: String,
    pub metadata: Value,
}

/// One row of `credit_spend_batch`: position (from 1), status, spent, balance, error.
pub type BatchRow = (i32, String, Option<i64>, Option<i64>, Option<String>);

/// The statement that applies a batch; bind it with [`bind_spends`].
pub const SPEND_BATCH_SQL: &str =
    "SELECT ord, status, spent, balance, error FROM credit_spend_batch($1, $2, $3, $4, $5)";

/// Binds `spends` and `now` as `$1`–`$5` of a statement calling `credit_spend_batch`.
pub fn bind_spends<'q, O>(
    query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    spends: &'q [Spend],
    now: DateTime<Utc>,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    query
        .bind(spends.iter().map(|s| s.user_id).collect::<Vec<Uuid>>())
        .bind(spends.iter().map(|s| s.cost).collect::<Vec<i64>>())
        .bind(spends.iter().map(|s| s.key.as_str()).collect::<Vec<&str>>())
        .bind(spends.iter().map(|s| &s.metadata).collect::<Vec<&Value>>())
        .bind(now)
}

/// The batch's rows as one result per spend, in the spends' order: its outcome, or the
/// message of the error it alone raised (nothing of it applied).
pub fn outcomes(spends: usize, rows: Vec<BatchRow>) -> Vec<Result<SpendOutcome, String>> {
    let mut out: Vec<Option<Result<SpendOutcome, String>>> = vec![None; spends];
    for (ord, status, spent, balance, error) in rows {
        let (spent, balance) = (spent.unwrap_or(0), balance.unwrap_or(0));
        let result = match status.as_str() {
            "spent" => Ok(SpendOutcome::Spent { spent, balance }),
            "duplicate" => Ok(SpendOutcome::Duplicate { spent, balance }),
            "over_cap" => Ok(SpendOutcome::OverCap { available: balance }),
            "insufficient" => Ok(SpendOutcome::Insufficient { available: balance }),
            _ => Err(error.unwrap_or(status)),
        };
        if let Some(slot) = usize::try_from(ord).ok().and_then(|o| o.checked_sub(1)).and_then(|i| out.get_mut(i)) {
            *slot = Some(result);
        }
    }
    out.into_iter().map(|r| r.unwrap_or_else(|| Err("the batch gave this spend no answer".into()))).collect()
}

/// Applies `spends` in their order in the caller's transaction; one result per spend, in the
/// same order (see [`outcomes`]). An `Err` (the database failing) means the transaction is
/// unusable: roll it back.
pub async fn spend_batch(
    conn: &mut PgConnection,
    spends: &[Spend],
    now: DateTime<Utc>,
) -> Result<Vec<Result<SpendOutcome, String>>, sqlx::Error> {
    let rows: Vec<BatchRow> = bind_spends(sqlx::query_as(SPEND_BATCH_SQL), spends, now).fetch_all(conn).await?;
    Ok(outcomes(spends.len(), rows))
}
