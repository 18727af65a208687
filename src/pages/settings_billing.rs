//! `/settings/billing`: billing details (with the VAT or tax id checked against the country's
//! format), invoices from Polar with generate and download, and API keys.

use crate::api::billing::{get_billing_settings, BillingDetailsView, DeleteAccount, GenerateInvoice, InvoiceView, SaveBillingDetails};
use crate::components::api_keys::{ApiKeysData, ApiKeysSection};
use crate::components::form::FormError;
use crate::components::navigate::follow_redirects;
use crate::domain::countries::{COUNTRIES, EMBARGOED};
use crate::error::AppError;
use crate::pages::billing::SignInPrompt;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

fn done_message(done: &str) -> Option<&'static str> {
    Some(match done {
        "saved" => "Billing details saved. New invoices carry them.",
        "saved-locally" => "Billing details saved here. Our billing provider could not be reached; they are sent with your next save.",
        "invoice" => "Your invoice is being prepared. Reload in a moment to download it.",
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
    follow_redirects(move || delete.value().get());
    follow_redirects(move || save.value().get());
    follow_redirects(move || invoice.value().get());
    let save_error = Signal::derive(move || save.value().get().and_then(|r| r.err()));
    let invoice_error = Signal::derive(move || invoice.value().get().and_then(|r| r.err()));
    let query = use_query_map();
    let done = move || query.read().get("done").and_then(|d| done_message(&d));
    view! {
        <Title text="Billing settings" />
        <section class="page-head">
            <h1>"Billing settings"</h1>
        </section>
        {move || done().map(|m| view! { <div class="alert alert--success" role="status">{m}</div> })}
        <Suspense fallback=|| view! { <p class="loading" role="status">"Loading your settings…"</p> }>
            {move || {
                // Read every page-level resource here, so the server waits for all of them
                // before it renders (an unread resource is never awaited).
                api_keys.track();
                settings.get().map(|res| match res {
                    Err(AppError::Unauthorized) => view! { <SignInPrompt message=AppError::Unauthorized.to_string() next="/settings/billing" /> }.into_any(),
                    Err(e) => view! { <div class="alert alert--error" role="alert">{e.to_string()}</div> }.into_any(),
                    Ok(s) => view! {
                        <DetailsForm details=s.details has_details=s.has_details account_email=s.account_email save=save error=save_error />
                        <section class="panel" aria-labelledby="invoices-title">
                            <h2 id="invoices-title">"Invoices"</h2>
                            <FormError error=invoice_error />
                            {match s.invoices {
                                Err(message) => view! { <div class="alert alert--info" role="status">{format!("Invoices can't be listed right now: {message}")}</div> }.into_any(),
                                Ok(rows) if rows.is_empty() => view! { <p class="empty">"No invoices yet. They appear here after your first purchase."</p> }.into_any(),
                                Ok(rows) => view! { <InvoiceTable rows=rows invoice=invoice /> }.into_any(),
                            }}
                        </section>
                        <ApiKeysSection data=api_keys />
                        <DeleteAccountSection delete=delete />
                    }.into_any(),
                })
            }}
        </Suspense>
    }
}

#[component]
fn InvoiceTable(rows: Vec<InvoiceView>, invoice: ServerAction<GenerateInvoice>) -> impl IntoView {
    view! {
        <div class="table-wrap">
            <table class="table">
                <caption class="visually-hidden">"Your orders and their invoices"</caption>
                <thead><tr><th scope="col">"Date"</th><th scope="col">"Description"</th><th scope="col">"Amount"</th><th scope="col">"Status"</th><th scope="col">"Invoice"</th></tr></thead>
                <tbody>
                    {rows.into_iter().map(|r| {
                        let label = format!("{} invoice for {} on {}", "Generate", r.description, r.date);
                        let download = format!("Download invoice for {} on {}", r.description, r.date);
                        let cell = match r.invoice.as_str() {
                            "ready" => view! { <a class="btn btn--ghost btn--sm" href=format!("/billing/invoices/{}", r.order_id) aria-label=download>"Download"</a> }.into_any(),
                            "preparing" => view! { <span class="muted" data-testid="invoice-preparing">"Preparing… "<a href="/settings/billing#invoices-title">"Refresh"</a></span> }.into_any(),
                            "available" => view! {
                                <ActionForm action=invoice attr:class="inline-form">
                                    <input type="hidden" name="order_id" value=r.order_id.clone() />
                                    <button type="submit" class="btn btn--ghost btn--sm" aria-label=label disabled=move || invoice.pending().get()>"Generate"</button>
                                </ActionForm>
                            }.into_any(),
                            _ => view! { <span class="muted">"Not available"</span> }.into_any(),
                        };
                        view! {
                            <tr>
                                <td>{r.date}</td>
                                <td>{r.description}</td>
                                <td>{r.amount}</td>
                                <td>{r.status}</td>
                                <td>{cell}</td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
        </div>
    }
}

#[component]
fn DetailsForm(
    details: BillingDetailsView,
    has_details: bool,
    account_email: String,
    save: ServerAction<SaveBillingDetails>,
    error: Signal<Option<AppError>>,
) -> impl IntoView {
    let field_error = move |name: &'static str| move || error.get().filter(|e| e.field() == Some(name)).map(|e| e.to_string());
    let input = move |name: &'static str, label: &'static str, value: String, autocomplete: &'static str, hint: Option<&'static str>| {
        let id = format!("billing-{name}");
        let err_id = format!("{id}-error");
        let hint_id = format!("{id}-hint");
        let msg = field_error(name);
        let described = {
            let (err_id, hint_id) = (err_id.clone(), hint_id.clone());
            move || {
                let mut ids = vec![];
                if hint.is_some() {
                    ids.push(hint_id.clone());
                }
                if msg().is_some() {
                    ids.push(err_id.clone());
                }
                (!ids.is_empty()).then(|| ids.join(" "))
            }
        };
        view! {
            <div class="field" class:field--invalid=move || msg().is_some()>
                <label for=id.clone()>{label}</label>
                <input id=id name=name value=value autocomplete=autocomplete aria-invalid=move || msg().is_some().then_some("true") aria-describedby=described />
                {hint.map(|h| view! { <p class="field__hint" id=hint_id.clone()>{h}</p> })}
                {move || msg().map(|m| view! { <p class="field__error" id=err_id.clone()>{m}</p> })}
            </div>
        }
    };
    let country_msg = field_error("country");
    let selected = details.country.clone();
    view! {
        <section class="panel" aria-labelledby="details-title">
            <h2 id="details-title">"Billing details"</h2>
            <p class="muted">
                {if has_details { "These go on your invoices and are sent to Polar, our merchant of record.".to_string() } else { format!("No company, address or VAT id saved yet. Invoices go to {account_email}.") }}
            </p>
            {details.sync_notice.clone().map(|n| view! { <div class="alert alert--info" role="status">{n}</div> })}
            <ActionForm action=save attr:class="form" attr:aria-label="Billing details">
                <FormError error=error />
                {input("billing_email", "Billing email (optional)", details.billing_email.clone(), "email", Some("Where invoices go, if not your account email."))}
                {input("company", "Company or name on invoices", details.company.clone(), "organization", None)}
                {input("line1", "Address", details.line1.clone(), "address-line1", None)}
                {input("line2", "Address line 2 (optional)", details.line2.clone(), "address-line2", None)}
                <div class="field-row">
                    {input("postal_code", "Postal code", details.postal_code.clone(), "postal-code", None)}
                    {input("city", "City", details.city.clone(), "address-level2", None)}
                </div>
                {input("region", "State or region (optional)", details.region.clone(), "address-level1", None)}
                <div class="field" class:field--invalid=move || country_msg().is_some()>
                    <label for="billing-country">"Country"</label>
                    <select id="billing-country" name="country" autocomplete="country" required aria-invalid=move || country_msg().is_some().then_some("true")>
                        <option value="" selected=selected.is_empty()>"Choose a country"</option>
                        {COUNTRIES.iter().filter(|(c, _)| !EMBARGOED.contains(c)).map(|(code, name)| {
                            let is = *code == selected;
                            view! { <option value=*code selected=is>{*name}</option> }
                        }).collect_view()}
                    </select>
                    {move || country_msg().map(|m| view! { <p class="field__error">{m}</p> })}
                </div>
                {input("tax_id", "VAT or tax id (optional)", details.tax_id.clone(), "off", Some("Checked against your country's format, e.g. DE123456789 for Germany."))}
                <button type="submit" class="btn btn--primary" disabled=move || save.pending().get()>
                    {move || if save.pending().get() { "Saving…" } else { "Save billing details" }}
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
            <p>"Your subscription ends now (no refund for the rest of the period), your API keys stop working, and you are signed out. Invoices stay available from Polar by email. This cannot be undone."</p>
            <ActionForm action=delete attr:class="form" attr:aria-label="Delete account">
                <FormError error=error />
                <crate::components::form::Field name="confirm_email" label="Type your email to confirm" input_type="email" autocomplete="off" error=error />
                <button type="submit" class="btn btn--danger" disabled=move || delete.pending().get()>"Delete my account"</button>
            </ActionForm>
        </section>
    }
}
