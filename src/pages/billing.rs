//! `/billing`: plan, status and credits for the signed-in user.

use crate::api::account::{get_account, get_activity};
use crate::api::auth::ResendConfirmation;
use crate::api::billing::{OpenPortal, SetCancel};
use crate::components::activity::ActivitySection;
use crate::components::form::FormError;
use crate::components::navigate::follow_redirects;
use crate::domain::money::group_thousands;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

/// What the last action on this page did (`?done=` after its redirect).
fn done_message(done: &str) -> Option<&'static str> {
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
    let account = Resource::new(|| (), |_| get_account("/billing".into()));
    let cancel = ServerAction::<SetCancel>::new();
    let portal = ServerAction::<OpenPortal>::new();
    let resend = ServerAction::<ResendConfirmation>::new();
    follow_redirects(move || cancel.value().get());
    follow_redirects(move || portal.value().get());
    let error = Signal::derive(move || {
        cancel
            .value()
            .get()
            .and_then(|r| r.err())
            .or_else(|| portal.value().get().and_then(|r| r.err()))
            .or_else(|| resend.value().get().and_then(|r| r.err()))
    });
    let query = use_query_map();
    let done = move || query.read().get("done").and_then(|d| done_message(&d));
    let history_page = move || query.read().get("page").and_then(|p| p.parse::<u32>().ok()).unwrap_or(1);
    let activity = Resource::new(history_page, get_activity);
    view! {
        <Title text="Billing" />
        <section class="page-head">
            <h1>"Billing"</h1>
        </section>
        {move || done().map(|m| view! { <div class="alert alert--success" role="status">{m}</div> })}
        <FormError error=error />
        <Suspense fallback=|| view! { <p class="loading" role="status">"Loading your billing…"</p> }>
            {move || {
                // Read both page-level resources here so the server waits for them.
                let activity = activity.get();
                account.get().map(|res| match res {
                Err(e) => view! { <SignInPrompt message=e.to_string() next="/billing" /> }.into_any(),
                Ok(a) => {
                    let sub = a.subscription.clone();
                    let past_due = sub.as_ref().is_some_and(|s| s.status == "past_due");
                    view! {
                    {(!a.email_verified).then(|| view! {
                        <div class="alert alert--info" role="status" data-testid="confirm-email">
                            <p>{if a.free_credits > 0 {
                                format!("Confirm your email address to receive your {} free credits: open the link we sent to {}.", group_thousands(a.free_credits as u64), a.email)
                            } else {
                                format!("Confirm your email address: open the link we sent to {}.", a.email)
                            }}</p>
                            <ActionForm action=resend attr:class="inline-form">
                                <button type="submit" class="btn btn--secondary btn--sm" disabled=move || resend.pending().get()>"Send the link again"</button>
                            </ActionForm>
                        </div>
                    })}
                    {a.plan_notice.clone().map(|n| view! { <div class="alert alert--info" role="status">{n}</div> })}
                    {past_due.then(|| view! {
                        <div class="alert alert--error" role="alert">
                            <p>"Your last renewal payment failed. Update your payment method to keep your plan."</p>
                            <ActionForm action=portal attr:class="inline-form">
                                <button type="submit" class="btn btn--primary btn--sm">"Fix payment in the billing portal"</button>
                            </ActionForm>
                        </div>
                    })}
                    <div class="grid-2">
                        <section class="panel" aria-labelledby="plan-title">
                            <h2 id="plan-title">"Your plan"</h2>
                            <p class="plan-name">
                                {a.plan.name()}
                                {match sub.as_ref().map(|s| s.status.as_str()) {
                                    Some("past_due") => view! { <span class="badge badge--warn">"Payment past due"</span> }.into_any(),
                                    Some("trialing") => view! { <span class="badge badge--ok">"Trial"</span> }.into_any(),
                                    _ if sub.as_ref().is_some_and(|s| s.cancel_at_period_end) => view! { <span class="badge badge--warn">"Ends at period end"</span> }.into_any(),
                                    _ => view! { <span class="badge badge--ok">"Active"</span> }.into_any(),
                                }}
                            </p>
                            {sub.clone().map(|s| view! {
                                <p data-testid="renewal">
                                    {if s.cancel_at_period_end {
                                        format!("Ends on {}; it will not renew.", s.renews_or_ends_on)
                                    } else if s.status == "trialing" {
                                        format!("Trial ends on {}; then it renews.", s.renews_or_ends_on)
                                    } else {
                                        format!("Renews on {}.", s.renews_or_ends_on)
                                    }}
                                </p>
                            })}
                            <p class="muted">{format!("Member since {}", a.member_since)}</p>
                            <div class="actions">
                                <a class="btn btn--primary" href="/pricing">{if sub.is_some() { "Change plan" } else { "Upgrade" }}</a>
                                {sub.clone().map(|s| if s.cancel_at_period_end {
                                    view! {
                                        <ActionForm action=cancel attr:class="inline-form">
                                            <input type="hidden" name="cancel" value="false" />
                                            <button type="submit" class="btn btn--ghost" disabled=move || cancel.pending().get()>"Keep my subscription"</button>
                                        </ActionForm>
                                    }.into_any()
                                } else {
                                    view! {
                                        <ActionForm action=cancel attr:class="inline-form">
                                            <input type="hidden" name="cancel" value="true" />
                                            <button type="submit" class="btn btn--danger" disabled=move || cancel.pending().get()>"Cancel at period end"</button>
                                        </ActionForm>
                                    }.into_any()
                                })}
                                {a.has_billing_account.then(|| view! {
                                    <ActionForm action=portal attr:class="inline-form">
                                        <button type="submit" class="btn btn--ghost" disabled=move || portal.pending().get()>"Manage in billing portal"</button>
                                    </ActionForm>
                                })}
                            </div>
                        </section>
                        <section class="panel" aria-labelledby="credits-title">
                            <h2 id="credits-title">"Credits"</h2>
                            <p class="credits-total"><span data-testid="credits-total">{group_thousands(a.credits.total.max(0) as u64)}</span>" credits available"</p>
                            <dl class="credit-sources">
                                {[("This period's allotment", a.credits.allotment), ("Purchased", a.credits.purchased), ("Free", a.credits.free), ("Adjustments", a.credits.adjustment)]
                                    .into_iter()
                                    .filter(|(label, n)| *n > 0 || *label == "Free")
                                    .map(|(label, n)| view! { <div><dt>{label}</dt><dd>{group_thousands(n.max(0) as u64)}</dd></div> })
                                    .collect_view()}
                            </dl>
                            {(a.credits.allotment > 0 || a.credits.pending_allotment > 0).then(|| view! {
                                <p data-testid="accrual">
                                    {format!("This period: {} available now, {} more to come day by day until renewal. Unused allotment does not roll over.",
                                        group_thousands(a.credits.allotment.max(0) as u64), group_thousands(a.credits.pending_allotment.max(0) as u64))}
                                </p>
                            })}
                            {a.credits.next_accrual_at.map(|t| view! {
                                <p data-testid="next-accrual">"Next credits arrive "
                                    <crate::components::local_time::LocalTime iso=t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true) utc_text=t.format("%b %-d, %H:%M UTC").to_string() />
                                    "."
                                </p>
                            })}
                            <p class="muted">"Credits are spent soonest-expiring first: this period's allotment, then purchased, then free."</p>
                            <p class="muted">{format!("Paid plans add their monthly credits day by day; a new day starts at {}.", a.day_boundary)}</p>
                            <p><a class="btn btn--ghost" href="/pricing#packs-title">"Buy credits"</a></p>
                        </section>
                    </div>
                    {match activity.clone() {
                        Some(Ok(a)) => view! { <ActivitySection activity=a /> }.into_any(),
                        Some(Err(e)) => view! { <div class="alert alert--error" role="alert">{format!("Credit history is unavailable: {e}")}</div> }.into_any(),
                        None => view! { <p class="loading" role="status">"Loading credit history…"</p> }.into_any(),
                    }}
                }.into_any()
                }
            })
            }}
        </Suspense>
    }
}

/// Shown when a page needs a signed-in user (with JavaScript on, the server also redirects).
#[component]
pub fn SignInPrompt(message: String, #[prop(into)] next: String) -> impl IntoView {
    view! {
        <section class="panel narrow center" role="alert">
            <p>{message}</p>
            <p><a class="btn btn--primary" href=format!("/login?next={}", crate::pages::signup::urlencode(&next))>"Sign in"</a></p>
        </section>
    }
}
