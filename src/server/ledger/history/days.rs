//! Spend per credit day, read from the rollup the spends keep.

use super::*;

/// Credits spent per credit day (days starting at midnight in `offset`), for the `days` days
/// ending with the day of `now`, oldest first; days without spend are zero. Reads the rollup
/// (`credit_usage_days`, at most `days` rows), kept by the transaction that writes each spend,
/// so the cost does not grow with the number of spends.
pub async fn daily_spend(
    db: impl sqlx::PgExecutor<'_>,
    user: Uuid,
    offset: FixedOffset,
    days: u32,
    now: DateTime<Utc>,
) -> Result<Vec<(NaiveDate, i64)>, sqlx::Error> {
    let (first, today) = chart_days(now, offset, days);
    let spent: Vec<(NaiveDate, i64)> = sqlx::query_as(
        "SELECT day, spent FROM credit_usage_days WHERE user_id = $1 AND day BETWEEN $2 AND $3 ORDER BY day",
    )
    .bind(user)
    .bind(first)
    .bind(today)
    .fetch_all(db)
    .await?;
    Ok(fill_days(today, days, &spent))
}

/// Makes the database file spends under the credit day that begins at `offset` (the
/// operator's `CREDIT_DAY_BOUNDARY`); when that changed, the rollup is rebuilt from the
/// entries in one transaction. Returns whether it changed.
pub async fn set_day_offset(pool: &PgPool, offset: FixedOffset) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT credit_usage_set_offset($1)").bind(offset.local_minus_utc()).fetch_one(pool).await
}

/// The first and last of the `days` credit days (starting at midnight in `offset`) ending with
/// the day of `now`.
pub(super) fn chart_days(now: DateTime<Utc>, offset: FixedOffset, days: u32) -> (NaiveDate, NaiveDate) {
    let today = now.with_timezone(&offset).date_naive();
    (today - chrono::Duration::days(days as i64 - 1), today)
}

/// Every one of the `days` days ending with `today`, oldest first, with its spend or zero.
pub fn fill_days(today: NaiveDate, days: u32, spent: &[(NaiveDate, i64)]) -> Vec<(NaiveDate, i64)> {
    (0..days as i64)
        .rev()
        .map(|back| {
            let day = today - chrono::Duration::days(back);
            (day, spent.iter().find(|(d, _)| *d == day).map(|(_, n)| *n).unwrap_or(0))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_day_is_there_oldest_first() {
        let d = |n| NaiveDate::from_ymd_opt(2026, 11, n).unwrap();
        let filled = fill_days(d(30), 3, &[(d(29), 7), (d(1), 99)]);
        assert_eq!(filled, vec![(d(28), 0), (d(29), 7), (d(30), 0)]);
    }
}
