//! `/`: what Tally is.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

#[component]
pub fn HomePage() -> impl IntoView {
    let query = use_query_map();
    let deleted = move || query.read().get("done").as_deref() == Some("account-deleted");
    view! {
        <Title text="" />
        {move || {
            deleted()
                .then(|| {
                    view! {
                        <div class="alert alert--success" role="status">
                            "Your account was deleted and your subscription ended. Thank you for having been with us."
                        </div>
                    }
                })
        }}
        <section class="hero">
            <p class="eyebrow">"Billing for SaaS teams on Polar"</p>
            <h1>"Plans, checkout, credits and invoices that add up."</h1>
            <p class="lead">
                "Tally gives your customers a pricing page, a checkout that knows when access is real, "
                "a billing page with a credit meter, and invoices with their VAT id. "
                "Polar is the merchant of record; Tally keeps a credit ledger that never double-credits or overspends."
            </p>
            <div class="hero__actions">
                <a class="btn btn--primary btn--lg" href="/pricing">
                    "See pricing"
                </a>
                <a class="btn btn--ghost btn--lg" href="/signup">
                    "Create a free account"
                </a>
            </div>
        </section>
        <section class="features" aria-labelledby="features-title">
            <h2 id="features-title" class="visually-hidden">
                "What you get"
            </h2>
            <article class="feature">
                <h3>"Access from Polar's truth"</h3>
                <p>
                    "Access follows the benefits Polar has granted, checked on the server. The browser never decides."
                </p>
            </article>
            <article class="feature">
                <h3>"A ledger that adds up"</h3>
                <p>
                    "Every credit is an append-only entry with an idempotency key. Retries and races change nothing twice."
                </p>
            </article>
            <article class="feature">
                <h3>"Webhooks done right"</h3>
                <p>
                    "Verified, stored and acknowledged in milliseconds, then processed once, in any order Polar sends them."
                </p>
            </article>
        </section>
    }
}
