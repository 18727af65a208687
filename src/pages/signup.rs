//! `/signup`: create an account.

use crate::api::auth::{get_signup_info, SignUp};
use crate::components::auth::{with_next, CredentialFields};
use crate::components::form::FormError;
use crate::domain::money::group_thousands;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

#[component]
pub fn SignupPage() -> impl IntoView {
    let action = ServerAction::<SignUp>::new();
    let error = Signal::derive(move || action.value().get().and_then(|r| r.err()));
    let query = use_query_map();
    let next = move || query.read().get("next").unwrap_or_default();
    let login_href = move || with_next("/login", &next());
    let info = Resource::new(|| (), |_| get_signup_info());
    view! {
        <Title text="Create your account" />
        <section class="panel narrow auth">
            <h1>"Create your account"</h1>
            <Suspense fallback=|| {
                view! { <p class="muted">"Start on the Free plan. No card needed."</p> }
            }>
                {move || {
                    info.get()
                        .map(|i| {
                            let credits = i.map(|i| i.free_credits).unwrap_or(0);
                            let text = if credits > 0 {
                                format!(
                                    "Start on the Free plan. No card needed: {} free credits once you confirm your email address.",
                                    group_thousands(credits as u64),
                                )
                            } else {
                                "Start on the Free plan. No card needed.".to_string()
                            };
                            view! {
                                <p class="muted" data-testid="free-credits">
                                    {text}
                                </p>
                            }
                        })
                }}
            </Suspense>
            <ActionForm action=action attr:class="form" attr:aria-label="Create your account">
                <FormError error=error />
                <CredentialFields
                    password_autocomplete="new-password"
                    password_hint="At least 10 characters."
                    error=error
                    next=Signal::derive(next)
                />
                <button type="submit" class="btn btn--primary btn--block">
                    "Create account"
                </button>
            </ActionForm>
            <p class="auth__switch">"Already have an account? " <a href=login_href>"Sign in"</a></p>
        </section>
    }
}
