//! `/settings/billing`: billing details (with the VAT or tax id checked against the country's
//! format), invoices from Polar with generate and download, and API keys.

use crate::api::auth::ChangePassword;
use crate::api::billing::{get_billing_settings, DeleteAccount, GenerateInvoice, SaveBillingDetails};
use crate::api::usage::{get_usage, SaveUsageSettings};
use crate::components::api_keys::{ApiKeysData, ApiKeysSection};
use crate::components::auth::SignInPrompt;
use crate::components::billing_details::BillingDetailsForm;
use crate::components::form::{Field, FormError};
use crate::components::invoices::InvoiceTable;
use crate::components::usage::UsageSettingsForm;
use crate::error::AppError;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

fn done_message(done: &str) -> Option<&'static str> {
    Some(match done {
        "saved" => "Billing details saved. New invoices carry them.",
        "saved-locally" => {
            "Billing details saved here. Our billing provider could not be reached; they are sent with your next save."
        }
        "invoice" => "Your invoice is being prepared. Reload in a moment to download it.",
        "password-changed" => "Your password was changed, and every other session was signed out.",
        "usage-saved" => "Usage settings saved. They apply from your next call.",
        _ => return None,
    })
}

#[component]
pub fn SettingsBillingPage() -> impl IntoView {
    let settings = Resource::new(|| (), |_| get_billing_settings());
    let api_keys = ApiKeysData::new();
    let save = ServerAction::<SaveBillingDetails>::new();
    let invoice = ServerAction::<GenerateInvoice>::new();
    let delete = ServerAction::<DeleteAccount>::new();
    let password = ServerAction::<ChangePassword>::new();
    let usage_save = ServerAction::<SaveUsageSettings>::new();
    let usage = Resource::new(|| (), |_| get_usage());
    let save_error = Signal::derive(move || save.value().get().and_then(|r| r.err()));
    let invoice_error = Signal::derive(move || invoice.value().get().and_then(|r| r.err()));
    let query = use_query_map();
    let done = move || query.read().get("done").and_then(|d| done_message(&d));
    view! {
        <Title text="Billing settings" />
        <section class="page-head">
            <h1>"Billing settings"</h1>
        </section>
        {move || {
            done()
                .map(|m| {
                    view! {
                        <div class="alert alert--success" role="status">
                            {m}
                        </div>
                    }
                })
        }}
        <Suspense fallback=|| {
            view! {
                <p class="loading" role="status">
                    "Loading your settings…"
                </p>
            }
        }>
            {move || {
                api_keys.track();
                let usage = usage.get();
                settings
                    .get()
                    .map(|res| match res {
                        Err(AppError::Unauthorized) => {
                            // Read every page-level resource here, so the server waits for all of them
                            // before it renders (an unread resource is never awaited).
                            view! {
                                <SignInPrompt message=AppError::Unauthorized.to_string() next="/settings/billing" />
                            }
                                .into_any()
                        }
                        Err(e) => {
                            view! {
                                <div class="alert alert--error" role="alert">
                                    {e.to_string()}
                                </div>
                            }
                                .into_any()
                        }
                        Ok(s) => {
                            view! {
                                <BillingDetailsForm
                                    details=s.details
                                    has_details=s.has_details
                                    account_email=s.account_email
                                    save=save
                                    error=save_error
                                />
                                <section class="panel" aria-labelledby="invoices-title">
                                    <h2 id="invoices-title">"Invoices"</h2>
                                    <FormError error=invoice_error />
                                    {match s.invoices {
                                        Err(message) => {
                                            view! {
                                                <div class="alert alert--info" role="status">
                                                    {format!("Invoices can't be listed right now: {message}")}
                                                </div>
                                            }
                                                .into_any()
                                        }
                                        Ok(rows) if rows.is_empty() => {
                                            view! {
                                                <p class="empty">
                                                    "No invoices yet. They appear here after your first purchase."
                                                </p>
                                            }
                                                .into_any()
                                        }
                                        Ok(rows) => view! { <InvoiceTable rows=rows invoice=invoice /> }.into_any(),
                                    }}
                                </section>
                                {match usage.clone() {
                                    Some(Ok(u)) => {
                                        view! { <UsageSettingsForm settings=u.settings save=usage_save /> }.into_any()
                                    }
                                    Some(Err(e)) => {
                                        view! {
                                            <div class="alert alert--error" role="alert">
                                                {format!("Usage settings are unavailable: {e}")}
                                            </div>
                                        }
                                            .into_any()
                                    }
                                    None => ().into_any(),
                                }}
                                <ApiKeysSection data=api_keys />
                                <PasswordSection change=password />
                                <DeleteAccountSection delete=delete />
                            }
                                .into_any()
                        }
                    })
            }}
        </Suspense>
    }
}

#[component]
fn PasswordSection(change: ServerAction<ChangePassword>) -> impl IntoView {
    let error = Signal::derive(move || change.value().get().and_then(|r| r.err()));
    view! {
        <section class="panel" aria-labelledby="password-title">
            <h2 id="password-title">"Password"</h2>
            <p class="muted">
                "Changing it signs out every other browser and device, and we mail you that it changed."
            </p>
            <ActionForm action=change attr:class="form" attr:aria-label="Change password">
                <FormError error=error />
                <Field
                    name="current_password"
                    label="Current password"
                    input_type="password"
                    autocomplete="current-password"
                    error=error
                />
                <Field
                    name="new_password"
                    label="New password"
                    input_type="password"
                    autocomplete="new-password"
                    hint="At least 10 characters."
                    error=error
                />
                <button type="submit" class="btn btn--primary">
                    "Change password"
                </button>
            </ActionForm>
        </section>
    }
}

#[component]
fn DeleteAccountSection(delete: ServerAction<DeleteAccount>) -> impl IntoView {
    let error = Signal::derive(move || delete.value().get().and_then(|r| r.err()));
    view! {
        <section class="panel panel--danger" aria-labelledby="delete-title">
            <h2 id="delete-title">"Delete account"</h2>
            <p>
                "Your subscription ends now (no refund for the rest of the period), your API keys stop working, and you are signed out. Invoices stay available from Polar by email. This cannot be undone."
            </p>
            <ActionForm action=delete attr:class="form" attr:aria-label="Delete account">
                <FormError error=error />
                <Field
                    name="confirm_email"
                    label="Type your email to confirm"
                    input_type="email"
                    autocomplete="off"
                    error=error
                />
                <button type="submit" class="btn btn--danger">
                    "Delete my account"
                </button>
            </ActionForm>
        </section>
    }
}
