//! `/admin/health`: the webhook inbox, the run of refused webhook deliveries (in red when Polar
//! may disable the endpoint), the usage outbox, the mail outbox, Polar's circuit breakers and
//! Tally's shares of Polar's API quota.

use super::{console, loading, Table, TextRow};
use crate::api::admin::{admin_health, HealthView};
use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn AdminHealthPage() -> impl IntoView {
    let health = Resource::new(|| (), |_| admin_health());
    view! {
        <Suspense fallback=loading>
            {move || { health.get().map(|res| console(res, |h| view! { <Health h=h /> }.into_any())) }}
        </Suspense>
    }
}

/// One figure of a panel: what it is, and its value.
#[component]
fn Figure(label: &'static str, value: String) -> impl IntoView {
    view! {
        <dt>{label}</dt>
        <dd>{value}</dd>
    }
}

#[component]
fn Health(h: HealthView) -> impl IntoView {
    let warning = h.at_risk.then(|| {
        view! {
            <div class="alert alert--error" role="alert">
                <strong>"Polar may disable the webhook endpoint. "</strong>
                {format!(
                    "{} deliveries in a row were refused{}; Polar disables the endpoint after {} and then sends nothing until someone turns it back on in Polar's dashboard. ",
                    h.refused,
                    h.refused_since.clone().map(|s| format!(" since {s}")).unwrap_or_default(),
                    h.disables_after,
                )}
                {h.refused_error.clone().map(|e| format!("Last refusal: {e}."))}
            </div>
        }
    });
    view! {
        <Title text="Health · Operator console" />
        <p>
            <a href="/admin">"← Operator console"</a>
        </p>
        <section class="page-head">
            <h1>"Health"</h1>
            <p class="lead">"What is waiting, what is parked, and how Polar's deliveries and API are doing."</p>
        </section>
        {warning}
        <section class="panel" aria-labelledby="inbox-title">
            <h2 id="inbox-title">"Webhook inbox"</h2>
            <dl class="figures">
                <Figure label="Waiting" value=h.webhooks_pending.to_string() />
                <Figure label="Oldest waiting" value=h.webhooks_oldest />
                <Figure label="Failed at least once, retrying" value=h.webhooks_retrying.to_string() />
                <Figure label="Parked" value=h.webhooks_parked.to_string() />
                <Figure label="Failed in the last hour" value=h.webhooks_failed_last_hour.to_string() />
                <Figure
                    label="Deliveries refused in a row"
                    value=format!("{} (Polar disables at {})", h.refused, h.disables_after)
                />
                <Figure
                    label="Last delivery accepted after a refusal"
                    value=h.last_accepted.unwrap_or_else(|| "—".into())
                />
            </dl>
        </section>
        <section class="panel" aria-labelledby="outbox-title">
            <h2 id="outbox-title">"Usage outbox"</h2>
            <dl class="figures">
                <Figure label="Not yet at Polar" value=h.usage_pending.to_string() />
                <Figure label="Oldest" value=h.usage_oldest />
                <Figure label="Parked" value=h.usage_parked.to_string() />
                <Figure
                    label="Drift at the last reconcile"
                    value=format!("{} credits over {} accounts", h.drift_credits, h.drift_accounts)
                />
            </dl>
        </section>
        <section class="panel" aria-labelledby="polar-title">
            <h2 id="polar-title">"Polar"</h2>
            <dl class="figures">
                <Figure label="Circuit breaker, pages" value=h.polar_circuit.replace('_', "-") />
                <Figure label="Circuit breaker, background work" value=h.polar_background_circuit.replace('_', "-") />
            </dl>
            <h3>"API quota"</h3>
            <p class="muted">
                "Polar allows an organization 500 requests a minute (100 in the sandbox). Tally counts its shares across every instance before each call; what they leave goes to customer sync and the scheduled reconcile. A count above a share's allowance is calls Tally refused itself."
            </p>
            <Table headers=&[
                "Share",
                "Allowed a minute",
                "This minute",
                "Last minute",
            ]>
                {h
                    .quota
                    .into_iter()
                    .map(|q| {
                        let over = |n: i64| {
                            if n > q.per_minute { format!("{n} ({} refused)", n - q.per_minute) } else { n.to_string() }
                        };
                        view! {
                            <TextRow cells=vec![
                                q.what.clone(),
                                q.per_minute.to_string(),
                                over(q.this_minute),
                                over(q.last_minute),
                            ] />
                        }
                    })
                    .collect_view()}
            </Table>
        </section>
        <section class="panel" aria-labelledby="mail-title">
            <h2 id="mail-title">"Mail outbox"</h2>
            <dl class="figures">
                <Figure label="Waiting" value=h.mail_pending.to_string() />
                <Figure label="Oldest waiting" value=h.mail_oldest />
            </dl>
        </section>
    }
}
