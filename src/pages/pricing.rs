//! `/pricing`: plans and credit packs, the visitor's plan marked, and the way to buy: a Polar
//! checkout for a first plan or a pack, a plan change for subscribers, sign-up for visitors.
//! One component per section: the period switch, a plan's card and its call to action, the packs.

use crate::api::account::get_pricing;
use crate::api::billing::StartCheckout;
use crate::components::form::FormError;
use crate::domain::money::{format_cents, group_thousands};
use crate::domain::plans::{CreditPackOffer, PlanId, PlanOffer};
use crate::views::account::PricingView;
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
                        Ok(p) => view! { <Catalogue pricing=p yearly=yearly() checkout=checkout /> }.into_any(),
                    })
            }}
        </Suspense>
    }
}

/// The plans (monthly or, when asked and sold so, yearly) and the packs.
#[component]
fn Catalogue(pricing: PricingView, yearly: bool, checkout: ServerAction<StartCheckout>) -> impl IntoView {
    let PricingView { offers, packs, current_plan, enterprise_demo_url } = pricing;
    let has_yearly = offers.iter().any(|o| o.yearly_price_cents.is_some());
    let yearly = yearly && has_yearly;
    view! {
        {has_yearly.then(|| view! { <IntervalSwitch yearly=yearly /> })}
        <ul class="plans">
            {offers
                .into_iter()
                .map(|offer| {
                    view! {
                        <PlanCard
                            offer=offer
                            current_plan=current_plan
                            yearly=yearly
                            demo_url=enterprise_demo_url.clone()
                            checkout=checkout
                        />
                    }
                })
                .collect_view()}
        </ul>
        <PackList packs=packs signed_in=current_plan.is_some() checkout=checkout />
    }
}

/// Monthly or yearly prices: two links, the current one marked.
#[component]
fn IntervalSwitch(yearly: bool) -> impl IntoView {
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
}

/// What a plan's card shows as its price: the amount (yearly where the plan is sold yearly and
/// yearly is asked for, otherwise monthly) and the period it is for (none for Free and Custom).
fn price_label(o: &PlanOffer, yearly: bool) -> (String, Option<&'static str>) {
    let (cents, per) = match (yearly, o.yearly_price_cents) {
        (true, Some(y)) => (Some(y), "/year"),
        _ => (o.monthly_price_cents, "/month"),
    };
    let price = match cents {
        Some(0) => "Free".to_string(),
        Some(c) => format_cents(c, &o.currency),
        None => "Custom".to_string(),
    };
    (price, cents.filter(|c| *c > 0).map(|_| per))
}

/// What a plan's card offers its visitor.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PlanAction {
    Current,
    SignUpFree,
    SignUpToUpgrade,
    /// Enterprise: a demo to book, or sales to contact when no demo URL is set.
    Enterprise,
    /// A subscriber on Free would cancel their paid plan, which Billing does.
    CancelFromBilling,
    /// No paid plan yet: a Polar checkout.
    Checkout,
    /// On a paid plan: a change (an upgrade now, a downgrade at renewal), previewed first.
    Change {
        upgrade: bool,
    },
}

fn plan_action(plan: PlanId, current_plan: Option<PlanId>, signed_in: bool) -> PlanAction {
    if current_plan == Some(plan) {
        return PlanAction::Current;
    }
    match (plan, signed_in) {
        (PlanId::Enterprise, _) => PlanAction::Enterprise,
        (PlanId::Free, false) => PlanAction::SignUpFree,
        (_, false) => PlanAction::SignUpToUpgrade,
        (PlanId::Free, true) => PlanAction::CancelFromBilling,
        (plan, true) => match current_plan {
            Some(PlanId::Pro | PlanId::Business) => {
                PlanAction::Change { upgrade: current_plan == Some(PlanId::Pro) && plan == PlanId::Business }
            }
            _ => PlanAction::Checkout,
        },
    }
}

/// One plan: name, price, credits, features, and what the visitor can do about it.
#[component]
fn PlanCard(
    offer: PlanOffer,
    current_plan: Option<PlanId>,
    yearly: bool,
    demo_url: Option<String>,
    checkout: ServerAction<StartCheckout>,
) -> impl IntoView {
    let current = current_plan == Some(offer.plan);
    let (price, per) = price_label(&offer, yearly);
    // The checkout item: the yearly product where that price is shown.
    let item = if yearly && offer.yearly_price_cents.is_some() {
        format!("{}_yearly", offer.plan.slug())
    } else {
        offer.plan.slug().to_string()
    };
    let credits = offer.monthly_credits.map(|c| match offer.plan {
        PlanId::Free => format!("{} credits to start", group_thousands(c as u64)),
        _ => format!("{} credits a month", group_thousands(c as u64)),
    });
    let action = plan_action(offer.plan, current_plan, current_plan.is_some());
    view! {
        <li class="plan" class:plan--current=current class:plan--featured=offer.plan == PlanId::Pro>
            <h2 id=format!("plan-{}", offer.plan.slug())>{offer.plan.name()}</h2>
            <p class="plan__price">
                <span class="plan__amount">{price}</span>
                {per.map(|p| view! { <span class="plan__per">{p}</span> })}
            </p>
            <p class="plan__tagline">{offer.tagline}</p>
            {credits.map(|c| view! { <p class="plan__credits">{c}</p> })}
            <ul class="plan__features">{offer.features.into_iter().map(|f| view! { <li>{f}</li> }).collect_view()}</ul>
            <div class="plan__cta">
                <PlanCta action=action plan=offer.plan item=item demo_url=demo_url checkout=checkout />
            </div>
        </li>
    }
}

