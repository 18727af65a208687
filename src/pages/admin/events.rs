//! A customer's webhook events and waiting usage events on the operator's customer page, each
//! parked one with a form to put it back in its queue (with a reason, audited).

use super::Table;
use crate::api::admin::{AdminRetryUsage, AdminRetryWebhook, UsageLine, WebhookLine};
use crate::components::form::FormError;
use crate::error::AppError;
use leptos::prelude::*;

/// What every retry form carries besides its target.
#[derive(Clone)]
pub struct FormContext {
    pub customer: String,
    pub form_key: String,
}

#[component]
pub fn WebhookEvents(
    events: Vec<WebhookLine>,
    retry: ServerAction<AdminRetryWebhook>,
    error: Signal<Option<AppError>>,
    ctx: FormContext,
) -> impl IntoView {
    let body = if events.is_empty() {
        view! { <p class="muted">"No webhook events about this customer."</p> }.into_any()
    } else {
        view! {
            <Table headers=&[
                "Received",
                "Event",
                "Status",
                "Last error",
            ]>
                {events
                    .into_iter()
                    .map(|e| {
                        let (ctx, id) = (ctx.clone(), e.id.clone());
                        let form = e
                            .retryable
                            .then(move || {
                                let label = format!("Reason for retrying {id}");
                                view! {
                                    <ActionForm action=retry attr:class="inline-form">
                                        <ReasonFields
                                            ctx=ctx.clone()
                                            input_id=format!("retry-webhook_id-{id}")
                                            target=("webhook_id", id)
                                            label=label
                                            button="Retry".into()
                                        />
                                    </ActionForm>
                                }
                            });
                        view! {
                            <tr>
                                <td>{e.received}</td>
                                <td>{e.kind} <br /> <span class="muted">{e.id.clone()}</span></td>
                                <td>{format!("{} · {} attempt(s)", e.status, e.attempts)} {form}</td>
                                <td>{e.error.unwrap_or_default()}</td>
                            </tr>
                        }
                    })
                    .collect_view()}
            </Table>
        }
        .into_any()
    };
    view! {
        <section class="panel" aria-labelledby="webhooks-title">
            <h2 id="webhooks-title">"Webhook events"</h2>
            <FormError error=error />
            {body}
        </section>
    }
}

#[component]
pub fn UsageEvents(
    events: Vec<UsageLine>,
    retry: ServerAction<AdminRetryUsage>,
    error: Signal<Option<AppError>>,
    ctx: FormContext,
) -> impl IntoView {
    let body = if events.is_empty() {
        view! { <p class="muted">"Nothing waiting: every usage event of this customer has reached Polar."</p> }
            .into_any()
    } else {
        view! {
            <Table headers=&[
                "Occurred",
                "Event",
                "Units",
                "Status",
                "Last error",
            ]>
                {events
                    .into_iter()
                    .map(|u| {
                        let ctx = ctx.clone();
                        let form = (u.status == "parked")
                            .then(|| {
                                let label = format!("Reason for sending {} again", u.external_id);
                                view! {
                                    <ActionForm action=retry attr:class="inline-form">
                                        <ReasonFields
                                            ctx=ctx.clone()
                                            input_id=format!("retry-event-{}", u.id)
                                            target=("event", u.id.to_string())
                                            label=label
                                            button="Retry".into()
                                        />
                                    </ActionForm>
                                }
                            });
                        view! {
                            <tr>
                                <td>{u.occurred}</td>
                                <td>{u.event} <br /> <span class="muted">{u.external_id.clone()}</span></td>
                                <td>{u.units}</td>
                                <td>{format!("{} · {} attempt(s)", u.status, u.attempts)} {form}</td>
                                <td>{u.error.unwrap_or_default()}</td>
                            </tr>
                        }
                    })
                    .collect_view()}
            </Table>
        }
        .into_any()
    };
    view! {
        <section class="panel" aria-labelledby="usage-title">
            <h2 id="usage-title">"Usage events not sent yet"</h2>
            <p class="muted">"Queued or parked; sent events are on Polar's meter."</p>
            <FormError error=error />
            {body}
        </section>
    }
}

/// The fields every audited console form ends with: the customer and the form's key (hidden),
/// the hidden field naming what it acts on if any, a required reason with its label, and the
/// submit button.
#[component]
pub fn ReasonFields(
    ctx: FormContext,
    #[prop(optional)] target: Option<(&'static str, String)>,
    input_id: String,
    label: String,
    button: String,
) -> impl IntoView {
    view! {
        <input type="hidden" name="customer" value=ctx.customer />
        {target.map(|(field, value)| view! { <input type="hidden" name=field value=value /> })}
        <input type="hidden" name="form_key" value=ctx.form_key />
        <label for=input_id.clone()>{label}</label>
        <input id=input_id name="reason" required=true />
        <button type="submit" class="btn btn--ghost btn--sm">
            {button}
        </button>
    }
}
