//! What the account pages read: the pricing catalogue with the visitor's plan, the account
//! summary (plan, subscription, credits) and the credit history. The server functions in
//! `api::account` authenticate and call these; what they return (`views::account`) is what
//! the pages render.
//!
//! A plan comes from Polar's Customer State (granted benefits, through the cache). When Polar
//! cannot be reached it is the last known state, or failing that the last applied
//! subscription, with a notice saying which.

use crate::domain::plans::PlanId;
use crate::server::billing::Billing;
use crate::server::billing::{self, LiveSubscription};
use crate::server::ledger::history;
use crate::views::account::{
    AccountView, ActivityView, LedgerLine, LedgerPart, PricingView, SubscriptionView, UsageDay,
};
use chrono::{DateTime, FixedOffset, Utc};
use uuid::Uuid;

/// The user's plan and how sure we are of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRead {
    pub plan: PlanId,
    /// Set when the plan is the last known one (Polar unreachable).
    pub notice: Option<String>,
    /// Whether Polar has a customer for the user (so the portal can open).
    pub has_customer: bool,
}

/// [`PlanRead`] of `user`.
pub async fn plan_of_user(billing: &Billing, user: Uuid) -> Result<PlanRead, billing::Error> {
    match billing::customer_state(billing, user, billing::STATE_TTL).await {
        Ok(read) => Ok(plan_read(&read)),
        Err(billing::Error::Unavailable(_) | billing::Error::NotConfigured) => Ok(PlanRead {
            plan: billing::live_subscription(&billing.pool, user).await?.map(|s| s.plan_id()).unwrap_or(PlanId::Free),
            notice: Some("Our billing provider is not answering; this is your plan as we last heard of it.".into()),
            has_customer: false,
        }),
        Err(e) => Err(e),
    }
}

fn plan_read(read: &billing::StateRead) -> PlanRead {
    PlanRead {
        plan: read.plan(),
        notice: read.stale.then(|| {
            format!(
                "Our billing provider is not answering; this is your plan as of {}.",
                read.fetched_at.format("%B %-d, %H:%M UTC")
            )
        }),
        has_customer: read.state.is_some(),
    }
}

/// The catalogue (yearly prices only for plans sold yearly here) and the visitor's plan.
pub async fn pricing(billing: &Billing, visitor: Option<Uuid>) -> Result<PricingView, billing::Error> {
    let mut offers = crate::domain::plans::default_offers(billing.config.free_credits);
    for o in &mut offers {
        if !billing.config.polar.catalog.sells_yearly(o.plan) {
            o.yearly_price_cents = None;
        }
    }
    Ok(PricingView {
        offers,
        packs: crate::domain::plans::default_packs(),
        current_plan: match visitor {
            Some(u) => Some(plan_of_user(billing, u).await?.plan),
            None => None,
        },
        enterprise_demo_url: billing.config.enterprise_demo_url.as_ref().map(|u| u.to_string()),
    })
}

/// The account page's summary of `user`: the plan (Customer State, through its cache)
/// alongside the account's own rows.
pub async fn summary(billing: &Billing, user: Uuid, email: String) -> Result<AccountView, billing::Error> {
    Ok(account_on(billing, billing.pool.acquire().await?, user, email).await?.0)
}

/// The account summary of `user`, read on `conn`: the account's own rows and the Customer
/// State cache row in one statement, the plan from that row when a page may show it (fresh,
/// or aged a little and then refreshed in the background). Otherwise the
/// connection goes back to the pool (a request never holds one while it waits for another)
/// and the plan is read through the cache ([`plan_of_user`]: it may ask Polar and write the
/// row); then no connection is returned.
pub async fn account_on(
    billing: &Billing,
    mut conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
    user: Uuid,
    email: String,
) -> Result<(AccountView, Option<sqlx::pool::PoolConnection<sqlx::Postgres>>), billing::Error> {
    let (own, stored) = own_rows(&mut conn, user).await?;
    if let Some((read, aging)) = billing::customer_state::stored_for_page(stored.as_ref()) {
        if aging {
            billing::customer_state::refresh_in_background(billing, user);
        }
        return Ok((account_view(billing, email, own, plan_read(&read)), Some(conn)));
    }
    drop(conn);
    let plan = plan_of_user(billing, user).await?;
    Ok((account_view(billing, email, own, plan), None))
}

