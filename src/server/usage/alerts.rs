//! Usage alerts: the spend records them (`usage_alerts`, once per user, period and alert,
//! under the account lock; `migrations/…_overage_and_alerts.sql`), and this worker turns new
//! ones into mail through the mail outbox. It wakes on the `tally_usage_alerts` notification
//! the insert sends at commit, so a mail is queued well within a second of the spend that
//! crossed the line, on whichever instance is listening; rows are claimed with
//! `FOR UPDATE SKIP LOCKED`, so several instances never mail one alert twice.
//!
//! Which alerts a user gets (settings/billing): the percentages, the start of overage, and a
//! low-balance threshold; each shows as a banner on the billing page until dismissed, and is
//! mailed when mail alerts are on.

use crate::domain::usage::Alert;
use crate::server::mail::{self, Mailer};
use chrono::{DateTime, Utc};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use uuid::Uuid;

/// The channel the insert of an alert notifies.
pub const CHANNEL: &str = "tally_usage_alerts";

/// An alert as the billing page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    pub alert: Alert,
    pub fired_at: DateTime<Utc>,
    pub balance: i64,
}

#[derive(sqlx::FromRow)]
struct Due {
    user_id: Uuid,
    period_key: String,
    alert: String,
    balance: i64,
    period_spent: i64,
    allotment: i64,
    email: Option<String>,
    alert_percent: Option<bool>,
    alert_overage: Option<bool>,
    alert_email: Option<bool>,
}

/// Whether settings `(percent, overage)` ask for `alert` (a threshold alert exists only
/// because the user set one).
fn wanted(alert: Alert, percent: bool, overage: bool) -> bool {
    match alert {
        Alert::Percent(_) => percent,
        Alert::OverageStarted => overage,
        Alert::Below(_) => true,
    }
}

/// Queues the mail of every alert not yet handled (those the user wants, by mail), marks them
/// handled, and wakes the mailer; how many mails it queued.
///
/// At most `per_day` alert mails go to one account in 24 hours: past that an alert still shows
/// as a banner, but is not mailed (logged), so an account moving its own threshold back and
/// forth cannot flood its inbox or the shared mail queue.
pub async fn mail_new(
    pool: &PgPool,
    mailer: &Mailer,
    app_url: &str,
    per_day: u32,
    now: DateTime<Utc>,
) -> Result<usize, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let due: Vec<Due> = sqlx::query_as(
        "SELECT a.user_id, a.period_key, a.alert, a.balance, a.period_spent, a.allotment,
                CASE WHEN u.deleted_at IS NULL THEN u.email END AS email,
                s.alert_percent, s.alert_overage, s.alert_email
           FROM usage_alerts a
           JOIN users u ON u.id = a.user_id
           LEFT JOIN usage_settings s ON s.user_id = a.user_id
          WHERE a.handled_at IS NULL
          ORDER BY a.fired_at LIMIT 200
            FOR UPDATE OF a SKIP LOCKED",
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut queued = 0;
    for d in &due {
        let alert = Alert::from_key(&d.alert);
        let by_mail = alert
            .is_some_and(|a| wanted(a, d.alert_percent.unwrap_or(true), d.alert_overage.unwrap_or(true)))
            && d.alert_email.unwrap_or(true);
        if let (Some(alert), Some(to), true) = (alert, &d.email, by_mail) {
            let sent_today: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM outgoing_mail WHERE user_id = $1 AND kind = 'usage_alert' AND created_at > $2",
            )
            .bind(d.user_id)
            .bind(now - chrono::Duration::hours(24))
            .fetch_one(&mut *tx)
            .await?;
            if sent_today < i64::from(per_day) {
                let m = mail::templates::usage_alert(app_url, to, alert, d.balance, d.period_spent, d.allotment);
                mail::enqueue(&mut tx, Some(d.user_id), &m).await?;
                queued += 1;
            } else {
                tracing::warn!(user = %d.user_id, alert = %d.alert, per_day, "alert not mailed: the account's alert mail for today is used up (the banner still shows)");
            }
        }
        sqlx::query("UPDATE usage_alerts SET handled_at = $4 WHERE user_id = $1 AND period_key = $2 AND alert = $3")
            .bind(d.user_id)
            .bind(&d.period_key)
            .bind(&d.alert)
            .bind(now)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    if queued > 0 {
        mailer.wake();
    }
    Ok(queued)
}

/// Runs forever: mails new alerts whenever one is recorded (or every few seconds, should a
/// notification be missed while reconnecting).
pub async fn run(
    pool: PgPool,
    mailer: Mailer,
    app_url: String,
    per_day: u32,
    heartbeat: crate::server::supervisor::Heartbeat,
) {
    let mut listener = match PgListener::connect_with(&pool).await {
        Ok(mut l) => match l.listen(CHANNEL).await {
            Ok(()) => Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "usage alerts: cannot listen; polling each second");
                None
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "usage alerts: cannot listen; polling each second");
            None
        }
    };
    loop {
        heartbeat.beat();
        if let Err(e) = mail_new(&pool, &mailer, &app_url, per_day, Utc::now()).await {
            tracing::error!(error = %e, "usage alerts: database error");
        }
        match listener.as_mut() {
            Some(l) => {
                tokio::select! {
                    r = l.recv() => if let Err(e) = r {
                        tracing::warn!(error = %e, "usage alerts: notification stream broke; reconnecting");
                    },
                    _ = tokio::time::sleep(std::time::Duration::from_secs(3)) => {}
                }
            }
            None => tokio::time::sleep(std::time::Duration::from_secs(1)).await,
        }
    }
}

/// The order the billing page lists a period's alerts in (of `usage_alerts a`): newest first,
/// and of one spend's alerts the higher percentage first.
pub(crate) const SHOWN_ORDER: &str = "a.fired_at DESC,
    CASE WHEN starts_with(a.alert, 'percent_') THEN substr(a.alert, 9)::int ELSE 0 END DESC, a.alert";

/// An alert row as recorded (`alert` is its key) as the billing page shows it: `None` when the
/// user's settings (`percent`, `overage`; the defaults without settings) no longer ask for it.
pub(crate) fn shown(alert: &str, fired_at: DateTime<Utc>, balance: i64, percent: bool, overage: bool) -> Option<Fired> {
    let alert = Alert::from_key(alert)?;
    wanted(alert, percent, overage).then_some(Fired { alert, fired_at, balance })
}

/// Hides an alert's banner (it stays recorded, so it never fires again this period).
pub async fn dismiss(pool: &PgPool, user_id: Uuid, alert_key: &str, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE usage_alerts SET dismissed_at = $3 WHERE user_id = $1 AND alert = $2 AND dismissed_at IS NULL")
        .bind(user_id)
        .bind(alert_key)
        .bind(now)
        .execute(pool)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_choose_the_alerts() {
        assert!(wanted(Alert::Percent(80), true, false));
        assert!(!wanted(Alert::Percent(80), false, true));
        assert!(!wanted(Alert::OverageStarted, true, false));
        assert!(wanted(Alert::Below(10), false, false));
    }
}
