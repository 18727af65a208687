//! Usage billing on the billing page and in settings: this period's usage against the
//! allotment, overage so far and what it will cost at the period's end, the alerts that
//! fired, and the form that chooses overage and alerts.

use crate::api::usage::{percent_used, AlertView, DismissAlert, PeriodView, SaveUsageSettings, UsageSettingsView};
use crate::components::credit_meter::credit_amount;
use crate::components::form::{Field, FormError};
use crate::components::local_time::LocalTime;
use crate::domain::money::format_cents_exact;
use crate::error::AppError;
use leptos::prelude::*;

/// What the overage line says: its credits, their cost so far and the cap, or why there is none.
pub fn overage_text(p: &PeriodView) -> String {
    let usd = |c: i64| format_cents_exact(c, "usd");
    match (p.unit_cents, p.overage_allowed) {
        (_, _) if p.ended => format!(
            "This period ended early (your subscription ended): the {} credits of overage used in it stay recorded \
             here, at {} under your plan's metered price.",
            credit_amount(p.overage_units),
            usd(p.projected_cents)
        ),
        (None, _) => "Your plan has no overage: calls stop when your credits run out.".into(),
        (Some(_), _) if !p.overage_open => {
            "No new overage this period: your subscription is not active or is set to end. What was used is still billed."
                .into()
        }
        (Some(unit), false) => format!(
            "Overage is off. Turn it on in billing settings to keep calls working past your credits, at {} a credit.",
            usd(unit)
        ),
        (Some(unit), true) => {
            let cap = match p.cap_cents {
                Some(c) if p.cap_is_default => {
                    format!(", capped at {} this period (Tally's default: neither your plan nor you set a cap)", usd(c))
                }
                Some(c) => format!(", capped at {} this period", usd(c)),
                None => String::new(),
            };
            format!(
                "Overage is on: once this period's whole allotment is used (days not yet released are released \
                 early first), {} a credit{cap}.",
                usd(unit)
            )
        }
    }
}

#[component]
pub fn UsagePanel(period: Option<PeriodView>) -> impl IntoView {
    let Some(p) = period else {
        return view! {
            <section class="panel" aria-labelledby="period-usage-title">
                <h2 id="period-usage-title">"Usage this period"</h2>
                <p class="empty">"Usage is counted per billing period once you are on a paid plan."</p>
            </section>
        }
        .into_any();
    };
    let pct = percent_used(p.spent, p.allotment);
    let heading = if p.ended { "Usage in your last period" } else { "Usage this period" };
    let billed_on = if p.ended { " The period ended on " } else { " Billed by Polar with your renewal on " };
    view! {
        <section class="panel" aria-labelledby="period-usage-title">
            <h2 id="period-usage-title">{heading}</h2>
            <p>
                <span data-testid="period-spent">{credit_amount(p.spent)}</span>
                " of "
                {credit_amount(p.allotment)}
                " credits used ("
                <span data-testid="period-percent">{pct}</span>
                " %)"
            </p>
            <meter
                min="0"
                max="100"
                low="80"
                high="100"
                optimum="0"
                value=pct.min(100).to_string()
                aria-label="Share of this period's credits used"
            >
                {format!("{pct} %")}
            </meter>
            <dl class="credit-sources">
                <div>
                    <dt>"Allotment this period"</dt>
                    <dd data-testid="period-allotment">{format!("{} credits", credit_amount(p.allotment))}</dd>
                </div>
                <div>
                    <dt>"Released so far"</dt>
                    <dd data-testid="period-released">{format!("{} credits", credit_amount(p.released))}</dd>
                </div>
                <div>
                    <dt>"Released early (advanced)"</dt>
                    <dd data-testid="period-advanced">{format!("{} credits", credit_amount(p.advanced))}</dd>
                </div>
                <div>
                    <dt>"Still to be released"</dt>
                    <dd data-testid="period-to-release">{format!("{} credits", credit_amount(p.to_release))}</dd>
                </div>
                <div>
                    <dt>"Overage so far"</dt>
                    <dd data-testid="overage-units">{format!("{} credits", credit_amount(p.overage_units))}</dd>
                </div>
                <div>
                    <dt>"Projected overage charge"</dt>
                    <dd data-testid="projected-charge">{format_cents_exact(p.projected_cents, "usd")}</dd>
                </div>
            </dl>
            <p class="muted">
                {overage_text(&p)} {billed_on} <LocalTime iso=p.ends_iso.clone() utc_text=p.ends_text.clone() />
                ", plus tax where it applies."
            </p>
        </section>
    }
    .into_any()
}

