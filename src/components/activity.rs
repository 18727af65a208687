//! The billing page's credit activity: spend per day for the last 30 days (an SVG chart drawn
//! on the server) and the credit history, paged with plain links (keyset cursors, so
//! every page costs the same).

use crate::api::account::{ActivityView, LedgerPart, UsageDay};
use leptos::prelude::*;

/// Bars of spend per day. Accessible as an image whose name summarizes it; each bar has a
/// tooltip title with its day and amount.
#[component]
pub fn UsageChart(days: Vec<UsageDay>) -> impl IntoView {
    let max = days.iter().map(|d| d.credits).max().unwrap_or(0).max(1);
    let total: i64 = days.iter().map(|d| d.credits).sum();
    // Geometry in tenths of a unit, in integers: formatting floats to one decimal took ~2 % of
    // a billing page render's CPU (the exact float formatter), and integers round the same way
    // on the server and in the browser.
    let (w, h, gap) = (100_i64, 600_i64, 20_i64);
    let width = days.len() as i64 * (w + gap);
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
                viewBox=format!("0 0 {} {}", tenths(width), tenths(h + 20))
                preserveAspectRatio="none"
                role="img"
                aria-label=summary.clone()
            >
                {days
                    .into_iter()
                    .enumerate()
                    .map(|(i, d)| {
                        let bh = bar_height(d.credits, max, h);
                        view! {
                            <rect x=tenths(i as i64 * (w + gap)) y=tenths(h - bh + 10) width=tenths(w) height=tenths(bh) rx="1.5" class:usage__bar--zero=d.credits == 0 class="usage__bar">
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

/// A run of spends shown as one line: its summary, expandable (without JavaScript) to its
/// first entries, and for a longer run a link to the CSV of its days.
#[component]
fn RunDetails(what: String, parts: Vec<LedgerPart>, count: u64, export: Option<String>) -> impl IntoView {
    let rest = count.saturating_sub(parts.len() as u64);
    view! {
        <details class="run">
            <summary>{what}</summary>
            <ul class="run__parts">
                {parts
                    .into_iter()
                    .map(|p| {
                        view! {
                            <li>
                                <span>{p.when}</span>
                                <span class="num">{p.amount}</span>
                            </li>
                        }
                    })
                    .collect_view()}
            </ul>
            {export
                .map(|href| {
                    view! {
                        <p class="muted">
                            {format!("and {} more: ", crate::domain::money::group_thousands(rest))}
                            <a href=href>"download these days as CSV"</a>
                        </p>
                    }
                })}
        </details>
    }
}

/// A bar's height in tenths for `credits` of the busiest day's `max`, on a chart `h` tenths
/// high: a day without spend is a 1-unit stub, any spend at least 2 units.
fn bar_height(credits: i64, max: i64, h: i64) -> i64 {
    if credits <= 0 {
        return 10;
    }
    let exact = (credits as i128 * h as i128 + max as i128 / 2) / max.max(1) as i128;
    (exact as i64).clamp(20, h)
}

/// Tenths as a decimal: `125` → `"12.5"`.
fn tenths(t: i64) -> String {
    format!("{}.{}", t / 10, t % 10)
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
                                                <td>
                                                    {if l.parts.is_empty() {
                                                        l.what.into_any()
                                                    } else {
                                                        view! {
                                                            <RunDetails
                                                                what=l.what
                                                                parts=l.parts
                                                                count=l.count
                                                                export=l.export
                                                            />
                                                        }
                                                            .into_any()
                                                    }}
                                                </td>
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_busiest_day_in_tenths() {
        assert_eq!(bar_height(0, 5, 600), 10);
        assert_eq!(bar_height(5, 5, 600), 600);
        assert_eq!(bar_height(1, 1_000_000, 600), 20);
        assert_eq!(bar_height(1, 3, 600), 200);
        assert_eq!(bar_height(i64::MAX, i64::MAX, 600), 600);
        assert_eq!(tenths(0), "0.0");
        assert_eq!(tenths(125), "12.5");
        assert_eq!(tenths(3600), "360.0");
    }
}
