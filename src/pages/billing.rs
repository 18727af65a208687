//! `/billing`: plan, status and credits for the signed-in user.

use crate::api::account::get_account;
use crate::domain::money::group_thousands;
use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn BillingPage() -> impl IntoView {
    let account = Resource::new(|| (), |_| get_account("/billing".into()));
    view! {
        <Title text="Billing" />
        <section class="page-head">
            <h1>"Billing"</h1>
        </section>
        <Suspense fallback=|| view! { <p class="loading" role="status">"Loading your billing…"</p> }>
            {move || account.get().map(|res| match res {
                Err(e) => view! { <SignInPrompt message=e.to_string() next="/billing" /> }.into_any(),
                Ok(a) => view! {
                    <div class="grid-2">
                        <section class="panel" aria-labelledby="plan-title">
                            <h2 id="plan-title">"Your plan"</h2>
                            <p class="plan-name">
                                {a.plan.name()}
                                {match a.subscription.as_ref().map(|s| s.status.as_str()) {
                                    Some("past_due") => view! { <span class="badge badge--warn">"Payment past due"</span> }.into_any(),
                                    Some("trialing") => view! { <span class="badge badge--ok">"Trial"</span> }.into_any(),
                                    _ => view! { <span class="badge badge--ok">"Active"</span> }.into_any(),
                                }}
                            </p>
                            {a.subscription.clone().map(|s| view! {
                                <p data-testid="renewal">
                                    {if s.cancel_at_period_end { format!("Ends on {}; it will not renew.", s.renews_or_ends_on) } else { format!("Renews on {}.", s.renews_or_ends_on) }}
                                </p>
                            })}
                            <p class="muted">{format!("Member since {}", a.member_since)}</p>
                            <p><a class="btn btn--primary" href="/pricing">"Compare plans"</a></p>
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
                            <p class="muted">"Credits are spent soonest-expiring first: this period's allotment, then purchased, then free."</p>
                            <p class="muted">{format!("Paid plans add their monthly credits day by day; a new day starts at {}.", a.day_boundary)}</p>
                        </section>
                    </div>
                }.into_any(),
            })}
        </Suspense>
    }
}

/// Shown when a page needs a signed-in user (with JavaScript on, the server also redirects).
#[component]
pub fn SignInPrompt(message: String, next: &'static str) -> impl IntoView {
    view! {
        <section class="panel narrow center" role="alert">
            <p>{message}</p>
            <p><a class="btn btn--primary" href=format!("/login?next={next}")>"Sign in"</a></p>
        </section>
    }
}
