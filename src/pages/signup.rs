//! `/signup`: create an account.

use crate::api::auth::{get_signup_info, SignUp};
use crate::components::form::{Field, FormError};
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
    let login_href = move || {
        let n = next();
        if n.is_empty() {
            "/login".to_string()
        } else {
            format!("/login?next={}", urlencode(&n))
        }
    };
    let info = Resource::new(|| (), |_| get_signup_info());
    view! {
        <Title text="Create your account" />
        <section class="panel narrow auth">
            <h1>"Create your account"</h1>
            <Suspense fallback=|| view! { <p class="muted">"Start on the Free plan. No card needed."</p> }>
                {move || info.get().map(|i| {
                    let credits = i.map(|i| i.free_credits).unwrap_or(0);
                    let text = if credits > 0 {
                        format!("Start on the Free plan. No card needed: {} free credits once you confirm your email address.", group_thousands(credits as u64))
                    } else {
                        "Start on the Free plan. No card needed.".to_string()
                    };
                    view! { <p class="muted" data-testid="free-credits">{text}</p> }
                })}
            </Suspense>
            <ActionForm action=action attr:class="form" attr:aria-label="Create your account">
                <FormError error=error />
                <Field name="email" label="Email" input_type="email" autocomplete="email" error=error />
                <Field name="password" label="Password" input_type="password" autocomplete="new-password" hint="At least 10 characters." error=error />
                <input type="hidden" name="next" value=next />
                <button type="submit" class="btn btn--primary btn--block" disabled=move || action.pending().get()>
                    {move || if action.pending().get() { "Creating your account…" } else { "Create account" }}
                </button>
            </ActionForm>
            <p class="auth__switch">"Already have an account? " <a href=login_href>"Sign in"</a></p>
        </section>
    }
}

/// Percent-encodes a query value (for carrying `next` between the two auth pages).
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
