//! The customer's billing on the operator's customer page: the subscriptions and Customer State
//! as Tally holds them, this billing period, Polar's Customer State on request (a plain link:
//! it works with JavaScript off) and the resync from Polar (with a reason, audited).

use super::events::{FormContext, ReasonFields};
use super::{Table, TextRow};
use crate::api::admin::{AdminResync, BillingLines, StateLines, SubscriptionLine};
use crate::api::usage::PeriodView;
use crate::components::form::FormError;
use crate::domain::money::{format_cents_exact, group_thousands};
use crate::error::AppError;
use leptos::prelude::*;

#[component]
pub fn BillingSection(
    billing: BillingLines,
    resync: ServerAction<AdminResync>,
    error: Signal<Option<AppError>>,
    ctx: FormContext,
) -> impl IntoView {
    let BillingLines { subscriptions, stored, period, polar, polar_usage } = billing;
    let ask = format!("/admin/customers/{}?polar=1#polar-title", ctx.customer);
    let polar = polar.map(|answer| {
        let body = match answer {
            Ok(state) => view! { <StateList state=state /> }.into_any(),
            Err(why) => view! {
                <p class="alert alert--error" role="alert">
                    {why}
                </p>
            }
            .into_any(),
        };
        let usage = match polar_usage {
            Some(Ok(lines)) => view! {
                <p>"Usage: what the ledger holds against what Polar's meters counted (what was sent)"</p>
                <ul>{lines.into_iter().map(|l| view! { <li>{l}</li> }).collect_view()}</ul>
                <p class="muted">
                    "Polar recomputes a meter 15 seconds to 3 hours after events arrive: usage that reached it just now shows as unexplained until then. Parked events never reach it until retried."
                </p>
            }
            .into_any(),
            Some(Err(why)) => view! {
                <p class="alert alert--error" role="alert">
                    {why}
                </p>
            }
            .into_any(),
            None => ().into_any(),
        };
        view! {
            <h3 id="polar-title">"Polar's Customer State, asked now"</h3>
            {body}
            {usage}
        }
    });
    view! {
        <section class="panel" aria-labelledby="billing-title">
            <h2 id="billing-title">"Plan and billing"</h2>
            <h3>"Subscriptions, as Tally last applied them"</h3>
            <Subscriptions subscriptions=subscriptions empty="No subscription." />
            <h3>"Customer State, as Tally last stored it"</h3>
            {match stored {
                Some(state) => view! { <StateList state=state /> }.into_any(),
                None => view! { <p class="muted">"Polar was never asked about this customer."</p> }.into_any(),
            }}
            <p>
                <a href=ask>"Ask Polar now"</a>
                " (reads Polar's Customer State and usage meters; changes nothing of the customer's)"
            </p>
            {polar}
            <h3>"This billing period"</h3>
            {match period {
                Some(p) => view! { <Period p=p /> }.into_any(),
                None => view! { <p class="muted">"No billing period: no paid plan has given one."</p> }.into_any(),
            }}
            <h3>"Resync from Polar"</h3>
            <p class="muted">
                "Reads the customer, their Customer State and their subscriptions from Polar and applies them, as "
                <code>"tally polar reconcile"</code> " does: for a change whose webhook never arrived."
            </p>
            <FormError error=error />
            <ActionForm action=resync attr:class="inline-form form-row">
                <ReasonFields
                    ctx=ctx
                    input_id="resync-reason".into()
                    label="Reason for the resync".into()
                    button="Resync from Polar".into()
                />
            </ActionForm>
        </section>
    }
}

#[component]
fn Subscriptions(subscriptions: Vec<SubscriptionLine>, empty: &'static str) -> impl IntoView {
    if subscriptions.is_empty() {
        return view! { <p class="muted">{empty}</p> }.into_any();
    }
    view! {
        <Table headers=&[
            "Subscription",
            "Plan",
            "Status",
            "Period",
        ]>
            {subscriptions
                .into_iter()
                .map(|s| {
                    view! { <TextRow cells=vec![s.id, s.what, s.status, s.period] /> }
                })
                .collect_view()}
        </Table>
    }
    .into_any()
}

#[component]
fn StateList(state: StateLines) -> impl IntoView {
    let read = if state.stale { format!("read {}, out of date", state.read) } else { format!("read {}", state.read) };
    let benefits = if state.benefits.is_empty() { "none".to_string() } else { state.benefits.join(", ") };
    view! {
        <p>
            <strong>{format!("Plan: {}", state.plan)}</strong>
            {format!(" ({read}) · granted benefits: {benefits}")}
        </p>
        <Subscriptions subscriptions=state.subscriptions empty="No active subscription." />
        {(!state.meters.is_empty())
            .then(|| {
                view! { <ul>{state.meters.into_iter().map(|m| view! { <li>{m}</li> }).collect_view()}</ul> }
            })}
    }
}

#[component]
fn Period(p: PeriodView) -> impl IntoView {
    let n = |v: i64| group_thousands(v.max(0) as u64);
    let money = |c: i64| format_cents_exact(c, "usd");
    let status = if p.ended { format!("ended {}", p.ends_text) } else { format!("ends {}", p.ends_text) };
    let overage = match (p.overage_allowed, p.unit_cents) {
        (_, None) => "the plan bills no overage".to_string(),
        (false, Some(_)) => "overage off (the customer has not opted in)".to_string(),
        (true, Some(unit)) => format!(
            "overage on at {} a credit{}{}",
            money(unit),
            p.cap_cents.map(|c| format!(", capped at {}", money(c))).unwrap_or_default(),
            if p.overage_open { "" } else { ", closed for this period" },
        ),
    };
    view! {
        <ul>
            <li>{format!("Period {status}")}</li>
            <li>{format!("Allotment {} credits, {} spent", n(p.allotment), n(p.spent))}</li>
            <li>
                {format!(
                    "Released {} · advanced {} · still to release {}",
                    n(p.released),
                    n(p.advanced),
                    n(p.to_release),
                )}
            </li>
            <li>
                {format!(
                    "Overage {} credits, {} so far (billed by Polar at the period's end, before tax)",
                    n(p.overage_units),
                    money(p.projected_cents),
                )}
            </li>
            <li>{overage}</li>
        </ul>
    }
}
