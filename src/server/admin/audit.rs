//! The audit log as operators read it: filtered, paged newest first by id (a keyset, so the
//! thousandth page costs what the first does), and exported whole as CSV.

use super::AuditRow;
use crate::server::ledger::history::csv_field;
use sqlx::PgPool;
use uuid::Uuid;

/// The actions the log records (`operator_audit.action`'s check), in the order a filter
/// offers them.
pub const ACTIONS: [&str; 7] = [
    "grant_credits",
    "take_credits",
    "revoke_api_key",
    "retry_webhook",
    "retry_usage_event",
    "resync",
    "resend_verification",
];

/// Which rows to read; empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// One of [`ACTIONS`].
    pub action: Option<String>,
    /// The operator's email at the time, any case.
    pub operator: Option<String>,
    /// The customer acted on.
    pub customer: Option<Uuid>,
}

impl AuditFilter {
    /// A filter from what a form sent: blanks ignored, an unknown action refused.
    pub fn parse(action: &str, operator: &str, customer: &str) -> Result<AuditFilter, &'static str> {
        let some = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
        let action = some(action);
        if action.as_deref().is_some_and(|a| !ACTIONS.contains(&a)) {
            return Err("Choose an action from the list.");
        }
        let customer = match some(customer) {
            None => None,
            Some(c) => Some(Uuid::parse_str(&c).map_err(|_| "A customer is their Tally user id.")?),
        };
        Ok(AuditFilter { action, operator: some(operator).filter(|o| o.len() <= 320), customer })
    }
}

/// Up to `limit` rows matching `filter`, newest first, older than row `before` when given.
pub async fn page(
    pool: &PgPool,
    filter: &AuditFilter,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditRow>, sqlx::Error> {
    type Row = (
        i64,
        chrono::DateTime<chrono::Utc>,
        String,
        String,
        Option<Uuid>,
        String,
        Option<serde_json::Value>,
        Option<serde_json::Value>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, at, operator_email, action, target_user, reason, before, after FROM operator_audit
          WHERE ($1::text IS NULL OR action = $1)
            AND ($2::text IS NULL OR lower(operator_email) = lower($2))
            AND ($3::uuid IS NULL OR target_user = $3)
            AND ($4::bigint IS NULL OR id < $4)
          ORDER BY id DESC LIMIT $5",
    )
    .bind(&filter.action)
    .bind(&filter.operator)
    .bind(filter.customer)
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, at, operator_email, action, target_user, reason, before, after)| AuditRow {
            id,
            at,
            operator_email,
            action,
            target_user,
            reason,
            before,
            after,
        })
        .collect())
}

/// The CSV's first line.
pub const CSV_HEADER: &str = "id,at,operator,action,customer,reason,before,after\n";

/// One row as a CSV line: every field safe for a spreadsheet (`csv_field`).
pub fn csv_line(row: &AuditRow) -> String {
    let json = |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string()).unwrap_or_default();
    let fields = [
        row.id.to_string(),
        row.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        row.operator_email.clone(),
        row.action.clone(),
        row.target_user.map(|u| u.to_string()).unwrap_or_default(),
        row.reason.clone(),
        json(&row.before),
        json(&row.after),
    ];
    let mut line = fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(",");
    line.push('\n');
    line
}

/// Every row matching `filter`, newest first, as CSV, read 500 rows at a time.
pub fn csv(
    pool: PgPool,
    filter: AuditFilter,
) -> impl futures::Stream<Item = Result<String, sqlx::Error>> + Send + 'static {
    futures::StreamExt::fuse(futures::stream::unfold(Some((pool, filter, None::<i64>, true)), |state| async move {
        let (pool, filter, before, first) = state?;
        match page(&pool, &filter, before, 500).await {
            Err(e) => Some((Err(e), None)),
            Ok(rows) => {
                let mut chunk = if first { CSV_HEADER.to_string() } else { String::new() };
                chunk.extend(rows.iter().map(csv_line));
                let next = (rows.len() == 500).then(|| (pool, filter, rows.last().map(|r| r.id), false));
                if chunk.is_empty() {
                    return None;
                }
                Some((Ok(chunk), next))
            }
        }
    }))
    // (Fused: polled again after its end by the response's compression, it answers "ended".)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_takes_blanks_as_everything_and_refuses_what_it_cannot_match() {
        assert_eq!(AuditFilter::parse("", " ", ""), Ok(AuditFilter::default()));
        let id = Uuid::new_v4();
        assert_eq!(
            AuditFilter::parse("retry_webhook", " Op@Example.com ", &id.to_string()),
            Ok(AuditFilter {
                action: Some("retry_webhook".into()),
                operator: Some("Op@Example.com".into()),
                customer: Some(id)
            })
        );
        assert!(AuditFilter::parse("drop_table", "", "").is_err());
        assert!(AuditFilter::parse("", "", "someone@example.com").is_err());
    }

    #[test]
    fn a_csv_line_keeps_formulas_and_separators_inert() {
        let row = AuditRow {
            id: 7,
            at: chrono::DateTime::from_timestamp(0, 0).unwrap(),
            operator_email: "op@example.com".into(),
            action: "grant_credits".into(),
            target_user: None,
            reason: "=HYPERLINK(\"x\"), then more".into(),
            before: Some(serde_json::json!({ "balance": 1 })),
            after: None,
        };
        assert_eq!(
            csv_line(&row),
            "7,1970-01-01T00:00:00Z,op@example.com,grant_credits,,\"'=HYPERLINK(\"\"x\"\"), then more\",\"{\"\"balance\"\":1}\",\n"
        );
    }
}
