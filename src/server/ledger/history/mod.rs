//! Reading the ledger back for people: a user's entries newest first, a page at a time, and
//! their spend per credit day. Descriptions and signs are decided here, once, so every page
//! words the ledger the same way.

mod days;
mod export;
mod filtered;

use crate::domain::money::group_thousands;
use crate::server::util::capitalize;
use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

pub use days::*;
pub use export::*;
pub use filtered::{filtered_page, filtered_sql, Filter, KINDS};

/// One entry as read back for people.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Entry {
    pub id: i64,
    pub kind: String,
    pub amount: i64,
    pub effective_at: DateTime<Utc>,
    /// The entry's metadata, except for spends: of a spend only its `operation` and
    /// `api_key_id` are shown, read as columns (parsing every spend's JSON made a page that
    /// reads a few hundred of them measurably slower).
    pub metadata: Value,
    pub operation: Option<String>,
    pub api_key_id: Option<String>,
}

impl Entry {
    /// What the entry was, in words ([`describe`]).
    pub fn description(&self) -> String {
        match (self.kind.as_str(), &self.operation) {
            ("spend", Some(op)) => format!("API call: {op}"),
            ("spend", None) => "API call".to_string(),
            (kind, _) => describe(kind, &self.metadata),
        }
    }
}

/// A position in a user's history: an entry's `(effective_at, id)`, the order history is read
/// in. Written in links as `<microseconds since the epoch>.<id>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub at: DateTime<Utc>,
    pub id: i64,
}

impl Cursor {
    pub fn of(e: &Entry) -> Cursor {
        Cursor { at: e.effective_at, id: e.id }
    }

    /// `None` for anything that is not a cursor this module wrote.
    pub fn parse(s: &str) -> Option<Cursor> {
        let (micros, id) = s.split_once('.')?;
        let micros: i64 = micros.parse().ok()?;
        let id: i64 = id.parse().ok().filter(|id| *id > 0)?;
        Some(Cursor { at: DateTime::from_timestamp_micros(micros)?, id })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.at.timestamp_micros(), self.id)
    }
}

/// Which page of history to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageAt {
    /// The newest entries.
    Newest,
    /// The entries just older than the cursor.
    Before(Cursor),
    /// The entries just newer than the cursor.
    After(Cursor),
}

/// One page of history, newest first, with the cursors of the pages on either side.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub entries: Vec<Entry>,
    /// Where the newer page starts (`PageAt::After`), if there are newer entries.
    pub newer: Option<Cursor>,
    /// Where the older page starts (`PageAt::Before`), if there are older entries.
    pub older: Option<Cursor>,
}

const COLUMNS: &str = "id, kind, amount, effective_at,
    CASE WHEN kind = 'spend' THEN '{}'::jsonb ELSE metadata END AS metadata,
    metadata ->> 'operation' AS operation, metadata ->> 'api_key_id' AS api_key_id";

/// Up to `limit` of the user's entries in effect at `now`, newest first, at `at`. Keyset
/// pagination on `(effective_at, id)`: each page is one range read of the entries index, so
/// page 1,000 costs what page 1 does. A page of newer entries that would be short is the
/// newest page instead.
pub async fn page(
    conn: &mut sqlx::PgConnection,
    user: Uuid,
    now: DateTime<Utc>,
    limit: i64,
    at: PageAt,
) -> Result<Page, sqlx::Error> {
    match at {
        PageAt::Newest => newest_page(conn, user, now, limit).await,
        PageAt::Before(c) => {
            let rows: Vec<Entry> = sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM credit_entries WHERE user_id = $1 AND effective_at <= $2
                   AND (effective_at, id) < ($4, $5)
                 ORDER BY effective_at DESC, id DESC LIMIT $3"
            ))
            .bind(user)
            .bind(now)
            .bind(limit + 1)
            .bind(c.at)
            .bind(c.id)
            .fetch_all(&mut *conn)
            .await?;
            let newer = match rows.first() {
                Some(first) => {
                    let exists: bool = sqlx::query_scalar(
                        "SELECT EXISTS (SELECT 1 FROM credit_entries WHERE user_id = $1 AND effective_at <= $2
                            AND (effective_at, id) > ($3, $4))",
                    )
                    .bind(user)
                    .bind(now)
                    .bind(first.effective_at)
                    .bind(first.id)
                    .fetch_one(&mut *conn)
                    .await?;
                    exists.then(|| Cursor::of(first))
                }
                None => None,
            };
            Ok(older_page(rows, limit, newer))
        }
        PageAt::After(c) => {
            let mut rows = newer_than(conn, user, now, c, limit + 1).await?;
            if rows.len() as i64 <= limit {
                return newest_page(conn, user, now, limit).await;
            }
            rows.truncate(limit as usize);
            rows.reverse();
            let newer = rows.first().map(Cursor::of);
            let older = rows.last().map(Cursor::of);
            Ok(Page { entries: rows, newer, older })
        }
    }
}

