//! `/billing/change?to=business`: what a plan change does, before it is done. An upgrade
//! shows the prorated charge for the rest of the period and the credits it adds now; a
//! downgrade shows that nothing changes until the renewal, and what the new plan costs and
//! grants from then. Confirming posts the change (a plain form without JavaScript).

use crate::api::billing::{get_plan_change, ChangePlan};
use crate::components::auth::SignInPrompt;
use crate::components::form::FormError;
use crate::domain::money::group_thousands;
use crate::error::AppError;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

fn credits(n: i64) -> String {
    group_thousands(n.max(0) as u64)
}

#[component]
pub fn ChangePlanPage() -> impl IntoView {
    let query = use_query_map();
    let to = move || query.read().get("to").unwrap_or_default();
    let preview = Resource::new(to, get_plan_change);
    let change = ServerAction::<ChangePlan>::new();
    let error = Signal::derive(move || change.value().get().and_then(|r| r.err()));
    view! {
        <Title text="Change plan" />
        <Suspense fallback=|| {
            view! {
                <p class="loading" role="status">
                    "Working out what changes…"
                </p>
            }
        }>
            {move || {
                preview
                    .get()
                    .map(|res| match res {
                        Err(AppError::Unauthorized) => {
                            view! {
                                <SignInPrompt
                                    message=AppError::Unauthorized.to_string()
                                    next=format!("/billing/change?to={}", to())
                                />
                            }
                                .into_any()
                        }
                        Err(e) => {
                            view! {
                                <section class="panel narrow" role="alert">
                                    <h1>"This plan change is not available"</h1>
                                    <p>{e.to_string()}</p>
                                    <p class="actions">
                                        <a class="btn btn--primary" href="/billing">
                                            "Back to billing"
                                        </a>
                                        <a class="btn btn--ghost" href="/pricing">
                                            "See plans"
                                        </a>
                                    </p>
                                </section>
                            }
                                .into_any()
                        }
                        Ok(p) => {
                            let title = if p.upgrade {
                                format!("Upgrade to {}", p.to_name)
                            } else {
                                format!("Switch to {} at renewal", p.to_name)
                            };
                            let confirm = if p.upgrade {
                                format!("Upgrade and pay {}", p.charge_now)
                            } else {
                                format!("Switch to {} on {}", p.to_name, p.period_end)
                            };
                            view! {
                                <section class="panel narrow" aria-labelledby="change-title">
                                    <h1 id="change-title">{title}</h1>
                                    <p class="muted">
                                        {format!(
                                            "You are on {} ({}/{}, {} credits a {}).",
                                            p.from_name,
                                            p.current_price,
                                            p.interval,
                                            credits(p.current_period_credits),
                                            p.interval,
                                        )}
                                    </p>
                                    {p
                                        .pending_name
                                        .clone()
                                        .map(|n| {
                                            let msg = if n == p.to_name {
                                                format!("This switch is already scheduled for {}.", p.period_end)
                                            } else {
                                                format!(
                                                    "A switch to {n} is scheduled for {}. Confirming replaces it.",
                                                    p.period_end,
                                                )
                                            };
                                            view! {
                                                <div class="alert alert--info" role="status">
                                                    {msg}
                                                </div>
                                            }
                                        })}
                                    <dl class="summary" data-testid="plan-change-preview">
                                        <dt>"Charged today"</dt>
                                        <dd data-testid="charge-now">
                                            {if p.upgrade {
                                                format!(
                                                    "{}, for the rest of this period (the price difference, prorated). Tax, if any, is added on the invoice.",
                                                    p.charge_now,
                                                )
                                            } else {
                                                "Nothing. You keep your plan and its credits until the renewal."
                                                    .to_string()
                                            }}
                                        </dd>
                                        <dt>"Credits"</dt>
                                        <dd data-testid="credit-effect">
                                            {if p.upgrade {
                                                format!(
                                                    "+{} credits for the rest of this period, accruing daily until {}.",
                                                    credits(p.extra_credits_now),
                                                    p.period_end,
                                                )
                                            } else {
                                                format!(
                                                    "From {}: {} credits a {} instead of {}. Purchased credits are kept.",
                                                    p.period_end,
                                                    credits(p.new_period_credits),
                                                    p.interval,
                                                    credits(p.current_period_credits),
                                                )
                                            }}
                                        </dd>
                                        <dt>"From the renewal"</dt>
                                        <dd data-testid="renewal-effect">
                                            {format!(
                                                "{} on {}, then {}ly, with {} credits a {}.",
                                                p.new_price,
                                                p.period_end,
                                                p.interval,
                                                credits(p.new_period_credits),
                                                p.interval,
                                            )}
                                        </dd>
                                    </dl>
                                    <FormError error=error />
                                    <div class="actions">
                                        <ActionForm action=change attr:class="inline-form">
                                            <input type="hidden" name="plan" value=p.plan.clone() />
                                            <button type="submit" class="btn btn--primary">
                                                {confirm}
                                            </button>
                                        </ActionForm>
                                        <a class="btn btn--ghost" href="/billing">
                                            "Keep my current plan"
                                        </a>
                                    </div>
                                </section>
                            }
                                .into_any()
                        }
                    })
            }}
        </Suspense>
    }
}
