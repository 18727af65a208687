//! The billing page's credit activity: spend per day for the last 30 days (an SVG chart drawn
//! on the server) and the credit history, paged with plain links (keyset cursors, so
//! every page costs the same).

use crate::api::account::{ActivityView, UsageDay};
use leptos::prelude::*;

/// Bars of spend per day. Accessible as an image whose name summarizes it; each bar has a
/// tooltip title with its day and amount.
#[component]
pub fn UsageChart(days: Vec<UsageDay>) -> impl IntoView {
    let max = days.iter().map(|d| d.credits).max().unwrap_or(0).max(1);
    let total: i64 = days.iter().map(|d| d.credits).sum();
    let (w, h, gap) = (10.0_f64, 60.0_f64, 2.0_f64);
    let width = days.len() as f64 * (w + gap);
    let summary = if total == 0 {
        "No credits spent in the last 30 days.".to_string()
    } else {
        let peak = days
            .iter()
            .max_by_key(|d| d.credits)
            .map(|d| format!("{} on {}", crate::domain::money::group_thousands(d.credits as u64), d.label))
            .unwrap_or_default();
        let unit = if total == 1 { "credit" } else { "credits" };
        format!(
            "{} {unit} spent in the last 30 days; the most in a day: {peak}.",
            crate::domain::money::group_thousands(total as u64)
        )
    };
    let first = days.first().map(|d| d.label.clone()).unwrap_or_default();
    let last = days.last().map(|d| d.label.clone()).unwrap_or_default();
    view! {
        <figure class="usage">
            <svg
                class="usage__chart"
                viewBox=format!("0 0 {width} {}", h + 2.0)
                preserveAspectRatio="none"
                role="img"
                aria-label=summary.clone()
            >
                {days
                    .into_iter()
                    .enumerate()
                    .map(|(i, d)| {
                        let bh = if d.credits == 0 { 1.0 } else { (d.credits as f64 / max as f64 * h).max(2.0) };
                        view! {
                            <rect x=format!("{:.1}", i as f64 * (w + gap)) y=format!("{:.1}", h - bh + 1.0) width=w height=format!("{bh:.1}") rx="1.5" class:usage__bar--zero=d.credits == 0 class="usage__bar">
                            <title>{format!("{}: {} credits", d.label, crate::domain::money::group_thousands(d.credits as u64))}</title>
                        </rect>
                        }
                    })
                    .collect_view()}
            </svg>
            <figcaption class="usage__caption">
                <span>{first}</span>
                <span data-testid="usage-summary">{summary}</span>
                <span>{last}</span>
            </figcaption>
        </figure>
    }
}

#[component]
pub fn ActivitySection(activity: ActivityView) -> impl IntoView {
    let ActivityView { lines, newer, older, usage } = activity;
    let caption = if newer.is_some() { "Credit history, older entries" } else { "Credit history, newest entries" };
    view! {
        <section class="panel" aria-labelledby="usage-title">
            <h2 id="usage-title">"Usage, last 30 days"</h2>
            <UsageChart days=usage />
        </section>
        <section class="panel" aria-labelledby="history-title">
            <h2 id="history-title">"Credit history"</h2>
            {if lines.is_empty() {
                view! { <p class="empty">"No credit activity yet."</p> }.into_any()
            } else {
                view! {
                    <div class="table-wrap">
                        <table class="table">
                            <caption class="visually-hidden">{caption}</caption>
                            <thead>
                                <tr>
                                    <th scope="col">"When"</th>
                                    <th scope="col">"What"</th>
                                    <th scope="col" class="num">
                                        "Credits"
                                    </th>
                                </tr>
                            </thead>
                            <tbody>
                                {lines
                                    .into_iter()
                                    .map(|l| {
                                        view! {
                                            <tr>
                                                <td>{l.when}</td>
                                                <td>{l.what}</td>
                                                <td class="num" class:debit=l.is_debit>
                                                    {l.amount}
                                                </td>
                                            </tr>
                                        }
                                    })
                                    .collect_view()}
                            </tbody>
                        </table>
                    </div>
                }
                    .into_any()
            }}
            <nav class="pager" aria-label="Credit history pages">
                {newer
                    .map(|c| {
                        view! {
                            <a
                                class="btn btn--ghost btn--sm"
                                href=format!("/billing?after={c}#history-title")
                                rel="prev"
                            >
                                "Newer"
                            </a>
                        }
                    })}
                {older
                    .map(|c| {
                        view! {
                            <a
                                class="btn btn--ghost btn--sm"
                                href=format!("/billing?before={c}#history-title")
                                rel="next"
                            >
                                "Older"
                            </a>
                        }
                    })}
            </nav>
            <form
                class="history-export"
                method="get"
                action="/billing/history.csv"
                aria-label="Download credit history"
            >
                <label for="export-from">"From"</label>
                <input id="export-from" type="date" name="from" />
                <label for="export-to">"To"</label>
                <input id="export-to" type="date" name="to" />
                <button type="submit" class="btn btn--ghost btn--sm">
                    "Download CSV"
                </button>
                <p class="muted">"Days in UTC; left empty, the last 30 days. At most a year per file."</p>
            </form>
        </section>
    }
}
