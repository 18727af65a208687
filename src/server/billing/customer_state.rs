//! The user's Customer State (who has what, from Polar) through the caches, and the
//! entitlement guard. Reads try Redis (when `REDIS_URL` is set), then PostgreSQL
//! (`polar_customers.state`, kept [`STATE_TTL`], marked stale by webhooks), then Polar, and
//! write what they found fresh back up. When Polar cannot be reached the last known state is
//! served, marked stale; `require_benefit` trusts it for [`STALE_GRACE`], then fails closed.
//! A page that reads the account's rows anyway reads the Postgres row in the same statement
//! and serves it while fresh ([`stored_for_page`]): it is as current as the Redis entry, since
//! every read of Polar writes both and every change drops the entry and marks the row stale.
//! A row that merely aged past its TTL is shown once more while one read refreshes it
//! ([`REFRESH_GRACE`]), so views of a busy account do not all wait on Polar when it expires.

use super::Billing;
use super::{polar_reads, Error, Result};
use crate::domain::plans::PlanId;
use crate::server::polar::models::CustomerState;
use crate::server::polar::PolarError;
use crate::server::state_cache::CachedState;
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use uuid::Uuid;

/// How long a Customer State read from Polar is served from the cache.
pub const STATE_TTL: Duration = Duration::seconds(30);
/// Polar's Customer State lags a change by about 10 s. For this long after a change (a
/// webhook, or one Tally made) a read is kept only `SETTLING_TTL`, so the cache does not hold
/// on to a pre-change answer for a whole `STATE_TTL`.
pub const SETTLE_WINDOW: Duration = Duration::seconds(20);
pub const SETTLING_TTL: Duration = Duration::seconds(2);
/// How long a last known state keeps granting access while Polar is unreachable.
pub const STALE_GRACE: Duration = Duration::hours(24);

/// A Customer State as read: `None` when Polar has no customer for the user yet.
#[derive(Debug, Clone)]
pub struct StateRead {
    pub state: Option<CustomerState>,
    pub fetched_at: DateTime<Utc>,
    /// True when Polar could not be reached and this is the last known state.
    pub stale: bool,
}

impl StateRead {
    pub fn has_benefit(&self, slug: &str) -> bool {
        self.state.as_ref().is_some_and(|s| s.has_benefit("slug", slug))
    }

    /// The plan the granted benefits stand for (Business over Pro over Free).
    pub fn plan(&self) -> PlanId {
        if self.has_benefit("business") {
            PlanId::Business
        } else if self.has_benefit("pro") {
            PlanId::Pro
        } else {
            PlanId::Free
        }
    }
}

/// The customer state as last stored, and whether it is known to be out of date.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredState {
    pub state: Option<Value>,
    pub state_fetched_at: Option<DateTime<Utc>>,
    pub state_stale: bool,
    pub state_changed_at: Option<DateTime<Utc>>,
}

/// The state as last stored for `user` (`None`: Polar was never asked about them).
pub async fn stored(
    db: impl sqlx::PgExecutor<'_>,
    user: Uuid,
) -> std::result::Result<Option<StoredState>, sqlx::Error> {
    sqlx::query_as(
        "SELECT state, state_fetched_at, state_stale, state_changed_at FROM polar_customers WHERE user_id = $1",
    )
    .bind(user)
    .fetch_optional(db)
    .await
}

impl StoredState {
    /// The stored state as a read (`stale` when a change since has marked it so).
    pub fn read(&self) -> Option<StateRead> {
        let at = self.state_fetched_at?;
        Some(StateRead { stale: self.state_stale, ..read_of(self.state.as_ref(), at) })
    }
}

