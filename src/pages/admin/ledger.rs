//! The customer's ledger on the operator's customer page: filtered by kind and days with a plain
//! GET form, newest first, paged by position ("Older entries"), so it works with JavaScript off
//! and page 1,000 costs what page 1 does.

use super::{ChoiceSelect, Table, TextRow};
use crate::api::admin::{LedgerLines, LEDGER_PAGE};
use leptos::prelude::*;

#[component]
pub fn LedgerSection(ledger: LedgerLines, customer: String) -> impl IntoView {
    let LedgerLines { entries, kind, from, until, kinds, older, paged, notice } = ledger;
    let here = format!("/admin/customers/{customer}");
    let filtered = !kind.is_empty() || !from.is_empty() || !until.is_empty();
    let query = |before: Option<&str>| {
        let mut q: Vec<String> = [("kind", &kind), ("from", &from), ("until", &until)]
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if let Some(b) = before {
            q.push(format!("before={b}"));
        }
        let q = if q.is_empty() { String::new() } else { format!("?{}", q.join("&")) };
        format!("{here}{q}#ledger-title")
    };
    let older_link = older.as_deref().map(|b| query(Some(b)));
    let newest_link = paged.then(|| query(None));
    let body = if entries.is_empty() {
        let none = if filtered || paged { "No entry matches." } else { "No ledger entries yet." };
        view! { <p class="muted">{none}</p> }.into_any()
    } else {
        view! {
            <Table headers=&[
                "When",
                "Kind",
                "What",
                "Credits",
            ]>
                {entries
                    .into_iter()
                    .map(|e| {
                        view! { <TextRow cells=vec![e.when, e.kind.replace('_', " "), e.what, e.credits] /> }
                    })
                    .collect_view()}
            </Table>
        }
        .into_any()
    };
    view! {
        <section class="panel" aria-labelledby="ledger-title">
            <h2 id="ledger-title">"Ledger"</h2>
            <form method="get" action=here.clone() class="inline-form form-row" aria-label="Filter the ledger">
                <ChoiceSelect id="ledger-kind" name="kind" label="Kind" choices=kinds chosen=kind />
                <label for="ledger-from">"From"</label>
                <input id="ledger-from" name="from" type="date" value=from.clone() />
                <label for="ledger-until">"Until"</label>
                <input id="ledger-until" name="until" type="date" value=until.clone() />
                <button type="submit" class="btn btn--ghost btn--sm">
                    "Show"
                </button>
                {filtered.then(|| view! { <a href=format!("{here}#ledger-title")>"Clear"</a> })}
            </form>
            {notice
                .map(|n| {
                    view! {
                        <p class="alert alert--warning" role="status">
                            {n}
                        </p>
                    }
                })}
            <p class="muted">{format!("Newest first, {LEDGER_PAGE} a page, times in UTC.")}</p>
            {body}
            <p>
                {newest_link.map(|l| view! { <a href=l>"Newest entries"</a> })}
                {(paged && older_link.is_some()).then_some(" · ")}
                {older_link.map(|l| view! { <a href=l>"Older entries"</a> })}
            </p>
        </section>
    }
}
