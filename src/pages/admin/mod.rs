//! The operator console: `/admin` finds a customer, `/admin/customers/:id` shows their money
//! and lets an operator grant or take credits with a reason (recorded in the audit log). For
//! anyone who is not an operator, both are the 404 page. Plain forms: they work the same with
//! JavaScript off.

mod audit;
mod billing;
mod events;
mod health;
mod ledger;
mod mail;

use crate::api::admin::{
    admin_customer, admin_search, AdminAdjust, AdminResendVerification, AdminResync, AdminRetryUsage,
    AdminRetryWebhook, AdminRevokeKey, CustomerView, FRESH_SIGN_IN_MINUTES,
};
use crate::components::form::{Field, FormError};
use crate::domain::money::group_thousands;
use crate::error::AppError;
use crate::pages::not_found::NotFoundPage;
pub use audit::AdminAuditPage;
use billing::BillingSection;
use events::{FormContext, ReasonFields, UsageEvents, WebhookEvents};
pub use health::AdminHealthPage;
use ledger::LedgerSection;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::{use_params_map, use_query_map};
use mail::MailSection;

/// What a console page shows while its data comes.
fn loading() -> impl IntoView {
    view! {
        <p class="loading" role="status">
            "Loading…"
        </p>
    }
}

/// A console table: its column headers, and its rows as `children`.
#[component]
fn Table(headers: &'static [&'static str], children: Children) -> impl IntoView {
    view! {
        <table class="table">
            <thead>
                <tr>{headers.iter().map(|h| view! { <th scope="col">{*h}</th> }).collect_view()}</tr>
            </thead>
            <tbody>{children()}</tbody>
        </table>
    }
}

/// A table row of plain text cells.
#[component]
fn TextRow(cells: Vec<String>) -> impl IntoView {
    view! { <tr>{cells.into_iter().map(|c| view! { <td>{c}</td> }).collect_view()}</tr> }
}

/// A filter's labelled choice: "Any" (the empty value) or one of `choices`, shown with spaces
/// for underscores; `chosen` is selected.
#[component]
fn ChoiceSelect(
    id: &'static str,
    name: &'static str,
    label: &'static str,
    choices: Vec<String>,
    chosen: String,
) -> impl IntoView {
    view! {
        <label for=id>{label}</label>
        <select id=id name=name>
            <option value="" selected=chosen.is_empty()>
                "Any"
            </option>
            {choices
                .into_iter()
                .map(|c| {
                    let selected = c == chosen;
                    let text = c.replace('_', " ");
                    view! {
                        <option value=c selected=selected>
                            {text}
                        </option>
                    }
                })
                .collect_view()}
        </select>
    }
}

/// What a console page shows once its data came: the 404 page for anyone but an operator (as
/// if the console did not exist), the error, or `page`.
fn console<T>(result: Result<T, AppError>, page: impl FnOnce(T) -> AnyView) -> AnyView {
    match result {
        Err(AppError::NotFound) => view! { <NotFoundPage /> }.into_any(),
        Err(e) => view! {
            <div class="alert alert--error" role="alert">
                {e.to_string()}
            </div>
        }
        .into_any(),
        Ok(data) => page(data),
    }
}

#[component]
pub fn AdminPage() -> impl IntoView {
    let query = use_query_map();
    let q = move || query.read().get("q").unwrap_or_default();
    let found = Resource::new(q, admin_search);
    view! {
        <Suspense fallback=loading>
            {move || {
                found
                    .get()
                    .map(|res| console(
                        res,
                        |found| {
                            let q = q();
                            view! {
                                <Title text="Operator console" />
                                <section class="page-head">
                                    <h1>"Operator console"</h1>
                                    <p class="lead">
                                        "Find a customer by email, Tally user id, Polar customer id or an API key's visible prefix."
                                    </p>
                                    <p>
                                        <a href="/admin/audit">"Audit log: every operator action"</a>
                                        " · "
                                        <a href="/admin/health">"Health: queues, webhook deliveries, Polar"</a>
                                    </p>
                                </section>
                                <form method="get" action="/admin" class="panel inline-form" role="search">
                                    <label for="admin-q">"Customer"</label>
                                    <input id="admin-q" name="q" type="search" value=q.clone() required=true />
                                    <button type="submit" class="btn btn--primary">
                                        "Find"
                                    </button>
                                </form>
                                <FoundList found=found searched=!q.trim().is_empty() />
                            }
                                .into_any()
                        },
                    ))
            }}
        </Suspense>
    }
}

