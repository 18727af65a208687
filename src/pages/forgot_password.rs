//! `/forgot-password`: ask for a password reset link. The answer is the same whether or not
//! the address has an account.

use crate::api::auth::RequestPasswordReset;
use crate::components::form::{Field, FormError};
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

#[component]
pub fn ForgotPasswordPage() -> impl IntoView {
    let action = ServerAction::<RequestPasswordReset>::new();
    let error = Signal::derive(move || action.value().get().and_then(|r| r.err()));
    let query = use_query_map();
    let sent = move || query.read().get("sent").is_some() || action.value().get().is_some_and(|r| r.is_ok());
    view! {
        <Title text="Reset your password" />
        <section class="panel narrow auth">
            <h1>"Reset your password"</h1>
            {move || {
                if sent() {
                    view! {
                        <div class="alert alert--success" role="status">
                            "If an account exists for that address, we've sent it a link to choose a new password. The link works once and expires in one hour."
                        </div>
                        <p class="auth__switch">
                            <a href="/login">"Back to sign in"</a>
                        </p>
                    }
                        .into_any()
                } else {
                    view! {
                        <p class="muted">
                            "Enter the email address of your account and we'll send you a link to choose a new password."
                        </p>
                        <ActionForm action=action attr:class="form" attr:aria-label="Reset your password">
                            <FormError error=error />
                            <Field name="email" label="Email" input_type="email" autocomplete="email" error=error />
                            <button type="submit" class="btn btn--primary btn--block">
                                "Send me a reset link"
                            </button>
                        </ActionForm>
                        <p class="auth__switch">"Remembered it? " <a href="/login">"Sign in"</a></p>
                    }
                        .into_any()
                }
            }}
        </section>
    }
}
