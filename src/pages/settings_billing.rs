//! `/settings/billing`: billing details, invoices and API keys.

use crate::api::account::get_account;
use crate::components::api_keys::{ApiKeysData, ApiKeysSection};
use crate::pages::billing::SignInPrompt;
use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn SettingsBillingPage() -> impl IntoView {
    let account = Resource::new(|| (), |_| get_account("/settings/billing".into()));
    let api_keys = ApiKeysData::new();
    view! {
        <Title text="Billing settings" />
        <section class="page-head">
            <h1>"Billing settings"</h1>
        </section>
        <Suspense fallback=|| view! { <p class="loading" role="status">"Loading your settings…"</p> }>
            {move || {
                // Read every page-level resource here, so the server waits for all of them
                // before it renders (an unread resource is never awaited).
                api_keys.track();
                account.get().map(|res| match res {
                Err(e) => view! { <SignInPrompt message=e.to_string() next="/settings/billing" /> }.into_any(),
                Ok(a) => view! {
                    <section class="panel" aria-labelledby="details-title">
                        <h2 id="details-title">"Billing details"</h2>
                        <p class="muted">{format!("Invoices go to {}.", a.email)}</p>
                        <p class="empty">"No company, address or VAT id saved yet."</p>
                    </section>
                    <section class="panel" aria-labelledby="invoices-title">
                        <h2 id="invoices-title">"Invoices"</h2>
                        <p class="empty">"No invoices yet. They appear here after your first purchase."</p>
                    </section>
                    <ApiKeysSection data=api_keys />
                }.into_any(),
            })
            }}
        </Suspense>
    }
}
