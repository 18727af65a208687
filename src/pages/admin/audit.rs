//! `/admin/audit`: every operator action, newest first, filtered by action, operator and
//! customer (a plain GET form), paged by "Older entries", and downloadable as CSV with the same
//! filters.

use super::loading;
use super::{ChoiceSelect, Table};
use crate::api::admin::{admin_audit, AuditLine, AuditView};
use crate::error::AppError;
use crate::pages::not_found::NotFoundPage;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

/// The filters as the page's query has them: action, operator, customer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Filters {
    action: String,
    operator: String,
    customer: String,
}

impl Filters {
    /// The query string these filters make (for the CSV link and the next page), `&`-joined.
    fn query(&self) -> String {
        [("action", &self.action), ("operator", &self.operator), ("customer", &self.customer)]
            .into_iter()
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(k, v)| format!("{k}={}", encode(v.trim())))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// A query value, percent-encoded but for unreserved characters.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

#[component]
pub fn AdminAuditPage() -> impl IntoView {
    let query = use_query_map();
    let filters = move || {
        let q = query.read();
        let get = |k: &str| q.get(k).unwrap_or_default();
        (Filters { action: get("action"), operator: get("operator"), customer: get("customer") }, get("before"))
    };
    let log = Resource::new(filters, |(f, before)| admin_audit(f.action, f.operator, f.customer, before.parse().ok()));
    view! {
        <Suspense fallback=loading>
            {move || {
                log.get()
                    .map(|res| {
                        let (f, _) = filters();
                        match res {
                            Err(AppError::NotFound) => view! { <NotFoundPage /> }.into_any(),
                            Err(e) => view! { <AuditLog f=f view=None error=Some(e.to_string()) /> }.into_any(),
                            Ok(v) => view! { <AuditLog f=f view=Some(v) error=None /> }.into_any(),
                        }
                    })
            }}
        </Suspense>
    }
}

#[component]
fn AuditLog(f: Filters, view: Option<AuditView>, error: Option<String>) -> impl IntoView {
    let query = f.query();
    let csv = if query.is_empty() { "/admin/audit.csv".to_string() } else { format!("/admin/audit.csv?{query}") };
    let actions = view.as_ref().map(|v| v.actions.clone()).unwrap_or_default();
    let older = view.as_ref().and_then(|v| v.older).map(|before| {
        if query.is_empty() {
            format!("/admin/audit?before={before}")
        } else {
            format!("/admin/audit?{query}&before={before}")
        }
    });
    let chosen = f.action.clone();
    view! {
        <Title text="Audit log · Operator console" />
        <p>
            <a href="/admin">"← Operator console"</a>
        </p>
        <section class="page-head">
            <h1>"Audit log"</h1>
            <p class="lead">"Every operator action, newest first: who, what, to whom, why, and what it changed."</p>
        </section>
        <form method="get" action="/admin/audit" class="panel inline-form" aria-label="Filter the audit log">
            <ChoiceSelect id="audit-action" name="action" label="Action" choices=actions chosen=chosen />
            <label for="audit-operator">"Operator email"</label>
            <input id="audit-operator" name="operator" type="email" value=f.operator.clone() />
            <label for="audit-customer">"Customer (Tally user id)"</label>
            <input id="audit-customer" name="customer" value=f.customer.clone() />
            <button type="submit" class="btn btn--primary">
                "Filter"
            </button>
            <a class="btn btn--ghost" href=csv download="">
                "Download CSV"
            </a>
        </form>
        {error
            .map(|e| {
                view! {
                    <div class="alert alert--error" role="alert">
                        {e}
                    </div>
                }
            })}
        {view.map(|v| view! { <AuditTable rows=v.rows /> })}
        {older.map(|href| view! { <a href=href>"Older entries →"</a> })}
    }
}

#[component]
fn AuditTable(rows: Vec<AuditLine>) -> impl IntoView {
    if rows.is_empty() {
        return view! { <p class="muted">"No operator action matches."</p> }.into_any();
    }
    view! {
        <Table headers=&[
            "When",
            "Operator",
            "Action",
            "Customer",
            "Reason",
            "Change",
        ]>
            {rows
                .into_iter()
                .map(|a| {
                    let customer = a
                        .customer
                        .map(|id| {
                            view! {
                                <a href=format!("/admin/customers/{id}")>{id.chars().take(8).collect::<String>()}</a>
                            }
                        });
                    view! {
                        <tr>
                            <td>{a.when}</td>
                            <td>{a.operator}</td>
                            <td>{a.action}</td>
                            <td>{customer}</td>
                            <td>{a.reason}</td>
                            <td>{a.change}</td>
                        </tr>
                    }
                })
                .collect_view()}
        </Table>
    }
    .into_any()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_query_keeps_what_was_chosen_and_escapes_it() {
        let f = |a: &str, o: &str, c: &str| Filters { action: a.into(), operator: o.into(), customer: c.into() };
        assert_eq!(f("", " ", "").query(), "");
        assert_eq!(f("retry_webhook", "", "").query(), "action=retry_webhook");
        assert_eq!(f("", "a+b@x.com", "").query(), "operator=a%2Bb%40x.com");
        assert_eq!(
            f("grant_credits", "op@x.com", "abc").query(),
            "action=grant_credits&operator=op%40x.com&customer=abc"
        );
    }
}
