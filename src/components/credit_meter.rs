//! The credit meter: what the account can spend now, where it comes from, and what is still
//! to accrue this period.

use crate::components::local_time::LocalTime;
use crate::domain::credits::Balance;
use crate::domain::money::group_thousands;
use leptos::prelude::*;

/// The sources a balance lists: each with credits, and Free always (so a new account sees
/// where its free credits went).
pub fn credit_sources(b: &Balance) -> Vec<(&'static str, i64)> {
    [
        ("This period's allotment", b.allotment),
        ("Purchased", b.purchased),
        ("Free", b.free),
        ("Adjustments", b.adjustment),
    ]
    .into_iter()
    .filter(|(label, n)| *n > 0 || *label == "Free")
    .collect()
}

/// What this period's allotment has given and has still to give, when there is one.
pub fn accrual_text(b: &Balance) -> Option<String> {
    (b.allotment > 0 || b.pending_allotment > 0).then(|| {
        format!(
            "This period: {} available now, {} more to come day by day until renewal. Unused allotment does not roll over.",
            credit_amount(b.allotment),
            credit_amount(b.pending_allotment)
        )
    })
}

/// A credit amount as shown (never negative on a page).
pub fn credit_amount(n: i64) -> String {
    group_thousands(n.max(0) as u64)
}

#[component]
pub fn CreditMeter(
    credits: Balance,
    /// When a credit day begins, e.g. `00:00 UTC`.
    day_boundary: String,
) -> impl IntoView {
    let b = credits;
    view! {
        <section class="panel" aria-labelledby="credits-title">
            <h2 id="credits-title">"Credits"</h2>
            <p class="credits-total">
                <span data-testid="credits-total">{credit_amount(b.total)}</span>
                " credits available"
            </p>
            <dl class="credit-sources">
                {credit_sources(&b)
                    .into_iter()
                    .map(|(label, n)| {
                        view! {
                            <div>
                                <dt>{label}</dt>
                                <dd>{credit_amount(n)}</dd>
                            </div>
                        }
                    })
                    .collect_view()}
            </dl>
            {accrual_text(&b).map(|t| view! { <p data-testid="accrual">{t}</p> })}
            {b
                .next_accrual_at
                .map(|t| {
                    view! {
                        <p data-testid="next-accrual">
                            "Next credits arrive "
                            <LocalTime
                                iso=t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                                utc_text=t.format("%b %-d, %H:%M UTC").to_string()
                            /> "."
                        </p>
                    }
                })}
            <p class="muted">
                "Credits are spent soonest-expiring first: this period's allotment, then purchased, then free."
            </p>
            <p class="muted">
                {format!("Paid plans add their monthly credits day by day; a new day starts at {day_boundary}.")}
            </p>
            <p>
                <a class="btn btn--ghost" href="/pricing#packs-title">
                    "Buy credits"
                </a>
            </p>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sources_with_credits_are_listed_and_free_always() {
        let b = Balance { total: 120, allotment: 100, free: 0, purchased: 20, ..Default::default() };
        assert_eq!(credit_sources(&b), vec![("This period's allotment", 100), ("Purchased", 20), ("Free", 0)]);
    }

    #[test]
    fn the_accrual_line_appears_with_an_allotment_and_never_shows_negatives() {
        assert_eq!(accrual_text(&Balance::default()), None);
        let b = Balance { allotment: 1_500, pending_allotment: 3_500, ..Default::default() };
        assert!(accrual_text(&b).unwrap().starts_with("This period: 1,500 available now, 3,500 more to come"));
        assert_eq!(credit_amount(-5), "0");
    }
}