/// What the account summary reads of the account itself.
struct OwnRows {
    created: DateTime<Utc>,
    verified: Option<DateTime<Utc>>,
    credits: crate::domain::credits::Balance,
    subscription: Option<LiveSubscription>,
}

#[derive(sqlx::FromRow)]
struct OwnRow {
    created_at: DateTime<Utc>,
    email_verified_at: Option<DateTime<Utc>>,
    total: i64,
    allotment: i64,
    purchased: i64,
    free: i64,
    adjustment: i64,
    pending: i64,
    next_at: Option<DateTime<Utc>>,
    sub_id: Option<String>,
    sub_plan: Option<String>,
    sub_status: Option<String>,
    sub_period_end: Option<DateTime<Utc>>,
    sub_cancel_at_period_end: Option<bool>,
    state: Option<serde_json::Value>,
    state_fetched_at: Option<DateTime<Utc>>,
    state_stale: Option<bool>,
    state_changed_at: Option<DateTime<Utc>>,
}

/// The account's own rows in one statement: the balance as `ledger::balance` reads it, the
/// subscription as `billing::live_subscription` picks it, and the Customer State cache row
/// (each round trip costs a page more than its query does).
async fn own_rows(
    conn: &mut sqlx::PgConnection,
    user: Uuid,
) -> Result<(OwnRows, Option<billing::customer_state::StoredState>), billing::Error> {
    let row: OwnRow = sqlx::query_as(
        "SELECT u.created_at, u.email_verified_at,
                b.total, b.allotment, b.purchased, b.free, b.adjustment, b.pending, b.next_at,
                s.id AS sub_id, s.plan AS sub_plan, s.status AS sub_status, s.current_period_end AS sub_period_end,
                s.cancel_at_period_end AS sub_cancel_at_period_end,
                pc.state, pc.state_fetched_at, pc.state_stale, pc.state_changed_at
           FROM users u
          CROSS JOIN LATERAL credit_balance_read(u.id, $2) b
           LEFT JOIN LATERAL (SELECT id, plan, status, current_period_end, cancel_at_period_end
                                FROM subscriptions WHERE user_id = u.id AND status = ANY($3)
                               ORDER BY polar_modified_at DESC LIMIT 1) s ON true
           LEFT JOIN polar_customers pc ON pc.user_id = u.id
          WHERE u.id = $1",
    )
    .bind(user)
    .bind(Utc::now())
    .bind(&billing::subscriptions::LIVE_STATUSES[..])
    .fetch_one(&mut *conn)
    .await?;
    let credits = crate::domain::credits::Balance {
        total: row.total,
        allotment: row.allotment,
        purchased: row.purchased,
        free: row.free,
        adjustment: row.adjustment,
        pending_allotment: row.pending,
        next_accrual_at: row.next_at,
    };
    let subscription = match (row.sub_id, row.sub_status, row.sub_period_end, row.sub_cancel_at_period_end) {
        (Some(id), Some(status), Some(current_period_end), Some(cancel_at_period_end)) => {
            Some(LiveSubscription { id, plan: row.sub_plan, status, current_period_end, cancel_at_period_end })
        }
        _ => None,
    };
    let stored = row.state_stale.map(|state_stale| billing::customer_state::StoredState {
        state: row.state,
        state_fetched_at: row.state_fetched_at,
        state_stale,
        state_changed_at: row.state_changed_at,
    });
    Ok((OwnRows { created: row.created_at, verified: row.email_verified_at, credits, subscription }, stored))
}

/// The summary from what was read.
fn account_view(billing: &Billing, email: String, own: OwnRows, plan: PlanRead) -> AccountView {
    let OwnRows { created, verified, credits, subscription } = own;
    AccountView {
        email,
        plan: plan.plan,
        plan_notice: plan.notice,
        has_billing_account: plan.has_customer,
        email_verified: verified.is_some(),
        free_credits: billing.config.free_credits,
        subscription: subscription.as_ref().map(subscription_view),
        member_since: created.format("%B %-d, %Y").to_string(),
        credits,
        day_boundary: day_boundary(billing.config.credit_day_offset),
    }
}

