//! A user's entries of one kind and within dates, newest first, a page at a time (the operator
//! console's ledger). Every page is one index range read whatever the history's length: the
//! dates and the cursor bound `(effective_at, id)` on the entries index, and a kind other than
//! spends and overage (rare in a busy account) is read from an index of its own
//! (`migrations/…_entries_by_kind.sql`) instead of being picked out of every spend.

use super::{older_page, Cursor, Entry, Page, COLUMNS};
use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

/// Every kind of entry (`credit_entries.kind`'s check), in the order a filter offers them.
pub const KINDS: [&str; 10] = [
    "spend",
    "overage",
    "purchase",
    "allotment",
    "daily_accrual",
    "advance",
    "free_grant",
    "adjustment",
    "refund_clawback",
    "expiry",
];

/// The kinds nearly every entry of a busy account has: read through the main entries index.
const DENSE: [&str; 2] = ["spend", "overage"];

/// Which entries to read; `None` fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// One of [`KINDS`].
    pub kind: Option<&'static str>,
    /// In effect at or after.
    pub from: Option<DateTime<Utc>>,
    /// In effect before.
    pub until: Option<DateTime<Utc>>,
}

/// The statement [`filtered_page`] runs for entries of `kind` (any: `None`): `$1` the user,
/// `($2, $3)` the position the page ends before, `$4` the first instant (or NULL), `$5` the
/// kind, `$6` the rows to read.
pub fn filtered_sql(kind: Option<&str>) -> String {
    let kind = match kind {
        None => "",
        Some(k) if DENSE.contains(&k) => "AND kind = $5",
        // Spelled out so the planner matches the partial index's predicate.
        Some(_) => "AND kind NOT IN ('spend', 'overage') AND kind = $5",
    };
    format!(
        "SELECT {COLUMNS} FROM credit_entries
          WHERE user_id = $1 AND (effective_at, id) < ($2, $3) AND effective_at >= coalesce($4, '-infinity') {kind}
          ORDER BY effective_at DESC, id DESC LIMIT $6"
    )
}

/// Up to `limit` of `user`'s entries in effect at `now` matching `filter`, newest first, just
/// older than `before` (from the newest without it); `older` is where the next page starts.
pub async fn filtered_page(
    conn: &mut sqlx::PgConnection,
    user: Uuid,
    now: DateTime<Utc>,
    filter: &Filter,
    before: Option<Cursor>,
    limit: i64,
) -> Result<Page, sqlx::Error> {
    // One upper bound for the range: `effective_at <= now`, `< until` and the cursor, as a
    // position (ids start at 1, so `(t, 0)` is just before every entry at `t`).
    let mut end = Cursor { at: now + Duration::microseconds(1), id: 0 };
    if let Some(until) = filter.until.filter(|u| (*u, 0) < (end.at, end.id)) {
        end = Cursor { at: until, id: 0 };
    }
    if let Some(c) = before.filter(|c| (c.at, c.id) < (end.at, end.id)) {
        end = c;
    }
    let rows: Vec<Entry> = sqlx::query_as(&filtered_sql(filter.kind))
        .bind(user)
        .bind(end.at)
        .bind(end.id)
        .bind(filter.from)
        .bind(filter.kind.unwrap_or(""))
        .bind(limit + 1)
        .fetch_all(conn)
        .await?;
    Ok(older_page(rows, limit, None))
}
