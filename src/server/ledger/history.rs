//! Reading the ledger back for people: a user's entries newest first, a page at a time, and
//! their spend per credit day. Descriptions and signs are decided here, once, so every page
//! words the ledger the same way.

use crate::domain::money::group_thousands;
use crate::server::util::capitalize;
use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// One entry as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Entry {
    pub kind: String,
    pub amount: i64,
    pub effective_at: DateTime<Utc>,
    pub metadata: Value,
}

/// Up to `limit` of the user's entries in effect at `now`, newest first, after skipping
/// `offset`.
pub async fn entries(
    pool: &PgPool,
    user: Uuid,
    now: DateTime<Utc>,
    limit: i64,
    offset: i64,
) -> Result<Vec<Entry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT kind, amount, effective_at, metadata FROM credit_entries WHERE user_id = $1 AND effective_at <= $2
          ORDER BY effective_at DESC, id DESC LIMIT $3 OFFSET $4",
    )
    .bind(user)
    .bind(now)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await
}

/// Credits spent per credit day (days starting at midnight in `offset`), for the `days` days
/// ending with the day of `now`, oldest first; days without spend are zero.
pub async fn daily_spend(
    pool: &PgPool,
    user: Uuid,
    offset: FixedOffset,
    days: u32,
    now: DateTime<Utc>,
) -> Result<Vec<(NaiveDate, i64)>, sqlx::Error> {
    let spent: Vec<(NaiveDate, i64)> = sqlx::query_as(
        "SELECT (effective_at + make_interval(secs => $2))::date AS day, (-sum(amount))::bigint FROM credit_entries
          WHERE user_id = $1 AND kind = 'spend' AND effective_at > $3 - make_interval(days => $4) AND effective_at <= $3
          GROUP BY 1",
    )
    .bind(user)
    .bind(offset.local_minus_utc() as f64)
    .bind(now)
    .bind(days as i32 + 1)
    .fetch_all(pool)
    .await?;
    Ok(fill_days(now.with_timezone(&offset).date_naive(), days, &spent))
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

/// What an entry was, in words.
pub fn describe(kind: &str, metadata: &Value) -> String {
    match kind {
        "free_grant" => "Free credits".to_string(),
        "allotment" => match metadata["plan"].as_str() {
            Some(plan) => format!("{} plan allotment", capitalize(plan)),
            None => "Plan allotment".to_string(),
        },
        "daily_accrual" => "Daily allotment".to_string(),
        "purchase" => "Credit pack".to_string(),
        "spend" => {
            metadata["operation"].as_str().map(|o| format!("API call: {o}")).unwrap_or_else(|| "API call".into())
        }
        "refund_clawback" => "Refunded pack taken back".to_string(),
        "adjustment" => {
            metadata["reason"].as_str().map(|r| format!("Adjustment: {r}")).unwrap_or_else(|| "Adjustment".into())
        }
        "expiry" => "Unused allotment expired".to_string(),
        "overage" => "Overage (billed at the period's end)".to_string(),
        "advance" => "Allotment released early (from this period's later days)".to_string(),
        other => other.to_string(),
    }
}

/// An amount with its sign and thousands separators: `+1,000`, `-1`.
pub fn signed(amount: i64) -> String {
    if amount > 0 {
        format!("+{}", group_thousands(amount as u64))
    } else {
        format!("-{}", group_thousands(amount.unsigned_abs()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn entries_are_described_in_words() {
        assert_eq!(describe("allotment", &json!({ "plan": "pro" })), "Pro plan allotment");
        assert_eq!(describe("allotment", &json!({})), "Plan allotment");
        assert_eq!(describe("spend", &json!({ "operation": "text-stats" })), "API call: text-stats");
        assert_eq!(describe("spend", &json!(null)), "API call");
        assert_eq!(describe("adjustment", &json!({ "reason": "goodwill" })), "Adjustment: goodwill");
        assert_eq!(describe("overage", &json!({})), "Overage (billed at the period's end)");
        assert_eq!(describe("advance", &json!({})), "Allotment released early (from this period's later days)");
        assert_eq!(describe("something_new", &json!({})), "something_new");
    }

    #[test]
    fn amounts_carry_their_sign_and_separators() {
        assert_eq!(signed(1_000), "+1,000");
        assert_eq!(signed(-1), "-1");
        assert_eq!(signed(i64::MIN), "-9,223,372,036,854,775,808");
    }

    #[test]
    fn every_day_is_there_oldest_first() {
        let d = |n| NaiveDate::from_ymd_opt(2026, 11, n).unwrap();
        let filled = fill_days(d(30), 3, &[(d(29), 7), (d(1), 99)]);
        assert_eq!(filled, vec![(d(28), 0), (d(29), 7), (d(30), 0)]);
    }
}
