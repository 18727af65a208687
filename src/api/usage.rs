//! Server functions for usage billing: this period's usage, overage and projected charge,
//! the alerts that fired, and the user's overage and alert settings.

use crate::error::AppError;
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

/// This billing period as the billing page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodView {
    /// The period is over (it ended early, with overage): shown for what was used in it.
    pub ended: bool,
    /// RFC 3339 and the server's UTC rendering of the period's end.
    pub ends_iso: String,
    pub ends_text: String,
    pub allotment: i64,
    pub spent: i64,
    /// The period's allotment released on its days so far, released early to spends
    /// (advanced, with overage on), and still to be released.
    pub released: i64,
    pub advanced: i64,
    pub to_release: i64,
    pub overage_units: i64,
    /// What the overage so far costs, billed by Polar at the period's end (before tax).
    pub projected_cents: i64,
    /// The plan's metered price, if it bills overage.
    pub unit_cents: Option<i64>,
    /// The cap in force: the lower of the plan's and the user's, else Tally's default.
    pub cap_cents: Option<i64>,
    /// Whether that cap is Tally's default (neither the plan nor the user sets one).
    pub cap_is_default: bool,
    /// Whether new overage may be taken now (the subscription is active and renews).
    pub overage_open: bool,
    pub overage_allowed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertView {
    pub key: String,
    pub headline: String,
    pub fired_iso: String,
    pub fired_text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageSettingsView {
    pub overage_allowed: bool,
    /// The user's own cap in dollars as typed (`"25"`, `"12.50"`), empty for none.
    pub spend_cap: String,
    pub alert_below: String,
    pub alert_percent: bool,
    pub alert_overage: bool,
    pub alert_email: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageView {
    pub period: Option<PeriodView>,
    pub alerts: Vec<AlertView>,
    pub settings: UsageSettingsView,
}

/// Percent of the allotment used, for the meter (0 without an allotment).
pub fn percent_used(spent: i64, allotment: i64) -> i64 {
    if allotment <= 0 {
        return 0;
    }
    (spent.max(0).saturating_mul(100) / allotment).min(999)
}

/// An amount in dollars that is not one (more than two decimals, a sign, letters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotDollars;

/// `"12.50"` or `"$12.50"` → 1250 cents; empty → `None`.
pub fn parse_dollars(s: &str) -> Result<Option<i64>, NotDollars> {
    let s = s.trim().trim_start_matches('$').replace(',', "");
    if s.is_empty() {
        return Ok(None);
    }
    let (whole, frac) = s.split_once('.').unwrap_or((&s, ""));
    if whole.is_empty() && frac.is_empty()
        || !whole.chars().all(|c| c.is_ascii_digit())
        || !frac.chars().all(|c| c.is_ascii_digit())
        || frac.len() > 2
        || whole.len() > 9
    {
        return Err(NotDollars);
    }
    let whole: i64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| NotDollars)? };
    let cents: i64 = if frac.is_empty() { 0 } else { format!("{frac:0<2}").parse().map_err(|_| NotDollars)? };
    Ok(Some(whole * 100 + cents))
}

/// Cents as the settings form shows them: `2500` → `"25"`, `1250` → `"12.50"`.
pub fn dollars_text(cents: i64) -> String {
    if cents % 100 == 0 {
        (cents / 100).to_string()
    } else {
        format!("{}.{:02}", cents / 100, cents % 100)
    }
}

#[server(prefix = "/api", endpoint = "usage")]
pub async fn get_usage() -> Result<UsageView, AppError> {
    super::with_status(
        async {
            let state = super::state()?;
            let user = crate::server::auth::require_user().await?;
            // Every read on one connection (a pooled connection's checkout costs a round trip).
            let mut conn = state.pool.acquire().await?;
            usage_on(&mut conn, user.id).await
        }
        .await,
    )
}

