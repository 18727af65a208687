//! What the billing page's usage panel reads, in one statement: the account's latest period
//! with its allotment's progress, the alerts shown for it, and the usage settings (three reads
//! before; each round trip costs a page more than its query does).

use super::alerts::{self, Fired};
use super::settings::UsageSettings;
use crate::server::ledger::period::{self, PeriodRead};
use chrono::{DateTime, Utc};
use sqlx::{FromRow, Row};
use uuid::Uuid;

/// The usage panel's reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PanelRead {
    /// The account's latest period, running or not (`None`: it never had one).
    pub period: Option<PeriodRead>,
    /// The alerts of the period running at `now` (or of none, `"none"`) the user asked for and
    /// has not dismissed, newest first.
    pub alerts: Vec<Fired>,
    pub settings: UsageSettings,
}

/// The usage panel of `user` at `now`: one row per alert shown (one without any), each with
/// the period and the settings.
pub async fn read(conn: &mut sqlx::PgConnection, user: Uuid, now: DateTime<Utc>) -> Result<PanelRead, sqlx::Error> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let (period_columns, period_joins) = period::latest_with_progress_sql();
        format!(
            "SELECT {period_columns},
                    s.overage_allowed AS settings_overage_allowed, s.spend_cap_cents, s.alert_below,
                    s.alert_percent, s.alert_overage, s.alert_email,
                    a.alert AS alert_key, a.fired_at AS alert_fired_at, a.balance AS alert_balance
               FROM (SELECT $1::uuid AS user_id) me
               {period_joins}
               LEFT JOIN usage_settings s ON s.user_id = me.user_id
               LEFT JOIN LATERAL (
                    SELECT ua.alert, ua.fired_at, ua.balance FROM usage_alerts ua
                     WHERE ua.user_id = me.user_id AND ua.dismissed_at IS NULL
                       AND ua.period_key = CASE WHEN c.period_start <= $2 AND $2 < c.period_end
                                                THEN c.period_key ELSE 'none' END) a ON true
              ORDER BY {order}",
            order = alerts::SHOWN_ORDER
        )
    });
    let rows = sqlx::query(SQL.as_str()).bind(user).bind(now).fetch_all(&mut *conn).await?;
    let Some(first) = rows.first() else { return Err(sqlx::Error::RowNotFound) };
    let period = match first.try_get::<Option<String>, _>("key")? {
        Some(_) => Some(PeriodRead::from_row(first)?),
        None => None,
    };
    let settings = match first.try_get::<Option<bool>, _>("settings_overage_allowed")? {
        Some(overage_allowed) => UsageSettings {
            overage_allowed,
            spend_cap_cents: first.try_get("spend_cap_cents")?,
            alert_below: first.try_get("alert_below")?,
            alert_percent: first.try_get("alert_percent")?,
            alert_overage: first.try_get("alert_overage")?,
            alert_email: first.try_get("alert_email")?,
        },
        None => UsageSettings::default(),
    };
    let mut shown = Vec::new();
    for row in &rows {
        if let Some(key) = row.try_get::<Option<String>, _>("alert_key")? {
            let (fired_at, balance) = (row.try_get("alert_fired_at")?, row.try_get("alert_balance")?);
            shown.extend(alerts::shown(&key, fired_at, balance, settings.alert_percent, settings.alert_overage));
        }
    }
    Ok(PanelRead { period, alerts: shown, settings })
}