/// Up to `limit` of the entries in effect at `now` just newer than `c`, oldest first.
async fn newer_than(
    conn: &mut sqlx::PgConnection,
    user: Uuid,
    now: DateTime<Utc>,
    c: Cursor,
    limit: i64,
) -> Result<Vec<Entry>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM credit_entries WHERE user_id = $1 AND effective_at <= $2
           AND (effective_at, id) > ($4, $5)
         ORDER BY effective_at, id LIMIT $3"
    ))
    .bind(user)
    .bind(now)
    .bind(limit)
    .bind(c.at)
    .bind(c.id)
    .fetch_all(conn)
    .await
}

/// The newest page: up to `limit` entries in effect at `now`, newest first.
async fn newest_page(
    conn: &mut sqlx::PgConnection,
    user: Uuid,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Page, sqlx::Error> {
    let rows: Vec<Entry> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM credit_entries WHERE user_id = $1 AND effective_at <= $2
          ORDER BY effective_at DESC, id DESC LIMIT $3"
    ))
    .bind(user)
    .bind(now)
    .bind(limit + 1)
    .fetch_all(conn)
    .await?;
    Ok(older_page(rows, limit, None))
}

/// A page of history as people read it: lines, each one entry or a run of consecutive spends
/// of one operation with one API key on one credit day ([`run_key`]), newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct LinesPage {
    /// Each line's entries, newest first; a run has more than one.
    pub lines: Vec<Vec<Entry>>,
    pub newer: Option<Cursor>,
    pub older: Option<Cursor>,
}

/// What makes consecutive entries one line: spends of one operation, API key and credit day
/// (days starting at midnight in `offset`). Anything else stands on its own line.
pub fn run_key(e: &Entry, offset: FixedOffset) -> Option<(&str, Option<&str>, NaiveDate)> {
    (e.kind == "spend").then(|| {
        (
            e.operation.as_deref().unwrap_or(""),
            e.api_key_id.as_deref(),
            e.effective_at.with_timezone(&offset).date_naive(),
        )
    })
}

/// Consecutive entries (in the order given) with one [`run_key`] become one line.
pub fn group_runs(entries: Vec<Entry>, offset: FixedOffset) -> Vec<Vec<Entry>> {
    let mut lines: Vec<Vec<Entry>> = vec![];
    for e in entries {
        match lines.last_mut() {
            Some(line) if run_key(&e, offset).is_some() && run_key(&line[0], offset) == run_key(&e, offset) => {
                line.push(e)
            }
            _ => lines.push(vec![e]),
        }
    }
    lines
}