/// The usage panel of `user`, read on `conn`.
#[cfg(feature = "ssr")]
pub(crate) async fn usage_on(conn: &mut sqlx::PgConnection, user: uuid::Uuid) -> Result<UsageView, AppError> {
    use crate::server::usage;
    let now = chrono::Utc::now();
    let text = |t: chrono::DateTime<chrono::Utc>| t.format("%b %-d, %H:%M UTC").to_string();
    // One read: the account's period (shown while it runs, and after it ended early, a
    // revocation, while it holds overage, so what was used in it stays on the page), the
    // alerts shown for it and the settings.
    let usage::panel::PanelRead { period, alerts, settings: s } = usage::panel::read(&mut *conn, user, now).await?;
    let (period, progress) = match period
        .filter(|r| (r.period.start <= now && now < r.period.end) || (r.period.end <= now && r.period.overage > 0))
    {
        Some(r) => (Some(r.period), r.progress),
        None => (None, Default::default()),
    };
    Ok(UsageView {
        period: period.map(|p| PeriodView {
            ended: p.end <= now,
            ends_iso: p.end.to_rfc3339(),
            ends_text: text(p.end),
            allotment: p.allotment,
            spent: p.spent,
            released: progress.released,
            advanced: progress.advanced,
            to_release: progress.pending,
            overage_units: p.overage,
            projected_cents: p.projected_charge_cents(),
            unit_cents: p.unit_cents,
            cap_cents: p.cap_in_force().map(|(c, _)| c),
            cap_is_default: p.cap_in_force().is_some_and(|(_, default)| default),
            overage_open: p.overage_open,
            overage_allowed: p.overage_allowed,
        }),
        alerts: alerts
            .into_iter()
            .map(|a| AlertView {
                key: a.alert.key(),
                headline: a.alert.headline(),
                fired_iso: a.fired_at.to_rfc3339(),
                fired_text: text(a.fired_at),
            })
            .collect(),
        settings: UsageSettingsView {
            overage_allowed: s.overage_allowed,
            spend_cap: s.spend_cap_cents.map(dollars_text).unwrap_or_default(),
            alert_below: s.alert_below.map(|n| n.to_string()).unwrap_or_default(),
            alert_percent: s.alert_percent,
            alert_overage: s.alert_overage,
            alert_email: s.alert_email,
        },
    })
}

/// Saves the overage and alert settings. Checkboxes arrive as `Some(_)` when ticked (a form
/// posts nothing for an unticked box); the cap in dollars and the threshold in credits may be
/// empty (none).
#[server(prefix = "/api", endpoint = "usage/settings")]
pub async fn save_usage_settings(
    overage_allowed: Option<String>,
    spend_cap: Option<String>,
    alert_below: Option<String>,
    alert_percent: Option<String>,
    alert_overage: Option<String>,
    alert_email: Option<String>,
) -> Result<String, AppError> {
    super::with_status(
        async {
            use crate::server::usage::settings::{self, UsageSettings};
            let state = super::state()?;
            let user = crate::server::auth::require_user().await?;
            let cap = parse_dollars(spend_cap.as_deref().unwrap_or_default()).map_err(|_| {
                AppError::validation("spend_cap", "Enter the cap in dollars, like 25 or 12.50, or leave it empty.")
            })?;
            let below = match alert_below.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
                None => None,
                Some(n) => Some(n.replace(',', "").parse::<i64>().map_err(|_| {
                    AppError::validation("alert_below", "Enter a whole number of credits, or leave it empty.")
                })?),
            };
            let s = UsageSettings {
                overage_allowed: overage_allowed.is_some(),
                spend_cap_cents: cap,
                alert_below: below,
                alert_percent: alert_percent.is_some(),
                alert_overage: alert_overage.is_some(),
                alert_email: alert_email.is_some(),
            };
            s.validate().map_err(|e| {
                let field = match e {
                    settings::Invalid::Cap => "spend_cap",
                    settings::Invalid::Threshold => "alert_below",
                };
                AppError::validation(field, e.to_string())
            })?;
            let mut conn = state.pool.acquire().await?;
            settings::save(&mut conn, user.id, &s).await?;
            Ok(crate::api::go("/settings/billing?done=usage-saved"))
        }
        .await,
    )
}

/// Hides an alert's banner for this period.
#[server(prefix = "/api", endpoint = "usage/dismiss")]
pub async fn dismiss_alert(alert: String) -> Result<String, AppError> {
    super::with_status(
        async {
            let state = super::state()?;
            let user = crate::server::auth::require_user().await?;
            if crate::domain::usage::Alert::from_key(&alert).is_none() {
                return Err(AppError::validation("alert", "Unknown alert."));
            }
            crate::server::usage::alerts::dismiss(&state.pool, user.id, &alert, chrono::Utc::now()).await?;
            Ok(crate::api::go("/billing"))
        }
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_parse_and_print() {
        assert_eq!(parse_dollars(""), Ok(None));
        assert_eq!(parse_dollars(" 25 "), Ok(Some(2500)));
        assert_eq!(parse_dollars("$12.5"), Ok(Some(1250)));
        assert_eq!(parse_dollars("1,000.05"), Ok(Some(100005)));
        assert_eq!(parse_dollars("0.999"), Err(NotDollars));
        assert_eq!(parse_dollars("-3"), Err(NotDollars));
        assert_eq!(parse_dollars("."), Err(NotDollars));
        assert_eq!(parse_dollars("9999999999"), Err(NotDollars));
        assert_eq!(dollars_text(2500), "25");
        assert_eq!(dollars_text(1250), "12.50");
        assert_eq!(dollars_text(5), "0.05");
    }

    #[test]
    fn percent_is_bounded() {
        assert_eq!(percent_used(4000, 5000), 80);
        assert_eq!(percent_used(1, 0), 0);
        assert_eq!(percent_used(i64::MAX, 1), 999);
    }
}
