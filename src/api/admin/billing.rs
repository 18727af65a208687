//! The customer page's billing section: Tally's copy of the subscriptions and Customer State,
//! this period, Polar's Customer State when the operator asks, and the audited resync.

#[cfg(feature = "ssr")]
use super::{BillingLines, StateLines, SubscriptionLine};
use crate::error::AppError;
use leptos::prelude::*;

/// The billing section of `customer`'s page; `ask_polar`: read Polar's Customer State now too.
#[cfg(feature = "ssr")]
pub(super) async fn billing_lines(
    state: &crate::server::state::AppState,
    customer: uuid::Uuid,
    ask_polar: bool,
) -> Result<BillingLines, AppError> {
    use crate::server::admin;
    let mut conn = state.pool.acquire().await?;
    let copy = admin::billing_copy(&mut conn, customer).await?;
    let period = crate::api::usage::usage_on(&mut conn, customer).await?.period;
    drop(conn);
    let (polar, polar_usage) = if ask_polar {
        let read = admin::ask_polar(&state.billing, customer).await.map(|r| state_lines(&r)).map_err(|e| {
            let e = AppError::from(e);
            format!("Polar could not be asked: {e}")
        });
        let usage = admin::usage_at_polar(&state.billing, customer).await.map(|d| d.iter().map(drift_line).collect());
        let usage = usage.map_err(|e| format!("Polar's meters could not be read: {}", super::action_error(e)));
        (Some(read), Some(usage))
    } else {
        (None, None)
    };
    Ok(BillingLines {
        subscriptions: copy.subscriptions.iter().map(subscription_line).collect(),
        stored: copy.state.as_ref().map(state_lines),
        period,
        polar,
        polar_usage,
    })
}

/// One event's usage, the ledger against Polar's meter, in words.
#[cfg(feature = "ssr")]
fn drift_line(d: &crate::server::usage::reconcile::Drift) -> String {
    let n = |v: i64| crate::domain::money::group_thousands(v.max(0) as u64);
    let unexplained = d.unexplained();
    let verdict = if unexplained == 0 { "all accounted for".to_string() } else { format!("{unexplained} unexplained") };
    format!(
        "{}: {} credits in the ledger · {} on Polar's meter · {} on their way · {} parked: {verdict}",
        d.event,
        n(d.ledger),
        n(d.polar),
        n(d.in_flight),
        n(d.parked)
    )
}

/// A subscription as Tally last applied it.
#[cfg(feature = "ssr")]
fn subscription_line(s: &crate::server::billing::subscriptions::LiveSubscription) -> SubscriptionLine {
    let live = crate::server::billing::subscriptions::LIVE_STATUSES.contains(&s.status.as_str());
    SubscriptionLine {
        id: s.id.clone(),
        what: s.plan.as_deref().map_or("a product Tally does not map to a plan".into(), |p| {
            p.parse::<crate::domain::plans::PlanId>().map_or(p.to_string(), |p| p.to_string())
        }),
        status: s.status.clone(),
        period: period_words(live, s.cancel_at_period_end, s.current_period_end),
    }
}

/// "renews …", "ends …" (cancelled at the period's end) or "period ended …".
#[cfg(feature = "ssr")]
fn period_words(live: bool, cancelling: bool, end: chrono::DateTime<chrono::Utc>) -> String {
    let day = end.format("%Y-%m-%d");
    match (live, cancelling) {
        (true, false) => format!("renews {day}"),
        (true, true) => format!("ends {day}"),
        (false, _) => format!("period ended {day}"),
    }
}

/// A Customer State as the console shows it.
#[cfg(feature = "ssr")]
fn state_lines(r: &crate::server::billing::customer_state::StateRead) -> StateLines {
    let state = r.state.as_ref();
    StateLines {
        plan: r.plan().to_string(),
        read: super::when(r.fetched_at),
        stale: r.stale,
        benefits: state
            .map(|s| {
                s.granted_benefits
                    .iter()
                    .map(|g| {
                        g.benefit_metadata
                            .get("slug")
                            .and_then(|v| v.as_str())
                            .map_or_else(|| g.benefit_type.clone(), str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default(),
        subscriptions: state
            .map(|s| {
                s.active_subscriptions
                    .iter()
                    .map(|sub| {
                        let status = serde_json::to_value(&sub.status)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default();
                        SubscriptionLine {
                            id: sub.id.clone(),
                            what: format!(
                                "{} a period",
                                crate::domain::money::format_cents_exact(sub.amount, &sub.currency)
                            ),
                            status,
                            period: period_words(true, sub.cancel_at_period_end, sub.current_period_end),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default(),
        meters: state
            .map(|s| {
                s.active_meters
                    .iter()
                    .map(|m| {
                        format!(
                            "meter {}: {} consumed, {} credited, balance {}",
                            m.meter_id, m.consumed_units, m.credited_units, m.balance
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Re-reads the customer from Polar and applies it (the CLI's `tally polar reconcile`), with a
/// reason kept in the audit log.
#[server(prefix = "/api", endpoint = "admin/resync")]
pub async fn admin_resync(customer: String, reason: String, form_key: String) -> Result<String, AppError> {
    super::super::with_status(
        async {
            let (state, op, id) = super::acting_on(&customer).await?;
            let result = crate::server::admin::resync(&state.billing, &op, id, &reason, &form_key).await;
            super::done(id, "resynced", result)
        }
        .await,
    )
}