/// Up to `max_lines` lines at `at`, reading at most `scan` entries (one index range, so a page
/// costs the same however long the history): a run longer than the scan continues on the next
/// page. Cursors are entries' (the first and last shown), so pages meet exactly.
pub async fn lines_page(
    conn: &mut sqlx::PgConnection,
    user: Uuid,
    now: DateTime<Utc>,
    offset: FixedOffset,
    max_lines: usize,
    scan: i64,
    at: PageAt,
) -> Result<LinesPage, sqlx::Error> {
    let newest_or_older = |p: Page| lines_from_newest(p, offset, max_lines);
    let c = match at {
        PageAt::Newest | PageAt::Before(_) => return Ok(newest_or_older(page(conn, user, now, scan, at).await?)),
        PageAt::After(c) => c,
    };
    // The entries just newer than the cursor, oldest first: the lines nearest the cursor are
    // the ones this page shows.
    let mut rows = newer_than(conn, user, now, c, scan + 1).await?;
    let more_above = rows.len() as i64 > scan;
    rows.truncate(scan as usize);
    rows.reverse();
    let mut lines = group_runs(rows, offset);
    if !more_above && lines.len() <= max_lines {
        // Everything newer than the cursor fits on the newest page: show that one, full.
        return Ok(newest_or_older(page(conn, user, now, scan, PageAt::Newest).await?));
    }
    let lines = lines.split_off(lines.len().saturating_sub(max_lines));
    let newer = lines.first().and_then(|l| l.first()).map(Cursor::of);
    let older = lines.last().and_then(|l| l.last()).map(Cursor::of);
    Ok(LinesPage { lines, newer, older })
}

/// The lines of a page read newest first, up to `max_lines`: a page cut short ends at the
/// last line shown.
fn lines_from_newest(p: Page, offset: FixedOffset, max_lines: usize) -> LinesPage {
    let mut lines = group_runs(p.entries, offset);
    let cut = lines.len() > max_lines;
    lines.truncate(max_lines);
    let older = if cut { lines.last().and_then(|l| l.last()).map(Cursor::of) } else { p.older };
    LinesPage { lines, newer: p.newer, older }
}

/// The newest page of lines ([`lines_page`] at [`PageAt::Newest`]) and [`daily_spend`] over
/// `days` days, in one statement (a page's first view reads both; each round trip costs a
/// page more than its query does).
pub async fn newest_lines_and_spend(
    conn: &mut sqlx::PgConnection,
    user: Uuid,
    now: DateTime<Utc>,
    offset: FixedOffset,
    max_lines: usize,
    scan: i64,
    days: u32,
) -> Result<(LinesPage, Vec<(NaiveDate, i64)>), sqlx::Error> {
    use sqlx::{FromRow, Row};
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "SELECT * FROM (
                 (SELECT 0 AS part, {COLUMNS}, NULL::date AS day, NULL::bigint AS spent FROM credit_entries
                   WHERE user_id = $1 AND effective_at <= $2 ORDER BY effective_at DESC, id DESC LIMIT $3)
                 UNION ALL
                 SELECT 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, day, spent FROM credit_usage_days
                  WHERE user_id = $1 AND day BETWEEN $4 AND $5) r
              ORDER BY part, effective_at DESC, id DESC, day"
        )
    });
    let (first, today) = chart_days(now, offset, days);
    let rows = sqlx::query(SQL.as_str())
        .bind(user)
        .bind(now)
        .bind(scan + 1)
        .bind(first)
        .bind(today)
        .fetch_all(&mut *conn)
        .await?;
    let (mut entries, mut spent) = (Vec::new(), Vec::new());
    for row in &rows {
        if row.try_get::<i32, _>("part")? == 0 {
            entries.push(Entry::from_row(row)?);
        } else {
            spent.push((row.try_get("day")?, row.try_get("spent")?));
        }
    }
    let page = older_page(entries, scan, None);
    Ok((lines_from_newest(page, offset, max_lines), fill_days(today, days, &spent)))
}

/// A page read newest first with one row more than it shows: the extra row says there are older ones.
fn older_page(mut rows: Vec<Entry>, limit: i64, newer: Option<Cursor>) -> Page {
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let older = if more { rows.last().map(Cursor::of) } else { None };
    Page { entries: rows, newer, older }
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
    fn cursors_round_trip_and_refuse_anything_else() {
        let c = Cursor { at: DateTime::from_timestamp_micros(1_764_000_000_123_456).unwrap(), id: 42 };
        assert_eq!(c.to_string(), "1764000000123456.42");
        assert_eq!(Cursor::parse(&c.to_string()), Some(c));
        for bad in ["", "1", "1.", ".1", "1.0", "1.-3", "x.1", "1.1.1", "99999999999999999999.1"] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }
}
