//! The plan panel: the plan, its status and renewal, and what can be done with it (change,
//! cancel at period end or keep, the billing portal).

use crate::api::billing::{OpenPortal, SetCancel};
use crate::views::account::{AccountView, SubscriptionView};
use leptos::prelude::*;

/// The badge next to the plan's name: its text and its style (`ok` or `warn`).
pub fn status_badge(sub: Option<&SubscriptionView>) -> (&'static str, &'static str) {
    match sub {
        Some(s) if s.status == "past_due" => ("Payment past due", "warn"),
        Some(s) if s.status == "trialing" => ("Trial", "ok"),
        Some(s) if s.cancel_at_period_end => ("Ends at period end", "warn"),
        _ => ("Active", "ok"),
    }
}

/// When the subscription renews or ends, in a sentence.
pub fn renewal_text(s: &SubscriptionView) -> String {
    if s.cancel_at_period_end {
        format!("Ends on {}; it will not renew.", s.renews_or_ends_on)
    } else if s.status == "trialing" {
        format!("Trial ends on {}; then it renews.", s.renews_or_ends_on)
    } else {
        format!("Renews on {}.", s.renews_or_ends_on)
    }
}

#[component]
pub fn PlanPanel(
    account: AccountView,
    cancel: ServerAction<SetCancel>,
    portal: ServerAction<OpenPortal>,
) -> impl IntoView {
    let sub = account.subscription.clone();
    let (badge, tone) = status_badge(sub.as_ref());
    view! {
        <section class="panel" aria-labelledby="plan-title">
            <h2 id="plan-title">"Your plan"</h2>
            <p class="plan-name">{account.plan.name()} <span class=format!("badge badge--{tone}")>{badge}</span></p>
            {sub.as_ref().map(|s| view! { <p data-testid="renewal">{renewal_text(s)}</p> })}
            <p class="muted">{format!("Member since {}", account.member_since)}</p>
            <div class="actions">
                <a class="btn btn--primary" href="/pricing">
                    {if sub.is_some() { "Change plan" } else { "Upgrade" }}
                </a>
                {sub
                    .map(|s| {
                        if s.cancel_at_period_end {
                            view! {
                                <ActionForm action=cancel attr:class="inline-form">
                                    <input type="hidden" name="cancel" value="false" />
                                    <button type="submit" class="btn btn--ghost">
                                        "Keep my subscription"
                                    </button>
                                </ActionForm>
                            }
                                .into_any()
                        } else {
                            view! {
                                <ActionForm action=cancel attr:class="inline-form">
                                    <input type="hidden" name="cancel" value="true" />
                                    <button type="submit" class="btn btn--danger">
                                        "Cancel at period end"
                                    </button>
                                </ActionForm>
                            }
                                .into_any()
                        }
                    })}
                {account
                    .has_billing_account
                    .then(|| {
                        view! {
                            <ActionForm action=portal attr:class="inline-form">
                                <button type="submit" class="btn btn--ghost">
                                    "Manage in billing portal"
                                </button>
                            </ActionForm>
                        }
                    })}
            </div>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(status: &str, cancel: bool) -> SubscriptionView {
        SubscriptionView {
            status: status.into(),
            renews_or_ends_on: "January 1, 2027".into(),
            cancel_at_period_end: cancel,
        }
    }

    #[test]
    fn the_badge_says_what_needs_attention_first() {
        assert_eq!(status_badge(None), ("Active", "ok"));
        assert_eq!(status_badge(Some(&sub("active", false))), ("Active", "ok"));
        assert_eq!(status_badge(Some(&sub("trialing", false))), ("Trial", "ok"));
        assert_eq!(status_badge(Some(&sub("active", true))), ("Ends at period end", "warn"));
        assert_eq!(
            status_badge(Some(&sub("past_due", true))),
            ("Payment past due", "warn"),
            "a failed payment outranks the cancellation"
        );
    }

    #[test]
    fn the_renewal_sentence_follows_the_subscription() {
        assert_eq!(renewal_text(&sub("active", false)), "Renews on January 1, 2027.");
        assert_eq!(renewal_text(&sub("trialing", false)), "Trial ends on January 1, 2027; then it renews.");
        assert_eq!(renewal_text(&sub("trialing", true)), "Ends on January 1, 2027; it will not renew.");
    }
}
