//! The site header (navigation and who is signed in) and footer.

use crate::api::auth::{get_current_user, LogOut};
use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::use_location;

#[component]
pub fn SiteHeader() -> impl IntoView {
    let logout = ServerAction::<LogOut>::new();
    let location = use_location();
    // Re-read the session on every navigation and after sign-out, so the header never shows
    // a stale user after signing in or out.
    let user = Resource::new(move || (location.pathname.get(), logout.version().get()), |_| get_current_user());

    view! {
        <header class="site-header">
            <div class="site-header__inner">
                <a class="brand" href="/" aria-label="Tally home">
                    <span class="brand__mark" aria-hidden="true">
                        "T"
                    </span>
                    <span class="brand__name">"Tally"</span>
                </a>
                <nav class="site-nav" aria-label="Main">
                    <A href="/pricing">"Pricing"</A>
                    <A href="/billing" exact=true>
                        "Billing"
                    </A>
                    <A href="/settings/billing">"Settings"</A>
                </nav>
                <div class="site-header__account">
                    <Transition fallback=|| {
                        view! { <span class="muted">"…"</span> }
                    }>
                        {move || {
                            user.get()
                                .map(|res| match res {
                                    Ok(Some(u)) => {
                                        view! {
                                            <span class="account-email" data-testid="signed-in-user" title="Signed in">
                                                {u.email}
                                            </span>
                                            <ActionForm action=logout attr:class="inline-form">
                                                <button type="submit" class="btn btn--ghost">
                                                    "Sign out"
                                                </button>
                                            </ActionForm>
                                        }
                                            .into_any()
                                    }
                                    _ => {
                                        view! {
                                            <a class="btn btn--ghost" href="/login">
                                                "Sign in"
                                            </a>
                                            <a class="btn btn--primary" href="/signup">
                                                "Sign up"
                                            </a>
                                        }
                                            .into_any()
                                    }
                                })
                        }}
                    </Transition>
                </div>
            </div>
        </header>
    }
}

#[component]
pub fn SiteFooter() -> impl IntoView {
    view! {
        <footer class="site-footer">
            <p>"Tally — billing on Polar, open source. Payments are processed by Polar, the merchant of record."</p>
        </footer>
    }
}