/// The subscription as a page shows it.
pub fn subscription_view(s: &LiveSubscription) -> SubscriptionView {
    SubscriptionView {
        status: s.status.clone(),
        renews_or_ends_on: s.current_period_end.format("%B %-d, %Y").to_string(),
        cancel_at_period_end: s.cancel_at_period_end,
    }
}

/// When a credit day begins: `00:00 UTC`, `00:00 UTC+02:00`.
pub fn day_boundary(offset: FixedOffset) -> String {
    if offset.local_minus_utc() == 0 {
        "00:00 UTC".to_string()
    } else {
        format!("00:00 UTC{offset}")
    }
}

/// Lines per page of the credit history.
pub const PAGE_SIZE: i64 = crate::views::account::LEDGER_PAGE_SIZE;

/// A page of the credit history, newest first (`before`/`after` are cursors from an earlier
/// page; anything else reads the newest page), and the spend per credit day of the last 30
/// days, read on `conn`. Bounded reads whatever the history's length: one index range and the
/// 30-row rollup.
pub async fn activity(
    billing: &Billing,
    conn: &mut sqlx::PgConnection,
    user: Uuid,
    before: Option<&str>,
    after: Option<&str>,
) -> Result<ActivityView, sqlx::Error> {
    let now = Utc::now();
    let offset = billing.config.credit_day_offset;
    let at = match (before.and_then(history::Cursor::parse), after.and_then(history::Cursor::parse)) {
        (Some(c), _) => history::PageAt::Before(c),
        (None, Some(c)) => history::PageAt::After(c),
        (None, None) => history::PageAt::Newest,
    };
    let (page, usage) = match at {
        history::PageAt::Newest => {
            history::newest_lines_and_spend(&mut *conn, user, now, offset, PAGE_SIZE as usize, HISTORY_SCAN, 30).await?
        }
        at => (
            history::lines_page(&mut *conn, user, now, offset, PAGE_SIZE as usize, HISTORY_SCAN, at).await?,
            history::daily_spend(&mut *conn, user, offset, 30, now).await?,
        ),
    };
    // The names of the API keys behind this page's runs (one read, only when there are runs).
    let mut key_ids: Vec<Uuid> = page
        .lines
        .iter()
        .filter(|l| l.len() > 1)
        .filter_map(|l| l[0].api_key_id.as_deref().and_then(|k| k.parse().ok()))
        .collect();
    key_ids.sort_unstable();
    key_ids.dedup();
    let key_names: Vec<(Uuid, String)> = if key_ids.is_empty() {
        vec![]
    } else {
        sqlx::query_as("SELECT id, name FROM api_keys WHERE user_id = $1 AND id = ANY($2)")
            .bind(user)
            .bind(&key_ids)
            .fetch_all(&mut *conn)
            .await?
    };
    let key_name = |e: &history::Entry| {
        let id: Uuid = e.api_key_id.as_deref()?.parse().ok()?;
        key_names.iter().find(|(k, _)| *k == id).map(|(_, n)| n.as_str())
    };
    let lines = page
        .lines
        .into_iter()
        .map(|entries| {
            let key = key_name(&entries[0]).map(str::to_string);
            ledger_line(entries, offset, key.as_deref())
        })
        .collect();
    let usage =
        usage.into_iter().map(|(day, credits)| UsageDay { label: day.format("%b %-d").to_string(), credits }).collect();
    Ok(ActivityView {
        lines,
        newer: page.newer.map(|c| c.to_string()),
        older: page.older.map(|c| c.to_string()),
        usage,
    })
}

