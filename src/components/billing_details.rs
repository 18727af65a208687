//! The billing-details form: what goes on invoices (company, address, country, VAT or tax
//! id), with each field's error from the server next to it.

use crate::api::billing::{BillingDetailsView, SaveBillingDetails};
use crate::components::form::{Field, FormError};
use crate::domain::countries::{COUNTRIES, EMBARGOED};
use crate::error::AppError;
use leptos::prelude::*;

#[component]
pub fn BillingDetailsForm(
    details: BillingDetailsView,
    has_details: bool,
    account_email: String,
    save: ServerAction<SaveBillingDetails>,
    error: Signal<Option<AppError>>,
) -> impl IntoView {
    let country_msg = move || error.get().filter(|e| e.field() == Some("country")).map(|e| e.to_string());
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
                <Field name="billing_email" label="Billing email (optional)" input_type="email" autocomplete="email" hint="Where invoices go, if not your account email." required=false value=details.billing_email.clone() error=error />
                <Field name="company" label="Company or name on invoices" autocomplete="organization" required=false value=details.company.clone() error=error />
                <Field name="line1" label="Address" autocomplete="address-line1" required=false value=details.line1.clone() error=error />
                <Field name="line2" label="Address line 2 (optional)" autocomplete="address-line2" required=false value=details.line2.clone() error=error />
                <div class="field-row">
                    <Field name="postal_code" label="Postal code" autocomplete="postal-code" required=false value=details.postal_code.clone() error=error />
                    <Field name="city" label="City" autocomplete="address-level2" required=false value=details.city.clone() error=error />
                </div>
                <Field name="region" label="State or region (optional)" autocomplete="address-level1" required=false value=details.region.clone() error=error />
                <div class="field" class:field--invalid=move || country_msg().is_some()>
                    <label for="field-country">"Country"</label>
                    <select id="field-country" name="country" autocomplete="country" required aria-invalid=move || country_msg().is_some().then_some("true")>
                        <option value="" selected=selected.is_empty()>"Choose a country"</option>
                        {COUNTRIES.iter().filter(|(c, _)| !EMBARGOED.contains(c)).map(|(code, name)| {
                            let is = *code == selected;
                            view! { <option value=*code selected=is>{*name}</option> }
                        }).collect_view()}
                    </select>
                    {move || country_msg().map(|m| view! { <p class="field__error">{m}</p> })}
                </div>
                <Field name="tax_id" label="VAT or tax id (optional)" autocomplete="off" hint="Checked against your country's format, e.g. DE123456789 for Germany." required=false value=details.tax_id.clone() error=error />
                <button type="submit" class="btn btn--primary">
                    "Save billing details"
                </button>
            </ActionForm>
        </section>
    }
}
