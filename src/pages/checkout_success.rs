//! `/billing/success?checkout_id=…`: where Polar returns after checkout.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

#[component]
pub fn CheckoutSuccessPage() -> impl IntoView {
    let query = use_query_map();
    let checkout_id = move || query.read().get("checkout_id").filter(|s| !s.is_empty());
    view! {
        <Title text="Confirming your purchase" />
        <section class="panel narrow center">
            {move || match checkout_id() {
                Some(_) => view! {
                    <h1>"Confirming your purchase"</h1>
                    <p role="status">"We're waiting for Polar to confirm your payment. This page updates when your access is ready."</p>
                    <p><a class="btn btn--ghost" href="/billing">"Go to billing"</a></p>
                }.into_any(),
                None => view! {
                    <h1>"No purchase to confirm"</h1>
                    <p>"This page is where you land after paying. Start from the pricing page to choose a plan."</p>
                    <p><a class="btn btn--primary" href="/pricing">"See pricing"</a></p>
                }.into_any(),
            }}
        </section>
    }
}