/// Entries one history page reads at most, however they group into lines. Each row read costs
/// the page (with 200, an account whose history is all API calls served a quarter fewer pages
/// than a fresh one; with 60, 12 % fewer; with 30, 8 %: BENCHMARKS.md), and a longer run
/// simply continues on the next page.
pub const HISTORY_SCAN: i64 = 30;
/// Entries of a run its expanded line lists.
pub const RUN_PARTS_SHOWN: usize = 10;

/// One line of history: an entry, or a run of spends (newest first) with its count, total and
/// first entries; `key` names the run's API key.
pub fn ledger_line(entries: Vec<history::Entry>, offset: FixedOffset, key: Option<&str>) -> LedgerLine {
    let local = |e: &history::Entry| e.effective_at.with_timezone(&offset);
    let total: i64 = entries.iter().map(|e| e.amount).sum();
    let (newest, oldest) = (&entries[0], &entries[entries.len() - 1]);
    let count = entries.len() as u64;
    if count == 1 {
        return LedgerLine {
            when: local(newest).format("%b %-d, %H:%M").to_string(),
            what: newest.description(),
            amount: history::signed(total),
            is_debit: total < 0,
            parts: vec![],
            count,
            export: None,
        };
    }
    let mut what = match newest.operation.as_deref() {
        Some(op) => format!("{} API calls: {op}", crate::domain::money::group_thousands(count)),
        None => format!("{} API calls", crate::domain::money::group_thousands(count)),
    };
    if let Some(key) = key {
        what.push_str(&format!(" (key “{key}”)"));
    }
    let export = (entries.len() > RUN_PARTS_SHOWN).then(|| {
        format!(
            "/billing/history.csv?from={}&to={}",
            oldest.effective_at.format("%Y-%m-%d"),
            newest.effective_at.format("%Y-%m-%d")
        )
    });
    LedgerLine {
        when: format!("{}–{}", local(oldest).format("%b %-d, %H:%M"), local(newest).format("%H:%M")),
        what,
        amount: history::signed(total),
        is_debit: total < 0,
        parts: entries
            .iter()
            .take(RUN_PARTS_SHOWN)
            .map(|e| LedgerPart { when: local(e).format("%H:%M:%S").to_string(), amount: history::signed(e.amount) })
            .collect(),
        count,
        export,
    }
}

/// The most days one history export covers.
pub const EXPORT_MAX_DAYS: i64 = 366;
/// Entries read per chunk of an export.
const EXPORT_CHUNK: i64 = 1000;

/// The user's credit history in `[from, to)` as CSV (header first, oldest entry first),
/// streamed in chunks of [`EXPORT_CHUNK`] entries, each one index range read after the last:
/// never held whole in memory, and no connection held between chunks.
pub fn history_csv(
    pool: sqlx::PgPool,
    user: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> impl futures::Stream<Item = Result<axum::body::Bytes, sqlx::Error>> + Send + 'static {
    futures::StreamExt::fuse(futures::stream::unfold(
        Some((pool, None::<history::Cursor>, true)),
        move |state| async move {
            let (pool, after, first) = state?;
            let rows = match history::range_chunk(&pool, user, from, to, after, EXPORT_CHUNK).await {
                Ok(rows) => rows,
                Err(e) => return Some((Err(e), None)),
            };
            let mut out = if first { history::CSV_HEADER.to_string() } else { String::new() };
            for e in &rows {
                out.push_str(&history::csv_line(e));
            }
            let next = (rows.len() as i64 == EXPORT_CHUNK).then(|| (pool, rows.last().map(history::Cursor::of), false));
            if out.is_empty() {
                return None;
            }
            Some((Ok(axum::body::Bytes::from(out)), next))
        },
    ))
    // (Fused: the response's compression polls the body once more after its end, and a bare
    // `unfold` panics then, which cut every gzip download short.)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_credit_day_is_named_with_its_offset() {
        assert_eq!(day_boundary(FixedOffset::east_opt(0).unwrap()), "00:00 UTC");
        assert_eq!(day_boundary(FixedOffset::east_opt(2 * 3600).unwrap()), "00:00 UTC+02:00");
        assert_eq!(day_boundary(FixedOffset::west_opt(5 * 3600 + 1800).unwrap()), "00:00 UTC-05:30");
    }
}
