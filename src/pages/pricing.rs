//! `/pricing`: plans and credit packs, the visitor's plan marked, and the way to buy: a Polar
//! checkout for a first plan or a pack, a plan change for subscribers, sign-up for visitors.

use crate::api::account::get_pricing;
use crate::api::billing::StartCheckout;
use crate::components::form::FormError;
use crate::domain::money::{format_cents, group_thousands};
use crate::domain::plans::PlanId;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

#[component]
pub fn PricingPage() -> impl IntoView {
    let pricing = Resource::new(|| (), |_| get_pricing());
    let checkout = ServerAction::<StartCheckout>::new();
    let error = Signal::derive(move || checkout.value().get().and_then(|r| r.err()));
    // `?billing=yearly`: plain links switch the prices, with or without JavaScript.
    let query = use_query_map();
    let yearly = move || query.read().get("billing").as_deref() == Some("yearly");
    view! {
        <Title text="Pricing" />
        <section class="page-head">
            <h1>"Simple plans, credits that add up"</h1>
            <p class="lead">
                "Every plan includes the API. Paid plans add monthly credits that accrue daily; packs top you up and never expire."
            </p>
        </section>
        <FormError error=error />
        <Suspense fallback=|| {
            view! {
                <p class="loading" role="status">
                    "Loading plans…"
                </p>
            }
        }>
            {move || {
                pricing
                    .get()
                    .map(|res| match res {
                        Err(e) => {
                            view! {
                                <div class="alert alert--error" role="alert">
                                    {e.to_string()}
                                </div>
                            }
                                .into_any()
                        }
                        Ok(p) => {
                            let signed_in = p.current_plan.is_some();
                            let demo = p.enterprise_demo_url.clone();
                            let has_yearly = p.offers.iter().any(|o| o.yearly_price_cents.is_some());
                            let yearly = yearly() && has_yearly;
                            view! {
                                {has_yearly
                                    .then(|| {
                                        view! {
                                            <nav class="interval-switch" aria-label="Billing period">
                                                <a href="/pricing" aria-current=(!yearly).then_some("page")>
                                                    "Monthly"
                                                </a>
                                                <a href="/pricing?billing=yearly" aria-current=yearly.then_some("page")>
                                                    "Yearly "
                                                    <span class="interval-switch__save">"2 months free"</span>
                                                </a>
                                            </nav>
                                        }
                                    })}
                                <ul class="plans">
                                    {p
                                        .offers
                                        .into_iter()
                                        .map(|o| {
                                            let current = p.current_plan == Some(o.plan);
                                            let (cents, per_label) = match (yearly, o.yearly_price_cents) {
                                                (true, Some(y)) => (Some(y), "/year"),
                                                _ => (o.monthly_price_cents, "/month"),
                                            };
                                            let price = match cents {
                                                Some(0) => "Free".to_string(),
                                                Some(c) => format_cents(c, &o.currency),
                                                None => "Custom".to_string(),
                                            };
                                            let per = cents.filter(|c| *c > 0).map(|_| per_label);
                                            let item = if yearly && o.yearly_price_cents.is_some() {
                                                format!("{}_yearly", o.plan.slug())
                                            } else {
                                                o.plan.slug().to_string()
                                            };
                                            let credits = o
                                                .monthly_credits
                                                .map(|c| match o.plan {
                                                    PlanId::Free => {
                                                        format!("{} credits to start", group_thousands(c as u64))
                                                    }
                                                    _ => format!("{} credits a month", group_thousands(c as u64)),
                                                });
                                            let cta = match (o.plan, current, signed_in) {
                                                (_, true, _) => {
                                                    // Yearly where the plan is sold yearly; otherwise its monthly price.
                                                    view! {
                                                        <span class="badge badge--current">"Your current plan"</span>
                                                    }
                                                        .into_any()
                                                }
                                                (PlanId::Free, false, false) => {
                                                    view! {
                                                        <a class="btn btn--primary btn--block" href="/signup">
                                                            "Sign up free"
                                                        </a>
                                                    }
                                                        .into_any()
                                                }
                                                (PlanId::Enterprise, _, _) => {
                                                    match demo.clone() {
                                                        Some(url) => {
                                                            view! {
                                                                <a
                                                                    class="btn btn--ghost btn--block"
                                                                    href=url
                                                                    rel="noopener"
                                                                >
                                                                    "Book a demo"
                                                                </a>
                                                            }
                                                                .into_any()
                                                        }
                                                        None => {
                                                            view! { <span class="muted">"Contact sales"</span> }
                                                                .into_any()
                                                        }
                                                    }
                                                }
                                                (_, false, false) => {
                                                    view! {
                                                        <a
                                                            class="btn btn--primary btn--block"
                                                            href="/signup?next=/pricing"
                                                        >
                                                            "Sign up to upgrade"
                                                        </a>
                                                    }
                                                        .into_any()
                                                }
                                                (PlanId::Free, false, true) => {
                                                    view! {
                                                        <a class="btn btn--ghost btn--block" href="/billing">
                                                            "Cancel from Billing"
                                                        </a>
                                                    }
                                                        .into_any()
                                                }
                                                (plan, false, true) => {
                                                    let subscribed = matches!(
                                                        p.current_plan,
                                                        Some(PlanId::Pro | PlanId::Business)
                                                    );
                                                    let upgrade = p.current_plan == Some(PlanId::Pro)
                                                        && plan == PlanId::Business;
                                                    let label = if !subscribed || upgrade {
                                                        format!("Upgrade to {}", plan.name())
                                                    } else {
                                                        format!("Switch to {} at renewal", plan.name())
                                                    };
                                                    if subscribed {
                                                        // No paid plan yet: a checkout. On a paid plan: a change (upgrade now,
                                                        // downgrade at renewal), previewed before it is confirmed.
                                                        view! {
                                                            <a
                                                                class="btn btn--primary btn--block"
                                                                href=format!("/billing/change?to={}", plan.slug())
                                                            >
                                                                {label}
                                                            </a>
                                                        }
                                                            .into_any()
                                                    } else {
                                                        view! {
                                                            <ActionForm action=checkout attr:class="inline-form">
                                                                <input type="hidden" name="item" value=item.clone() />
                                                                <button type="submit" class="btn btn--primary btn--block">
                                                                    {label}
                                                                </button>
                                                            </ActionForm>
                                                        }
                                                            .into_any()
                                                    }
                                                }
                                            };
                                            view! {
                                                <li class="plan" class:plan--current=current class:plan--featured=o.plan == PlanId::Pro>
                                        <h2 id=format!("plan-{}", o.plan.slug())>{o.plan.name()}</h2>
                                        <p class="plan__price"><span class="plan__amount">{price}</span>{per.map(|p| view! { <span class="plan__per">{p}</span> })}</p>
                                        <p class="plan__tagline">{o.tagline}</p>
                                        {credits.map(|c| view! { <p class="plan__credits">{c}</p> })}
                                        <ul class="plan__features">
                                            {o.features.into_iter().map(|f| view! { <li>{f}</li> }).collect_view()}
                                        </ul>
                                        <div class="plan__cta">{cta}</div>
                                    </li>
                                            }
                                        })
                                        .collect_view()}
                                </ul>
                                <section class="packs" aria-labelledby="packs-title">
                                    <h2 id="packs-title">"Credit packs"</h2>
                                    <p class="muted">
                                        "One-time top-ups on any plan, Free included. Purchased credits never expire."
                                    </p>
                                    <ul class="packs__list">
                                        {p
                                            .packs
                                            .into_iter()
                                            .map(|k| {
                                                let credits = group_thousands(k.credits as u64);
                                                let label = format!("Buy {credits} credits");
                                                let buy = if signed_in {
                                                    view! {
                                                        <ActionForm action=checkout attr:class="inline-form">
                                                            <input type="hidden" name="item" value=k.slug.clone() />
                                                            <button
                                                                type="submit"
                                                                class="btn btn--ghost btn--sm"
                                                                aria-label=label
                                                            >
                                                                "Buy"
                                                            </button>
                                                        </ActionForm>
                                                    }
                                                        .into_any()
                                                } else {
                                                    view! {
                                                        <a class="btn btn--ghost btn--sm" href="/signup?next=/pricing">
                                                            "Sign up to buy"
                                                        </a>
                                                    }
                                                        .into_any()
                                                };
                                                view! {
                                                    <li class="pack">
                                                        <span class="pack__credits">
                                                            {format!("{credits} credits")}
                                                        </span>
                                                        <span class="pack__price">
                                                            {format_cents(k.price_cents, &k.currency)}
                                                        </span>
                                                        {buy}
                                                    </li>
                                                }
                                            })
                                            .collect_view()}
                                    </ul>
                                </section>
                            }
                                .into_any()
                        }
                    })
            }}
        </Suspense>
    }
}
