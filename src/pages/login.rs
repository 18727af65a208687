//! `/login`: sign in.

use crate::api::auth::LogIn;
use crate::components::auth::{with_next, CredentialFields};
use crate::components::form::FormError;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

#[component]
pub fn LoginPage() -> impl IntoView {
    let action = ServerAction::<LogIn>::new();
    let error = Signal::derive(move || action.value().get().and_then(|r| r.err()));
    let query = use_query_map();
    let next = move || query.read().get("next").unwrap_or_default();
    let signup_href = move || with_next("/signup", &next());
    view! {
        <Title text="Sign in" />
        <section class="panel narrow auth">
            <h1>"Sign in"</h1>
            {move || (!next().is_empty()).then(|| view! { <p class="alert alert--info">"Sign in to continue."</p> })}
            {move || {
                (query.read().get("done").is_some_and(|d| d.starts_with("email-confirmed")))
                    .then(|| {
                        view! {
                            <p class="alert alert--success" role="status">
                                "Your email address is confirmed. Sign in to see your credits."
                            </p>
                        }
                    })
            }}
            <ActionForm action=action attr:class="form" attr:aria-label="Sign in">
                <FormError error=error />
                <CredentialFields password_autocomplete="current-password" error=error next=Signal::derive(next) />
                <button type="submit" class="btn btn--primary btn--block">
                    "Sign in"
                </button>
            </ActionForm>
            <p class="auth__switch">
                <a href="/forgot-password">"Forgot your password?"</a>
            </p>
            <p class="auth__switch">"New to Tally? " <a href=signup_href>"Create an account"</a></p>
        </section>
    }
}
