//! The customer's address and the mail sent to them, on the operator's customer page, with a
//! form to send the address confirmation again (with a reason, audited) while it is unconfirmed.

use super::events::{FormContext, ReasonFields};
use super::{Table, TextRow};
use crate::api::admin::{AdminResendVerification, MailLine};
use crate::components::form::FormError;
use crate::error::AppError;
use leptos::prelude::*;

#[component]
pub fn MailSection(
    email: String,
    confirmed: Option<String>,
    mail: Vec<MailLine>,
    resend: ServerAction<AdminResendVerification>,
    error: Signal<Option<AppError>>,
    ctx: FormContext,
) -> impl IntoView {
    let state = match &confirmed {
        Some(at) => format!("{email}: confirmed {at}."),
        None => format!("{email}: not confirmed yet (no free credits until it is)."),
    };
    let form = confirmed.is_none().then(|| {
        view! {
            <ActionForm action=resend attr:class="inline-form">
                <ReasonFields
                    ctx=ctx
                    input_id="resend-reason".into()
                    label="Reason for sending the confirmation again".into()
                    button="Send the confirmation again".into()
                />
            </ActionForm>
        }
    });
    let list = if mail.is_empty() {
        view! { <p class="muted">"No mail sent to this customer."</p> }.into_any()
    } else {
        view! {
            <Table headers=&[
                "Queued",
                "Subject",
                "Status",
            ]>
                {mail
                    .into_iter()
                    .map(|m| {
                        view! { <TextRow cells=vec![m.when, m.subject, m.status] /> }
                    })
                    .collect_view()}
            </Table>
        }
        .into_any()
    };
    view! {
        <section class="panel" aria-labelledby="mail-title">
            <h2 id="mail-title">"Email"</h2>
            <p>{state}</p>
            <FormError error=error />
            {form}
            {list}
        </section>
    }
}
