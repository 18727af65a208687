//! The notices above an account's billing: confirm the email address (the free credits come
//! with it), the plan shown is the last known one, the last renewal payment failed.

use crate::api::auth::ResendConfirmation;
use crate::api::billing::OpenPortal;
use crate::domain::money::group_thousands;
use crate::views::account::AccountView;
use leptos::prelude::*;

/// What the unconfirmed-address notice says.
pub fn confirm_email_text(free_credits: i64, email: &str) -> String {
    if free_credits > 0 {
        format!(
            "Confirm your email address to receive your {} free credits: open the link we sent to {email}.",
            group_thousands(free_credits as u64)
        )
    } else {
        format!("Confirm your email address: open the link we sent to {email}.")
    }
}

#[component]
pub fn AccountNotices(
    account: AccountView,
    resend: ServerAction<ResendConfirmation>,
    portal: ServerAction<OpenPortal>,
) -> impl IntoView {
    let a = account;
    let past_due = a.subscription.as_ref().is_some_and(|s| s.status == "past_due");
    view! {
        {(!a.email_verified)
            .then(|| {
                view! {
                    <div class="alert alert--info" role="status" data-testid="confirm-email">
                        <p>{confirm_email_text(a.free_credits, &a.email)}</p>
                        <ActionForm action=resend attr:class="inline-form">
                            <button type="submit" class="btn btn--secondary btn--sm">
                                "Send the link again"
                            </button>
                        </ActionForm>
                    </div>
                }
            })}
        {a
            .plan_notice
            .clone()
            .map(|n| {
                view! {
                    <div class="alert alert--info" role="status">
                        {n}
                    </div>
                }
            })}
        {past_due
            .then(|| {
                view! {
                    <div class="alert alert--error" role="alert">
                        <p>"Your last renewal payment failed. Update your payment method to keep your plan."</p>
                        <ActionForm action=portal attr:class="inline-form">
                            <button type="submit" class="btn btn--primary btn--sm">
                                "Fix payment in the billing portal"
                            </button>
                        </ActionForm>
                    </div>
                }
            })}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_confirmation_notice_names_the_free_credits_only_when_there_are_some() {
        assert_eq!(
            confirm_email_text(1_000, "a@example.com"),
            "Confirm your email address to receive your 1,000 free credits: open the link we sent to a@example.com."
        );
        assert_eq!(
            confirm_email_text(0, "a@example.com"),
            "Confirm your email address: open the link we sent to a@example.com."
        );
    }
}
