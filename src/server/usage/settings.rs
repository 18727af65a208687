//! What each user chose about overage and alerts (settings/billing). Saved through
//! `usage_save_settings`, which also copies what the spend needs onto the account row.

use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

/// The most a user may set as their own overage cap, in cents ($100,000): beyond it a typo,
/// not a choice.
pub const MAX_CAP_CENTS: i64 = 10_000_000;
/// The highest low-balance threshold, in credits.
pub const MAX_ALERT_BELOW: i64 = 100_000_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct UsageSettings {
    /// Whether calls may go past the balance into overage (when the plan has a metered price).
    pub overage_allowed: bool,
    /// The user's own cap on one period's overage, in cents; `None`: the plan's cap.
    pub spend_cap_cents: Option<i64>,
    /// Alert when the balance falls under this many credits; `None`: never.
    pub alert_below: Option<i64>,
    pub alert_percent: bool,
    pub alert_overage: bool,
    pub alert_email: bool,
}

impl Default for UsageSettings {
    fn default() -> Self {
        UsageSettings {
            overage_allowed: false,
            spend_cap_cents: None,
            alert_below: None,
            alert_percent: true,
            alert_overage: true,
            alert_email: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("The spend cap must be between $0 and $100,000.")]
    Cap,
    #[error("The alert threshold must be between 1 and 100,000,000 credits.")]
    Threshold,
}

impl UsageSettings {
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.spend_cap_cents.is_some_and(|c| !(0..=MAX_CAP_CENTS).contains(&c)) {
            return Err(Invalid::Cap);
        }
        if self.alert_below.is_some_and(|n| !(1..=MAX_ALERT_BELOW).contains(&n)) {
            return Err(Invalid::Threshold);
        }
        Ok(())
    }
}

pub async fn load(db: impl sqlx::PgExecutor<'_>, user_id: Uuid) -> Result<UsageSettings, sqlx::Error> {
    Ok(sqlx::query_as(
        "SELECT overage_allowed, spend_cap_cents, alert_below, alert_percent, alert_overage, alert_email
           FROM usage_settings WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(db)
    .await?
    .unwrap_or_default())
}

/// Saves valid settings (the caller validated them).
pub async fn save(conn: &mut PgConnection, user_id: Uuid, s: &UsageSettings) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT usage_save_settings($1, $2, $3, $4, $5, $6, $7)")
        .bind(user_id)
        .bind(s.overage_allowed)
        .bind(s.spend_cap_cents)
        .bind(s.alert_below)
        .bind(s.alert_percent)
        .bind(s.alert_overage)
        .bind(s.alert_email)
        .execute(conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked() {
        let ok = UsageSettings { spend_cap_cents: Some(2500), alert_below: Some(100), ..Default::default() };
        assert_eq!(ok.validate(), Ok(()));
        let cap = UsageSettings { spend_cap_cents: Some(-1), ..Default::default() };
        assert_eq!(cap.validate(), Err(Invalid::Cap));
        let cap = UsageSettings { spend_cap_cents: Some(MAX_CAP_CENTS + 1), ..Default::default() };
        assert_eq!(cap.validate(), Err(Invalid::Cap));
        let below = UsageSettings { alert_below: Some(0), ..Default::default() };
        assert_eq!(below.validate(), Err(Invalid::Threshold));
    }
}