/// The stored state and when it was fetched, when young enough for `max_age` (kept at most
/// [`SETTLING_TTL`] while a change settles, else [`STATE_TTL`]) or fetched at or after `since`.
fn fresh_row(
    row: &StoredState,
    max_age: Duration,
    since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<(Option<&Value>, DateTime<Utc>)> {
    if row.state_stale {
        return None;
    }
    let max_age = max_age.min(ttl_of(row.state_changed_at, now));
    let at = row.state_fetched_at?;
    (now - at < max_age || since.is_some_and(|s| at >= s)).then_some((row.state.as_ref(), at))
}

/// How long a state read now is kept: [`SETTLING_TTL`] within [`SETTLE_WINDOW`] of a change
/// (at `changed_at`), else [`STATE_TTL`].
fn ttl_of(changed_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Duration {
    if changed_at.is_some_and(|changed| now - changed < SETTLE_WINDOW) {
        SETTLING_TTL
    } else {
        STATE_TTL
    }
}

fn read_of(state: Option<&Value>, fetched_at: DateTime<Utc>) -> StateRead {
    use serde::Deserialize;
    StateRead { state: state.and_then(|v| CustomerState::deserialize(v).ok()), fetched_at, stale: false }
}

/// How long past [`STATE_TTL`] a page may still show a stored state while one read refreshes
/// it in the background: under load every view of an account waited on Polar each time its
/// state expired (a stall of a few hundred milliseconds every 30 s in the page benchmark).
/// Never for a state a webhook marked stale, nor while a change settles: those are read first.
pub const REFRESH_GRACE: Duration = Duration::seconds(60);

/// What a page may show from the cache row it read with its own rows (one statement instead
/// of two): the state when [`customer_state`] would serve that row as it is (`Some((read,
/// false))`), or when it is at most [`REFRESH_GRACE`] past its TTL and neither marked stale nor
/// settling (`Some((read, true))`: show it and [`refresh_in_background`]); `None` when the
/// page must read through [`customer_state`].
pub fn stored_for_page(row: Option<&StoredState>) -> Option<(StateRead, bool)> {
    let row = row?;
    let now = Utc::now();
    if let Some((state, at)) = fresh_row(row, STATE_TTL, None, now) {
        return Some((read_of(state, at), false));
    }
    let at = row.state_fetched_at?;
    let aging =
        !row.state_stale && ttl_of(row.state_changed_at, now) == STATE_TTL && now - at < STATE_TTL + REFRESH_GRACE;
    aging.then(|| (read_of(row.state.as_ref(), at), true))
}

/// A cached state young enough for `max_age`, or one fetched at or after `since` (a read that
/// another caller made while this one waited its turn); else the stored row, for the
/// last-known fallback.
async fn cached(
    billing: &Billing,
    user: Uuid,
    max_age: Duration,
    since: Option<DateTime<Utc>>,
) -> Result<(Option<StateRead>, Option<StoredState>)> {
    let now = Utc::now();
    let fresh = |at: DateTime<Utc>, max_age: Duration| now - at < max_age || since.is_some_and(|s| at >= s);
    let redis = billing.redis.as_ref().filter(|_| max_age > Duration::zero() || since.is_some());
    if let Some(r) = redis {
        if let Some(c) = r.get(user).await.filter(|c| fresh(c.fetched_at, max_age)) {
            let read = StateRead {
                state: c.state.and_then(|v| serde_json::from_value(v).ok()),
                fetched_at: c.fetched_at,
                stale: false,
            };
            return Ok((Some(read), None));
        }
    }
    let row = stored(&billing.pool, user).await?;
    if let Some((s, at)) = row.as_ref().and_then(|r| fresh_row(r, max_age, since, now)) {
        let read = read_of(s, at);
        if let Some(r) = redis {
            let ttl = ttl_of(row.as_ref().and_then(|r| r.state_changed_at), now);
            let cached = CachedState { state: s.cloned(), fetched_at: at };
            r.put(user, &cached, (ttl - (now - at)).max(Duration::seconds(1))).await;
        }
        return Ok((Some(read), row));
    }
    Ok((None, row))
}

/// The user's Customer State through the cache: served from Redis (when `REDIS_URL` is set)
/// or Postgres when younger than `max_age` (and not invalidated by a webhook), else read from
/// Polar and stored in both. `max_age` zero asks Polar, unless another read of the same
/// customer did while this one waited for it ([`SingleFlight`]). A read of Polar is counted in
/// the user's budget first ([`super::polar_budget`]): past it, [`Error::RateLimited`].
pub async fn customer_state(billing: &Billing, user: Uuid, max_age: Duration) -> Result<StateRead> {
    read_state(billing, user, max_age, Reader::Page).await
}

/// Who reads a Customer State, which decides the budget and client a Polar call uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// A page or server function: counted in the user's and the pages' budgets
    /// ([`super::polar_budget`]), through the page client (read deadline, page breaker).
    Page,
    /// Background work (reconcile): the background client and its own breaker, paced by its
    /// caller within the share of the quota pages leave.
    Background,
}

/// [`customer_state`] for `reader`.
pub async fn read_state(billing: &Billing, user: Uuid, max_age: Duration, reader: Reader) -> Result<StateRead> {
    let asked_at = Utc::now();
    if let (Some(hit), _) = cached(billing, user, max_age, None).await? {
        return Ok(hit);
    }
    let slot = billing.state_flights.slot(user);
    let _turn = slot.lock().await;
    read_in_turn(billing, user, max_age, reader, asked_at).await
}

/// Refreshes `user`'s stored state from Polar in a task of its own, unless a read of it is
/// under way (that one refreshes it): for a page that showed a state past its TTL
/// ([`stored_for_page`]).
pub fn refresh_in_background(billing: &Billing, user: Uuid) {
    let Ok(turn) = billing.state_flights.slot(user).try_lock_owned() else { return };
    let billing = billing.clone();
    tokio::spawn(async move {
        let _turn = turn;
        if let Err(e) = read_in_turn(&billing, user, STATE_TTL, Reader::Page, Utc::now()).await {
            tracing::warn!(%user, error = %e, "a Customer State refresh after a page view failed");
        }
    });
}

/// [`read_state`] once it holds `user`'s turn: the cache again (another read may have
/// refreshed it since `asked_at`), then Polar.
async fn read_in_turn(
    billing: &Billing,
    user: Uuid,
    max_age: Duration,
    reader: Reader,
    asked_at: DateTime<Utc>,
) -> Result<StateRead> {
    let (hit, row) = cached(billing, user, max_age, Some(asked_at)).await?;
    if let Some(hit) = hit {
        return Ok(hit);
    }
    let client = match reader {
        Reader::Page => {
            super::polar_budget(billing, user).await?;
            polar_reads(billing)?
        }
        Reader::Background => super::polar_background(billing)?,
    };
    let now = Utc::now();
    let ttl = ttl_of(row.as_ref().and_then(|r| r.state_changed_at), now);
    let fetched = match client.customer_state(&user.to_string()).await {
        Ok(s) => Some(s),
        Err(PolarError::NotFound { .. }) => None,
        Err(e) if e.is_unavailable() => {
            // The last known state, whatever its age, marked as such.
            let last = row.and_then(|r| Some((r.state?, r.state_fetched_at?)));
            return match last {
                Some((s, at)) => Ok(StateRead { state: serde_json::from_value(s).ok(), fetched_at: at, stale: true }),
                None => Err(Error::from(e)),
            };
        }
        Err(e) => return Err(Error::from(e)),
    };
    let json = fetched.as_ref().and_then(|s| serde_json::to_value(s).ok());
    sqlx::query(
        "INSERT INTO polar_customers (user_id, polar_customer_id, status, state, state_fetched_at) VALUES ($1, $2, CASE WHEN $2 IS NULL THEN 'pending' ELSE 'linked' END, $3, $4)
         ON CONFLICT (user_id) DO UPDATE SET state = $3, state_fetched_at = $4, state_stale = false,
             polar_customer_id = coalesce($2, polar_customers.polar_customer_id),
             status = CASE WHEN $2 IS NOT NULL AND polar_customers.status <> 'deleted' THEN 'linked' ELSE polar_customers.status END, updated_at = now()",
    )
    .bind(user)
    .bind(fetched.as_ref().map(|s| s.id.clone()))
    .bind(&json)
    .bind(now)
    .execute(&billing.pool)
    .await?;
    if let Some(r) = &billing.redis {
        r.put(user, &CachedState { state: json, fetched_at: now }, ttl).await;
    }
    Ok(StateRead { state: fetched, fetched_at: now, stale: false })
}

/// Drops the Redis entry of a user whose Customer State just changed (after the change
/// committed; Postgres was marked stale in the same transaction).
pub async fn forget_cached_state(billing: &Billing, user: Uuid) {
    if let Some(r) = &billing.redis {
        r.forget(user).await;
    }
}

/// Marks the cached state as stale (a `customer.state_changed` webhook, or a change we made).
pub async fn invalidate_state(conn: &mut sqlx::PgConnection, user: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE polar_customers SET state_stale = true, state_changed_at = now() WHERE user_id = $1")
        .bind(user)
        .execute(conn)
        .await?;
    Ok(())
}

/// The entitlement guard: `Ok` when the user holds a granted benefit whose metadata `slug` is
/// `slug`. Follows benefits, never "has a subscription".
pub async fn require_benefit(billing: &Billing, user: Uuid, slug: &str) -> Result<()> {
    require_any_benefit(billing, user, &[slug]).await
}

/// Like [`require_benefit`], satisfied by any one of `slugs` (e.g. `PAID_BENEFITS`).
pub async fn require_any_benefit(billing: &Billing, user: Uuid, slugs: &[&str]) -> Result<()> {
    let read = match customer_state(billing, user, STATE_TTL).await {
        Ok(r) => r,
        // No state at all and Polar unreachable: fail closed.
        Err(Error::Unavailable(_)) => return Err(Error::CannotConfirm),
        Err(e) => return Err(e),
    };
    if read.stale && Utc::now() - read.fetched_at > STALE_GRACE {
        return Err(Error::CannotConfirm);
    }
    if slugs.iter().any(|s| read.has_benefit(s)) {
        Ok(())
    } else {
        Err(Error::NotEntitled(format!(
            "This needs the {} benefit, which your plan does not include.",
            slugs.join(" or ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(fetched_secs_ago: i64, changed_secs_ago: Option<i64>, stale: bool, now: DateTime<Utc>) -> StoredState {
        StoredState {
            state: None,
            state_fetched_at: Some(now - Duration::seconds(fetched_secs_ago)),
            state_stale: stale,
            state_changed_at: changed_secs_ago.map(|s| now - Duration::seconds(s)),
        }
    }

    #[test]
    fn a_stored_state_is_served_while_young_and_never_once_marked_stale() {
        let now = Utc::now();
        let fresh = |r: &StoredState| fresh_row(r, STATE_TTL, None, now).is_some();
        assert!(fresh(&row(29, None, false, now)));
        assert!(!fresh(&row(31, None, false, now)), "older than STATE_TTL");
        assert!(!fresh(&row(1, None, true, now)), "a webhook marked it stale");
        assert!(fresh(&row(1, Some(5), false, now)), "within SETTLING_TTL of a read after a change");
        assert!(!fresh(&row(3, Some(5), false, now)), "a change settling: kept only SETTLING_TTL");
        assert!(fresh(&row(3, Some(25), false, now)), "the change has settled");
        let never = StoredState { state_fetched_at: None, ..row(0, None, false, now) };
        assert!(!fresh(&never), "never read from Polar");
        assert!(fresh_row(&row(40, None, false, now), STATE_TTL, Some(now - Duration::seconds(41)), now).is_some());
        assert!(stored_for_page(None).is_none(), "no row: read through the cache");
        // A page shows a row up to REFRESH_GRACE past its TTL, and has it refreshed.
        let page = |r: &StoredState| stored_for_page(Some(r)).map(|(_, refresh)| refresh);
        let now = Utc::now();
        assert_eq!(page(&row(10, None, false, now)), Some(false), "fresh");
        assert_eq!(page(&row(45, None, false, now)), Some(true), "aged: shown, refreshed");
        assert_eq!(page(&row(85, None, false, now)), Some(true));
        assert_eq!(page(&row(95, None, false, now)), None, "past the grace: read first");
        assert_eq!(page(&row(45, None, true, now)), None, "marked stale by a webhook: read first");
        assert_eq!(page(&row(5, Some(10), false, now)), None, "a change settling: read first");
    }
}
