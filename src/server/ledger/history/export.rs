//! The history as CSV: read in chunks of one index range, every field safe for a spreadsheet.

use super::*;

/// Up to `limit` of the user's entries in `[from, to)`, oldest first, after `after` (an export
/// reads the range in such chunks, one index range each).
pub async fn range_chunk(
    pool: &PgPool,
    user: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    after: Option<Cursor>,
    limit: i64,
) -> Result<Vec<Entry>, sqlx::Error> {
    let (at, id) = after.map_or((from, 0), |c| (c.at, c.id));
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM credit_entries WHERE user_id = $1 AND effective_at >= $2 AND effective_at < $3
            AND (effective_at, id) > ($4, $5)
          ORDER BY effective_at, id LIMIT $6"
    ))
    .bind(user)
    .bind(from)
    .bind(to)
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// One CSV field (RFC 4180): quoted when it holds a comma, a quote or a line break; text that
/// a spreadsheet would run as a formula (`=`, `+`, `-`, `@` first) gets a leading `'`.
pub fn csv_field(text: &str) -> String {
    let guarded =
        if text.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{text}") } else { text.to_string() };
    if guarded.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

/// The export's header line.
pub const CSV_HEADER: &str = "time_utc,kind,description,credits\r\n";

/// An entry as one CSV line: when (RFC 3339, UTC), its kind, what it was in words, and the
/// credits it added (positive) or took (negative).
pub fn csv_line(e: &Entry) -> String {
    format!(
        "{},{},{},{}\r\n",
        e.effective_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        csv_field(&e.kind),
        csv_field(&e.description()),
        e.amount
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn csv_fields_are_quoted_and_never_run_as_formulas() {
        assert_eq!(csv_field("API call: text.stats"), "API call: text.stats");
        assert_eq!(csv_field("a, b"), "\"a, b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("+1"), "'+1");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
        let e = Entry {
            id: 1,
            kind: "adjustment".into(),
            amount: -5,
            effective_at: DateTime::from_timestamp(1_764_000_000, 0).unwrap(),
            metadata: json!({ "reason": "=cmd|' /C calc'!A0" }),
            operation: None,
            api_key_id: None,
        };
        assert_eq!(csv_line(&e), "2025-11-24T16:00:00.000000Z,adjustment,Adjustment: =cmd|' /C calc'!A0,-5\r\n");
        let spend = Entry {
            kind: "spend".into(),
            amount: -1,
            metadata: json!({}),
            operation: Some("@text.stats".into()),
            api_key_id: Some("k".into()),
            ..e
        };
        assert_eq!(spend.description(), "API call: @text.stats");
        assert_eq!(csv_line(&spend), "2025-11-24T16:00:00.000000Z,spend,API call: @text.stats,-1\r\n");
        assert_eq!(Entry { operation: None, ..spend }.description(), "API call");
    }
}
