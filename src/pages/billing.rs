//! `/billing`: plan, status and credits for the signed-in user.

use crate::api::account::{get_billing_page, BillingPageView};
use crate::api::auth::ResendConfirmation;
use crate::api::billing::{OpenPortal, SetCancel};
use crate::api::usage::DismissAlert;
use crate::components::account_notices::AccountNotices;
use crate::components::activity::ActivitySection;
use crate::components::auth::SignInPrompt;
use crate::components::credit_meter::CreditMeter;
use crate::components::form::FormError;
use crate::components::plan_panel::PlanPanel;
use crate::components::usage::{UsageAlerts, UsagePanel};
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

/// What the last action on this page did (`?done=` after its redirect).
pub fn done_message(done: &str) -> Option<&'static str> {
    Some(match done {
        "canceled" => "Your subscription will end at the end of the period. You keep your plan and credits until then.",
        "resumed" => "Your subscription continues and renews as usual.",
        "upgraded" => "Your plan was upgraded. The difference for the rest of this period was invoiced, and the extra credits are yours now.",
        "scheduled" => "Your plan changes at the next renewal. Until then nothing changes.",
        "email-confirmed" => "Your email address is confirmed.",
        "email-confirmed-claimed" => "Your email address is confirmed. Its inbox already received the free credits with another account, so none were added.",
        "confirmation-sent" => "We sent the confirmation link again. It works once and expires in 24 hours.",
        "password-reset" => "Your new password is saved, and every other session was signed out.",
        _ => return None,
    })
}

#[component]
pub fn BillingPage() -> impl IntoView {
    let cancel = ServerAction::<SetCancel>::new();
    let portal = ServerAction::<OpenPortal>::new();
    let resend = ServerAction::<ResendConfirmation>::new();
    let dismiss = ServerAction::<DismissAlert>::new();
    let error = Signal::derive(move || {
        cancel
            .value()
            .get()
            .and_then(|r| r.err())
            .or_else(|| portal.value().get().and_then(|r| r.err()))
            .or_else(|| resend.value().get().and_then(|r| r.err()))
            .or_else(|| dismiss.value().get().and_then(|r| r.err()))
    });
    let query = use_query_map();
    let done = move || query.read().get("done").and_then(|d| done_message(&d));
    // One read for the whole page (its reads share one database connection); read again after
    // an alert is dismissed, so the banner goes without a reload, and for another history page.
    let page = Resource::new(
        move || (dismiss.version().get(), query.read().get("before"), query.read().get("after")),
        |(_, before, after)| get_billing_page(before, after),
    );
    view! {
        <Title text="Billing" />
        <section class="page-head">
            <h1>"Billing"</h1>
        </section>
        {move || {
            done()
                .map(|m| {
                    view! {
                        <div class="alert alert--success" role="status">
                            {m}
                        </div>
                    }
                })
        }}
        <FormError error=error />
        <Transition fallback=|| {
            view! {
                <p class="loading" role="status">
                    "Loading your billing…"
                </p>
            }
        }>
            {move || {
                page.get()
                    .map(|res| match res {
                        Err(e) => view! { <SignInPrompt message=e.to_string() next="/billing" /> }.into_any(),
                        Ok(BillingPageView { account: a, usage, activity }) => {
                            view! {
                                <AccountNotices account=a.clone() resend=resend portal=portal />
                                {match usage.clone() {
                                    Ok(u) => view! { <UsageAlerts alerts=u.alerts dismiss=dismiss /> }.into_any(),
                                    Err(_) => ().into_any(),
                                }}
                                <div class="grid-2">
                                    <PlanPanel account=a.clone() cancel=cancel portal=portal />
                                    <CreditMeter credits=a.credits.clone() day_boundary=a.day_boundary.clone() />
                                </div>
                                {match usage {
                                    Ok(u) => view! { <UsagePanel period=u.period /> }.into_any(),
                                    Err(e) => {
                                        view! {
                                            <div class="alert alert--error" role="alert">
                                                {format!("Usage is unavailable: {e}")}
                                            </div>
                                        }
                                            .into_any()
                                    }
                                }}
                                {match activity {
                                    Ok(a) => view! { <ActivitySection activity=a /> }.into_any(),
                                    Err(e) => {
                                        view! {
                                            <div class="alert alert--error" role="alert">
                                                {format!("Credit history is unavailable: {e}")}
                                            </div>
                                        }
                                            .into_any()
                                    }
                                }}
                            }
                                .into_any()
                        }
                    })
            }}
        </Transition>
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_outcome_has_its_message_and_unknown_ones_none() {
        for done in
            ["canceled", "resumed", "upgraded", "scheduled", "email-confirmed", "confirmation-sent", "password-reset"]
        {
            assert!(super::done_message(done).is_some(), "{done}");
        }
        assert_eq!(super::done_message("<script>"), None, "nothing from the URL is echoed");
    }
}