#[component]
fn FoundList(found: Vec<crate::api::admin::FoundView>, searched: bool) -> impl IntoView {
    if !searched {
        return ().into_any();
    }
    if found.is_empty() {
        return view! { <p class="muted">"No customer matches."</p> }.into_any();
    }
    view! {
        <Table headers=&[
            "Email",
            "Since",
            "Polar customer",
        ]>
            {found
                .into_iter()
                .map(|f| {
                    view! {
                        <tr>
                            <td>
                                <a href=format!("/admin/customers/{}", f.id)>{f.email}</a>
                            </td>
                            <td>{f.created}</td>
                            <td>{f.polar_customer_id.unwrap_or_else(|| "—".into())}</td>
                        </tr>
                    }
                })
                .collect_view()}
        </Table>
    }
    .into_any()
}

#[component]
pub fn AdminCustomerPage() -> impl IntoView {
    let params = use_params_map();
    let query = use_query_map();
    // `?polar=1`: Polar's Customer State is read now too (the page's "Ask Polar now" link).
    let key = move || {
        let q = query.read();
        let id = params.read().get("id").unwrap_or_default();
        (id, q.get("polar"), q.get("kind"), q.get("from"), q.get("until"), q.get("before"))
    };
    let customer = Resource::new(key, |(id, polar, kind, from, until, before)| {
        admin_customer(id, polar, kind, from, until, before)
    });
    let adjust = ServerAction::<AdminAdjust>::new();
    let revoke = ServerAction::<AdminRevokeKey>::new();
    let error = Signal::derive(move || adjust.value().get().and_then(|r| r.err()));
    let revoke_error = Signal::derive(move || revoke.value().get().and_then(|r| r.err()));
    let actions = Actions {
        retry_webhook: ServerAction::<AdminRetryWebhook>::new(),
        retry_usage: ServerAction::<AdminRetryUsage>::new(),
        resend: ServerAction::<AdminResendVerification>::new(),
        resync: ServerAction::<AdminResync>::new(),
    };
    let done = move || query.read().get("done").filter(|d| DONE.contains(&d.as_str()));
    view! {
        <Suspense fallback=loading>
            {move || {
                customer
                    .get()
                    .map(|res| console(
                        res,
                        |c| {
                            view! {
                                <Customer
                                    c=c
                                    adjust=adjust
                                    error=error
                                    revoke=revoke
                                    revoke_error=revoke_error
                                    actions=actions
                                    done=done()
                                />
                            }
                                .into_any()
                        },
                    ))
            }}
        </Suspense>
    }
}

/// What an action said when it led back to the page (`?done=`): applied now, or `already`
/// (the form had been sent before, nothing changed).
const DONE: [&str; 6] = ["adjusted", "revoked", "requeued", "resent", "resynced", "already"];

/// The customer page's retry actions.
#[derive(Clone, Copy)]
struct Actions {
    retry_webhook: ServerAction<AdminRetryWebhook>,
    retry_usage: ServerAction<AdminRetryUsage>,
    resend: ServerAction<AdminResendVerification>,
    resync: ServerAction<AdminResync>,
}

