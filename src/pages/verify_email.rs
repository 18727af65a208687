//! `/verify-email?token=…`: where the confirmation mail's link lands. Confirming is a button,
//! not the page view itself, so a mail client or scanner that fetches the link does not use
//! up its one use.

use crate::api::auth::ConfirmEmail;
use crate::components::form::FormError;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

#[component]
pub fn VerifyEmailPage() -> impl IntoView {
    let action = ServerAction::<ConfirmEmail>::new();
    let error = Signal::derive(move || action.value().get().and_then(|r| r.err()));
    let query = use_query_map();
    let token = move || query.read().get("token").unwrap_or_default();
    view! {
        <Title text="Confirm your email" />
        <section class="panel narrow auth">
            <h1>"Confirm your email address"</h1>
            {move || {
                if token().is_empty() {
                    view! {
                        <p class="alert alert--error" role="alert">
                            "This link has no confirmation code. Open the link from the mail we sent you."
                        </p>
                    }
                        .into_any()
                } else {
                    view! {
                        <p>"One click and your address is confirmed, and your free credits are added."</p>
                        <ActionForm action=action attr:class="form" attr:aria-label="Confirm your email address">
                            <FormError error=error />
                            {move || {
                                error
                                    .get()
                                    .filter(|e| e.field() == Some("token"))
                                    .map(|e| {
                                        view! {
                                            <div class="alert alert--error" role="alert">
                                                {e.to_string()}
                                            </div>
                                        }
                                    })
                            }}
                            <input type="hidden" name="token" value=token />
                            <button type="submit" class="btn btn--primary btn--block">
                                "Confirm my email address"
                            </button>
                        </ActionForm>
                    }
                        .into_any()
                }
            }}
        </section>
    }
}
