//! The document shell, the root component and the routes.
//!
//! Every page is rendered on the server and works as plain HTML (forms post, links navigate).
//! Only the `#[island]` components hydrate in the browser, and only a page that renders one
//! loads the wasm (it renders [`IslandScripts`](crate::components::islands::IslandScripts)).

use crate::components::layout::{SiteFooter, SiteHeader};
use crate::pages::{
    admin::{AdminAuditPage, AdminCustomerPage, AdminHealthPage, AdminPage},
    billing::BillingPage,
    change_plan::ChangePlanPage,
    checkout_success::CheckoutSuccessPage,
    forgot_password::ForgotPasswordPage,
    home::HomePage,
    login::LoginPage,
    not_found::NotFoundPage,
    pricing::PricingPage,
    reset_password::ResetPasswordPage,
    settings_billing::SettingsBillingPage,
    signup::SignupPage,
    verify_email::VerifyEmailPage,
};
use leptos::prelude::*;
use leptos_meta::{provide_meta_context, Link, Meta, Title};
use leptos_router::{
    components::{Route, Router, Routes},
    path, SsrMode,
};

/// The HTML document the server renders around [`App`].
#[cfg(feature = "ssr")]
pub fn shell(options: LeptosOptions) -> impl IntoView {
    use crate::components::local_time::LocalTimes;
    use leptos_meta::MetaTags;
    // The page's Content-Security-Policy, with this response's nonce.
    crate::server::security_headers::set_page_policy();
    // Islands: nothing outside an `#[island]` is hydrated, so nothing outside one carries
    // hydration markers or serialized resources.
    if let Some(context) = Owner::current_shared_context() {
        context.set_is_hydrating(false);
    }
    let stylesheet = crate::server::assets::stylesheet_href(&options);
    // For the pages with islands, which load the wasm (`components::islands::IslandScripts`).
    provide_context(options.clone());
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <AutoReload options />
                <link rel="stylesheet" id="leptos" href=stylesheet />
                <MetaTags />
            </head>
            <body>
                <App />
                <LocalTimes />
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();

    // Every route renders fully on the server before the first byte is sent (SsrMode::Async):
    // pages must be complete with JavaScript off, so nothing may wait on streamed scripts.
    let ssr = SsrMode::Async;
    view! {
        <Link rel="icon" type_="image/svg+xml" href="/favicon.svg" />
        <Meta
            name="description"
            content="Tally: plans, checkout, credits and invoices for SaaS teams that sell through Polar."
        />
        <Title formatter=|text: String| {
            if text.is_empty() { "Tally".to_string() } else { format!("{text} · Tally") }
        } />
        <Router>
            <a class="skip-link" href="#main">
                "Skip to content"
            </a>
            <SiteHeader />
            <main id="main" tabindex="-1">
                <ErrorBoundary fallback=|errors| {
                    view! {
                        <section class="panel error-panel" role="alert">
                            <h1>"Something went wrong"</h1>
                            <ul>
                                {move || {
                                    errors
                                        .get()
                                        .into_iter()
                                        .map(|(_, e)| view! { <li>{e.to_string()}</li> })
                                        .collect_view()
                                }}
                            </ul>
                            <p>
                                <a href="/">"Back to the home page"</a>
                            </p>
                        </section>
                    }
                }>
                    <Routes fallback=NotFoundPage>
                        <Route path=path!("/") view=HomePage ssr=ssr.clone() />
                        <Route path=path!("/pricing") view=PricingPage ssr=ssr.clone() />
                        <Route path=path!("/billing") view=BillingPage ssr=ssr.clone() />
                        <Route path=path!("/billing/success") view=CheckoutSuccessPage ssr=ssr.clone() />
                        <Route path=path!("/billing/change") view=ChangePlanPage ssr=ssr.clone() />
                        <Route path=path!("/settings/billing") view=SettingsBillingPage ssr=ssr.clone() />
                        <Route path=path!("/signup") view=SignupPage ssr=ssr.clone() />
                        <Route path=path!("/login") view=LoginPage ssr=ssr.clone() />
                        <Route path=path!("/forgot-password") view=ForgotPasswordPage ssr=ssr.clone() />
                        <Route path=path!("/reset-password") view=ResetPasswordPage ssr=ssr.clone() />
                        <Route path=path!("/verify-email") view=VerifyEmailPage ssr=ssr.clone() />
                        <Route path=path!("/admin") view=AdminPage ssr=ssr.clone() />
                        <Route path=path!("/admin/audit") view=AdminAuditPage ssr=ssr.clone() />
                        <Route path=path!("/admin/health") view=AdminHealthPage ssr=ssr.clone() />
                        <Route path=path!("/admin/customers/:id") view=AdminCustomerPage ssr=ssr.clone() />
                    </Routes>
                </ErrorBoundary>
            </main>
            <SiteFooter />
        </Router>
    }
}