/// The alerts of this period, each until dismissed.
#[component]
pub fn UsageAlerts(alerts: Vec<AlertView>, dismiss: ServerAction<DismissAlert>) -> impl IntoView {
    alerts
        .into_iter()
        .map(|a| {
            let key = a.key.clone();
            view! {
                <div
                    class="alert alert--warning usage-alert"
                    role="status"
                    data-testid="usage-alert"
                    data-alert=a.key.clone()
                >
                    <span>
                        <strong>{a.headline.clone()}</strong>
                        " ("
                        <LocalTime iso=a.fired_iso.clone() utc_text=a.fired_text.clone() />
                        ")"
                    </span>
                    <ActionForm action=dismiss attr:class="inline-form">
                        <input type="hidden" name="alert" value=key.clone() />
                        <button type="submit" class="btn btn--link">
                            "Dismiss"
                        </button>
                    </ActionForm>
                </div>
            }
        })
        .collect_view()
}

/// A checkbox posted as `name=on` when ticked.
#[component]
fn Check(name: &'static str, label: &'static str, checked: bool) -> impl IntoView {
    let id = format!("field-{name}");
    view! {
        <div class="field field--check">
            <input id=id.clone() type="checkbox" name=name checked=checked />
            <label for=id>{label}</label>
        </div>
    }
}

#[component]
pub fn UsageSettingsForm(settings: UsageSettingsView, save: ServerAction<SaveUsageSettings>) -> impl IntoView {
    let error: Signal<Option<AppError>> = Signal::derive(move || save.value().get().and_then(|r| r.err()));
    view! {
        <section class="panel" aria-labelledby="usage-settings-title">
            <h2 id="usage-settings-title">"Overage and usage alerts"</h2>
            <ActionForm action=save attr:class="form" attr:aria-label="Overage and usage alerts">
                <FormError error=error />
                <Check
                    name="overage_allowed"
                    label="Keep calls working past my credits (billed as overage at the period's end)"
                    checked=settings.overage_allowed
                />
                <Field
                    name="spend_cap"
                    label="My overage cap per period, in dollars (optional)"
                    input_type="text"
                    hint="Empty: your plan's cap, or Tally's default when the plan sets none. A call that would pass it is refused."
                    required=false
                    value=settings.spend_cap.clone()
                    error=error
                />
                <Check
                    name="alert_percent"
                    label="Alert me at 80 %, 100 % and 150 % of my period's credits"
                    checked=settings.alert_percent
                />
                <Check name="alert_overage" label="Alert me when overage starts" checked=settings.alert_overage />
                <Field
                    name="alert_below"
                    label="Alert me when my balance falls under (credits, optional)"
                    input_type="text"
                    required=false
                    value=settings.alert_below.clone()
                    error=error
                />
                <Check name="alert_email" label="Also send alerts by email" checked=settings.alert_email />
                <button type="submit" class="btn btn--primary">
                    "Save usage settings"
                </button>
            </ActionForm>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn period(unit: Option<i64>, allowed: bool, cap: Option<i64>) -> PeriodView {
        PeriodView {
            ended: false,
            ends_iso: String::new(),
            ends_text: String::new(),
            allotment: 5000,
            spent: 0,
            released: 167,
            advanced: 0,
            to_release: 4833,
            overage_units: 0,
            projected_cents: 0,
            unit_cents: unit,
            cap_cents: cap,
            cap_is_default: false,
            overage_open: true,
            overage_allowed: allowed,
        }
    }

    #[test]
    fn the_overage_line_says_why() {
        assert!(overage_text(&period(None, true, None)).contains("no overage"));
        assert!(overage_text(&period(Some(1), false, None)).contains("Overage is off"));
        let closed = PeriodView { overage_open: false, ..period(Some(1), true, None) };
        assert!(overage_text(&closed).contains("No new overage"));
        assert_eq!(
            overage_text(&period(Some(1), true, Some(5000))),
            "Overage is on: once this period's whole allotment is used (days not yet released are released early \
             first), $0.01 a credit, capped at $50.00 this period."
        );
        let default_cap = PeriodView { cap_is_default: true, ..period(Some(1), true, Some(10000)) };
        assert!(overage_text(&default_cap).contains("capped at $100.00 this period (Tally's default"));
        let ended =
            PeriodView { ended: true, overage_units: 1200, projected_cents: 1200, ..period(Some(1), true, None) };
        assert!(overage_text(&ended).contains("ended early (your subscription ended): the 1,200 credits of overage"));
    }
}
