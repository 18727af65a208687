//! The 404 page.

use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn NotFoundPage() -> impl IntoView {
    #[cfg(feature = "ssr")]
    if let Some(res) = use_context::<leptos_axum::ResponseOptions>() {
        res.set_status(http::StatusCode::NOT_FOUND);
    }
    view! {
        <Title text="Page not found" />
        <section class="panel narrow center">
            <p class="eyebrow">"404"</p>
            <h1>"We can't find that page"</h1>
            <p>"The link may be old, or the address mistyped."</p>
            <p>
                <a class="btn btn--primary" href="/">
                    "Go to the home page"
                </a>
            </p>
        </section>
    }
}
