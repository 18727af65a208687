//! `/reset-password?token=…`: choose a new password through a reset link. The form is shown
//! only while the link works; using it ends every session and signs this browser in.

use crate::api::auth::{check_reset_link, ResetPassword};
use crate::components::form::{Field, FormError};
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

#[component]
pub fn ResetPasswordPage() -> impl IntoView {
    let action = ServerAction::<ResetPassword>::new();
    let error = Signal::derive(move || action.value().get().and_then(|r| r.err()));
    let query = use_query_map();
    let token = move || query.read().get("token").unwrap_or_default();
    let usable = Resource::new(token, |t| async move {
        if t.is_empty() {
            Ok(false)
        } else {
            check_reset_link(t).await
        }
    });
    let expired = || {
        view! {
            <div class="alert alert--error" role="alert">
                "This reset link is not valid any more: it was used, or more than an hour has passed."
            </div>
            <p>
                <a class="btn btn--primary" href="/forgot-password">
                    "Ask for a new link"
                </a>
            </p>
        }
    };
    view! {
        <Title text="Choose a new password" />
        <section class="panel narrow auth">
            <h1>"Choose a new password"</h1>
            <Suspense fallback=|| {
                view! {
                    <p class="loading" role="status">
                        "Checking your link…"
                    </p>
                }
            }>
                {move || {
                    usable
                        .get()
                        .map(|ok| match ok {
                            Ok(true) => {
                                view! {
                                    <ActionForm action=action attr:class="form" attr:aria-label="Choose a new password">
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
                                        <Field
                                            name="password"
                                            label="New password"
                                            input_type="password"
                                            autocomplete="new-password"
                                            hint="At least 10 characters."
                                            error=error
                                        />
                                        <input type="hidden" name="token" value=token />
                                        <button type="submit" class="btn btn--primary btn--block">
                                            "Save and sign in"
                                        </button>
                                    </ActionForm>
                                }
                                    .into_any()
                            }
                            Ok(false) => expired().into_any(),
                            Err(e) => {
                                view! {
                                    <div class="alert alert--error" role="alert">
                                        {e.to_string()}
                                    </div>
                                }
                                    .into_any()
                            }
                        })
                }}
            </Suspense>
        </section>
    }
}