/// The button or link of a plan's card.
#[component]
fn PlanCta(
    action: PlanAction,
    plan: PlanId,
    item: String,
    demo_url: Option<String>,
    checkout: ServerAction<StartCheckout>,
) -> impl IntoView {
    match action {
        PlanAction::Current => view! { <span class="badge badge--current">"Your current plan"</span> }.into_any(),
        PlanAction::SignUpFree => view! {
            <a class="btn btn--primary btn--block" href="/signup">
                "Sign up free"
            </a>
        }
        .into_any(),
        PlanAction::SignUpToUpgrade => view! {
            <a class="btn btn--primary btn--block" href="/signup?next=/pricing">
                "Sign up to upgrade"
            </a>
        }
        .into_any(),
        PlanAction::Enterprise => match demo_url {
            Some(url) => view! {
                <a class="btn btn--ghost btn--block" href=url rel="noopener">
                    "Book a demo"
                </a>
            }
            .into_any(),
            None => view! { <span class="muted">"Contact sales"</span> }.into_any(),
        },
        PlanAction::CancelFromBilling => view! {
            <a class="btn btn--ghost btn--block" href="/billing">
                "Cancel from Billing"
            </a>
        }
        .into_any(),
        PlanAction::Checkout => view! {
            <ActionForm action=checkout attr:class="inline-form">
                <input type="hidden" name="item" value=item />
                <button type="submit" class="btn btn--primary btn--block">
                    {format!("Upgrade to {}", plan.name())}
                </button>
            </ActionForm>
        }
        .into_any(),
        PlanAction::Change { upgrade } => {
            let label = if upgrade {
                format!("Upgrade to {}", plan.name())
            } else {
                format!("Switch to {} at renewal", plan.name())
            };
            view! {
                <a class="btn btn--primary btn--block" href=format!("/billing/change?to={}", plan.slug())>
                    {label}
                </a>
            }
            .into_any()
        }
    }
}

/// The one-time credit packs, each bought through a checkout (visitors sign up first).
#[component]
fn PackList(packs: Vec<CreditPackOffer>, signed_in: bool, checkout: ServerAction<StartCheckout>) -> impl IntoView {
    view! {
        <section class="packs" aria-labelledby="packs-title">
            <h2 id="packs-title">"Credit packs"</h2>
            <p class="muted">"One-time top-ups on any plan, Free included. Purchased credits never expire."</p>
            <ul class="packs__list">
                {packs
                    .into_iter()
                    .map(|k| {
                        let credits = group_thousands(k.credits as u64);
                        let label = format!("Buy {credits} credits");
                        let buy = if signed_in {
                            view! {
                                <ActionForm action=checkout attr:class="inline-form">
                                    <input type="hidden" name="item" value=k.slug />
                                    <button type="submit" class="btn btn--ghost btn--sm" aria-label=label>
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
                                <span class="pack__credits">{format!("{credits} credits")}</span>
                                <span class="pack__price">{format_cents(k.price_cents, &k.currency)}</span>
                                {buy}
                            </li>
                        }
                    })
                    .collect_view()}
            </ul>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PlanId::*;

    #[test]
    fn each_visitor_is_offered_what_they_can_do() {
        // Visitors sign up; Enterprise is always a conversation.
        assert_eq!(plan_action(Free, None, false), PlanAction::SignUpFree);
        assert_eq!(plan_action(Pro, None, false), PlanAction::SignUpToUpgrade);
        assert_eq!(plan_action(Enterprise, None, false), PlanAction::Enterprise);
        // On Free: a checkout for a paid plan.
        assert_eq!(plan_action(Free, Some(Free), true), PlanAction::Current);
        assert_eq!(plan_action(Pro, Some(Free), true), PlanAction::Checkout);
        assert_eq!(plan_action(Business, Some(Free), true), PlanAction::Checkout);
        // On a paid plan: a previewed change, an upgrade only from Pro to Business.
        assert_eq!(plan_action(Business, Some(Pro), true), PlanAction::Change { upgrade: true });
        assert_eq!(plan_action(Pro, Some(Business), true), PlanAction::Change { upgrade: false });
        assert_eq!(plan_action(Pro, Some(Pro), true), PlanAction::Current);
        assert_eq!(plan_action(Free, Some(Pro), true), PlanAction::CancelFromBilling);
        assert_eq!(plan_action(Enterprise, Some(Business), true), PlanAction::Enterprise);
        assert_eq!(plan_action(Enterprise, Some(Enterprise), true), PlanAction::Current);
    }

    #[test]
    fn prices_show_the_period_they_are_for() {
        let offer = |monthly, yearly| PlanOffer {
            plan: Pro,
            monthly_price_cents: monthly,
            yearly_price_cents: yearly,
            currency: "usd".into(),
            monthly_credits: None,
            tagline: String::new(),
            features: vec![],
        };
        assert_eq!(price_label(&offer(Some(2_900), Some(29_000)), false), ("$29".into(), Some("/month")));
        assert_eq!(price_label(&offer(Some(2_900), Some(29_000)), true), ("$290".into(), Some("/year")));
        // Not sold yearly: the monthly price, even when yearly is asked for.
        assert_eq!(price_label(&offer(Some(2_900), None), true), ("$29".into(), Some("/month")));
        assert_eq!(price_label(&offer(Some(0), None), false), ("Free".into(), None));
        assert_eq!(price_label(&offer(None, None), true), ("Custom".into(), None));
    }
}
