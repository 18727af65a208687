//! The customer page's ledger: filtered by kind and dates, paged by position.

#[cfg(feature = "ssr")]
use super::{EntryLine, LedgerLines};

/// Entries a page of the customer's ledger shows.
pub const LEDGER_PAGE: i64 = 25;

/// The ledger section of `customer`'s page, from the page's query: `kind` (one of the ledger's
/// kinds), `from` and `until` (days, `YYYY-MM-DD`, UTC, both included), `before` (where the
/// page starts). Values that are not understood are left out of the filter, and said so.
#[cfg(feature = "ssr")]
pub(super) async fn ledger_lines(
    state: &crate::server::state::AppState,
    customer: uuid::Uuid,
    kind: Option<String>,
    from: Option<String>,
    until: Option<String>,
    before: Option<String>,
) -> Result<LedgerLines, crate::error::AppError> {
    use crate::server::ledger::history::{self, Cursor, Filter, KINDS};
    let clean = |v: Option<String>| v.map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let (kind, from, until, before) = (clean(kind), clean(from), clean(until), clean(before));
    let mut ignored = Vec::new();
    let day = |v: &Option<String>, what: &'static str, ignored: &mut Vec<&'static str>| {
        let v = v.as_deref()?;
        let d = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").ok();
        if d.is_none() {
            ignored.push(what);
        }
        d.map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
    };
    let filter = Filter {
        kind: kind.as_deref().and_then(|k| {
            let found = KINDS.iter().find(|known| **known == k).copied();
            if found.is_none() {
                ignored.push("the kind");
            }
            found
        }),
        from: day(&from, "the first day", &mut ignored),
        until: day(&until, "the last day", &mut ignored).map(|d| d + chrono::Duration::days(1)),
    };
    let cursor = before.as_deref().and_then(Cursor::parse);
    if before.is_some() && cursor.is_none() {
        ignored.push("the page");
    }
    let now = chrono::Utc::now();
    let page = crate::server::admin::ledger_page(&state.pool, customer, now, &filter, cursor, LEDGER_PAGE).await?;
    Ok(LedgerLines {
        entries: page
            .entries
            .iter()
            .map(|e| EntryLine {
                when: super::when(e.effective_at),
                kind: e.kind.clone(),
                what: e.description(),
                credits: history::signed(e.amount),
            })
            .collect(),
        kind: filter.kind.unwrap_or_default().to_string(),
        from: filter.from.map(|d| d.format("%Y-%m-%d").to_string()).unwrap_or_default(),
        until: filter.until.map(|d| (d - chrono::Duration::days(1)).format("%Y-%m-%d").to_string()).unwrap_or_default(),
        kinds: KINDS.iter().map(|k| k.to_string()).collect(),
        older: page.older.map(|c| c.to_string()),
        paged: cursor.is_some(),
        notice: (!ignored.is_empty())
            .then(|| format!("Left out of the filter, not understood: {} (days are YYYY-MM-DD).", ignored.join(", "))),
    })
}