#[component]
fn Customer(
    c: CustomerView,
    adjust: ServerAction<AdminAdjust>,
    error: Signal<Option<AppError>>,
    revoke: ServerAction<AdminRevokeKey>,
    revoke_error: Signal<Option<AppError>>,
    actions: Actions,
    done: Option<String>,
) -> impl IntoView {
    let ctx = FormContext { customer: c.id.clone(), form_key: c.form_key.clone() };
    let ledger_of = c.id.clone();
    let no_keys = c.api_keys.is_empty();
    let webhook_error = Signal::derive(move || actions.retry_webhook.value().get().and_then(|r| r.err()));
    let usage_error = Signal::derive(move || actions.retry_usage.value().get().and_then(|r| r.err()));
    let resend_error = Signal::derive(move || actions.resend.value().get().and_then(|r| r.err()));
    let resync_error = Signal::derive(move || actions.resync.value().get().and_then(|r| r.err()));
    let here = format!("/admin/customers/{}", c.id);
    let sign_in_again = format!("/login?next={}", urlencoding_path(&here));
    // An action refused for an old sign-in names the password (no form here has one): said
    // once, at the top, whichever form it came from.
    let refused_stale = Signal::derive(move || {
        [
            error.get(),
            revoke_error.get(),
            webhook_error.get(),
            usage_error.get(),
            resend_error.get(),
            resync_error.get(),
        ]
        .into_iter()
        .flatten()
        .find(|e| e.field() == Some("password"))
        .map(|e| e.to_string())
    });
    let fresh = c.fresh;
    let stale_link = sign_in_again.clone();
    view! {
        <Title text=format!("{} · Operator console", c.email) />
        <p>
            <a href="/admin">"← Find another customer"</a>
        </p>
        <section class="page-head">
            <h1>{c.email.clone()}</h1>
            <p class="muted">
                {format!("Tally user {} · since {}", c.id, c.created)}
                {c.polar_customer_id.clone().map(|p| format!(" · Polar customer {p}"))}
            </p>
        </section>
        {done
            .map(|done| {
                let said = if done == "already" {
                    "That was done already (the form had been sent before): nothing changed now."
                } else {
                    "Done, and recorded in the audit log."
                };
                view! {
                    <div class="alert alert--success" role="status">
                        {said}
                    </div>
                }
            })}
        {move || match refused_stale.get() {
            Some(message) => {
                Some(
                    view! {
                        <div class="alert alert--error" role="alert">
                            {message}
                            " "
                            <a href=stale_link.clone()>"Sign in again"</a>
                        </div>
                    }
                        .into_any(),
                )
            }
            None if !fresh => {
                Some(
                    view! {
                        <p class="alert alert--warning" role="status">
                            {format!("Acting needs a sign-in of the last {FRESH_SIGN_IN_MINUTES} minutes. ")}
                            <a href=sign_in_again.clone()>"Sign in again"</a>
                        </p>
                    }
                        .into_any(),
                )
            }
            None => None,
        }}
        <section class="panel" aria-labelledby="balance-title">
            <h2 id="balance-title">{format!("Balance: {} credits", group_thousands(c.total.max(0) as u64))}</h2>
            <ul>
                {c
                    .buckets
                    .into_iter()
                    .map(|(source, n)| view! { <li>{format!("{source}: {}", group_thousands(n.max(0) as u64))}</li> })
                    .collect_view()}
            </ul>
        </section>
        <BillingSection billing=c.billing resync=actions.resync error=resync_error ctx=ctx.clone() />
        <section class="panel" aria-labelledby="adjust-title">
            <h2 id="adjust-title">"Grant or take credits"</h2>
            <FormError error=error />
            <ActionForm action=adjust>
                <input type="hidden" name="customer" value=c.id.clone() />
                <input type="hidden" name="form_key" value=c.form_key />
                <div class="field">
                    <label for="field-direction">"Action"</label>
                    <select id="field-direction" name="direction">
                        <option value="grant">"Grant credits"</option>
                        <option value="take">"Take credits"</option>
                    </select>
                </div>
                <Field name="credits" label="Credits" input_type="number" error=error />
                <Field name="reason" label="Reason (kept in the audit log)" error=error />
                <button type="submit" class="btn btn--primary">
                    "Apply"
                </button>
            </ActionForm>
        </section>
        <LedgerSection ledger=c.ledger customer=ledger_of />
        <section class="panel" aria-labelledby="keys-title">
            <h2 id="keys-title">"API keys"</h2>
            <FormError error=revoke_error />
            {no_keys.then(|| view! { <p class="muted">"No API keys."</p> })}
            <ul>
                {c
                    .api_keys
                    .into_iter()
                    .map(|k| {
                        let live = k.revoked.is_none();
                        let state = k.revoked.map(|r| format!("revoked {r}")).unwrap_or_else(|| "live".into());
                        let reason_id = format!("revoke-reason-{}", k.prefix);
                        let prefix = k.prefix.clone();
                        let ctx = ctx.clone();
                        view! {
                            <li>
                                {format!("{} ({}) · created {} · {state}", k.prefix, k.name, k.created)}
                                {live
                                    .then(|| {
                                        view! {
                                            <ActionForm action=revoke attr:class="inline-form">
                                                <ReasonFields
                                                    ctx=ctx
                                                    input_id=reason_id
                                                    target=("prefix", prefix.clone())
                                                    label=format!("Reason for revoking {prefix}")
                                                    button=format!("Revoke {prefix}")
                                                />
                                            </ActionForm>
                                        }
                                    })}
                            </li>
                        }
                    })
                    .collect_view()}
            </ul>
        </section>
        <WebhookEvents events=c.webhooks retry=actions.retry_webhook error=webhook_error ctx=ctx.clone() />
        <UsageEvents events=c.usage retry=actions.retry_usage error=usage_error ctx=ctx.clone() />
        <MailSection
            email=c.email.clone()
            confirmed=c.confirmed
            mail=c.mail
            resend=actions.resend
            error=resend_error
            ctx=ctx
        />
        <section class="panel" aria-labelledby="audit-title">
            <h2 id="audit-title">"Audit log"</h2>
            <Table headers=&[
                "When",
                "Operator",
                "Action",
                "Reason",
                "Change",
            ]>
                {c
                    .audit
                    .into_iter()
                    .map(|a| {
                        view! { <TextRow cells=vec![a.when, a.operator, a.action, a.reason, a.change] /> }
                    })
                    .collect_view()}
            </Table>
        </section>
    }
}

/// A path as a query value (`/` and letters stay, the rest is escaped).
fn urlencoding_path(path: &str) -> String {
    path.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}
