//! `/billing/success?checkout_id=…`: where Polar returns after checkout. It says "You're on
//! Pro" only once Polar's Customer State grants the plan's benefit (or a pack's credits are in
//! the ledger). Until then it polls with bounded backoff: hydrated, by refetching; without
//! JavaScript, by a `<noscript>` meta refresh that counts its attempts in the URL. Someone
//! else's checkout id gets 404.

use crate::api::billing::{checkout_status, CheckoutState};
use crate::components::islands::IslandScripts;
use crate::error::AppError;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

/// How many checks before the page stops and explains (about 90 s in all).
const MAX_CHECKS: u32 = 25;

/// Seconds before check `n` (1, 1, 2, 2, 3, … up to 5): Polar's state usually lags ~10 s.
fn delay_secs(n: u32) -> u32 {
    (1 + n / 2).min(5)
}

#[component]
pub fn CheckoutSuccessPage() -> impl IntoView {
    // The query is read here, on the server: an island cannot use the router's hooks.
    let query = use_query_map();
    let checkout_id = query.read_untracked().get("checkout_id").filter(|s| !s.is_empty());
    // Checks already made without JavaScript (carried in the URL by the meta refresh).
    let checks_from_url = query.read_untracked().get("n").and_then(|n| n.parse::<u32>().ok()).unwrap_or(0);
    view! {
        <Title text="Confirming your purchase" />
        <IslandScripts />
        <CheckoutProgress checkout_id checks_from_url />
    }
}

/// The purchase's state, checked on the server for the first render, then polled by the
/// browser while Polar has not confirmed it.
#[island]
pub fn CheckoutProgress(checkout_id: Option<String>, checks_from_url: u32) -> impl IntoView {
    let id = StoredValue::new(checkout_id);
    let checkout_id = move || id.get_value();
    let checks_from_url = move || checks_from_url;
    let (polls, set_polls) = signal(0u32);
    let status = Resource::new(
        move || (checkout_id(), polls.get()),
        |(id, _)| async move {
            match id {
                Some(id) => checkout_status(id).await.map(Some),
                None => Ok(None),
            }
        },
    );

    // In the browser: poll while processing, with growing pauses, up to MAX_CHECKS.
    Effect::new(move |_| {
        let processing = matches!(status.get(), Some(Ok(Some(CheckoutState::Processing))));
        let n = polls.get_untracked() + checks_from_url();
        if processing && n < MAX_CHECKS {
            set_timeout(move || set_polls.update(|p| *p += 1), std::time::Duration::from_secs(delay_secs(n) as u64));
        }
    });
    let timed_out = move || polls.get() + checks_from_url() >= MAX_CHECKS;

    view! {
        <section class="panel narrow center" aria-live="polite">
            <Suspense fallback=|| {
                view! {
                    <p class="loading" role="status">
                        "Checking your payment…"
                    </p>
                }
            }>
                {move || {
                    status
                        .get()
                        .map(|res| match res {
                            Ok(None) => {
                                view! {
                                    <h1>"No purchase to confirm"</h1>
                                    <p>
                                        "This page is where you land after paying. Start from the pricing page to choose a plan."
                                    </p>
                                    <p>
                                        <a class="btn btn--primary" href="/pricing">
                                            "See pricing"
                                        </a>
                                    </p>
                                }
                                    .into_any()
                            }
                            Err(AppError::Unauthorized) => {
                                view! {
                                    <h1>"Sign in to see your purchase"</h1>
                                    <p>"Your payment is safe. Sign in with the account you bought with to see it."</p>
                                    <p>
                                        <a
                                            class="btn btn--primary"
                                            href=move || crate::components::auth::with_next(
                                                "/login",
                                                &format!(
                                                    "/billing/success?checkout_id={}",
                                                    checkout_id().unwrap_or_default(),
                                                ),
                                            )
                                        >
                                            "Sign in"
                                        </a>
                                    </p>
                                }
                                    .into_any()
                            }
                            Err(AppError::NotFound) => {
                                #[cfg(feature = "ssr")]
                                if let Some(r) = use_context::<leptos_axum::ResponseOptions>() {
                                    r.set_status(http::StatusCode::NOT_FOUND);
                                }
                                // A checkout that is not this user's answers 404, like one that does not exist.
                                view! {
                                    <h1>"Purchase not found"</h1>
                                    <p>
                                        "We can't find this checkout on your account. If you paid with another account, sign in with that one."
                                    </p>
                                    <p>
                                        <a class="btn btn--primary" href="/billing">
                                            "Go to billing"
                                        </a>
                                    </p>
                                }
                                    .into_any()
                            }
                            Err(e) => {
                                view! {
                                    <h1>"We couldn't check your payment"</h1>
                                    <div class="alert alert--error" role="alert">
                                        {e.to_string()}
                                    </div>
                                    <p>
                                        "If you paid, your purchase is safe: it appears on your billing page as soon as we hear from our billing provider."
                                    </p>
                                    <p>
                                        <a
                                            class="btn btn--primary"
                                            href=move || {
                                                format!(
                                                    "/billing/success?checkout_id={}",
                                                    checkout_id().unwrap_or_default(),
                                                )
                                            }
                                        >
                                            "Check again"
                                        </a>
                                    </p>
                                }
                                    .into_any()
                            }
                            Ok(Some(CheckoutState::Ready { what, is_plan })) => {
                                view! {
                                    <h1 data-testid="checkout-confirmed">
                                        {if is_plan { format!("You're on {what}") } else { format!("{what} added") }}
                                    </h1>
                                    <p role="status">
                                        {if is_plan {
                                            "Your plan is active and its credits are on your account.".to_string()
                                        } else {
                                            "The credits are on your account and never expire.".to_string()
                                        }}
                                    </p>
                                    <p>
                                        <a class="btn btn--primary" href="/billing">
                                            "Go to billing"
                                        </a>
                                    </p>
                                }
                                    .into_any()
                            }
                            Ok(Some(CheckoutState::Expired)) => {
                                view! {
                                    <h1>"This checkout expired"</h1>
                                    <p>
                                        "Nothing was charged. Start again from the pricing page whenever you're ready."
                                    </p>
                                    <p>
                                        <a class="btn btn--primary" href="/pricing">
                                            "Back to pricing"
                                        </a>
                                    </p>
                                }
                                    .into_any()
                            }
                            Ok(Some(CheckoutState::Failed)) => {
                                view! {
                                    <h1>"The payment didn't go through"</h1>
                                    <div class="alert alert--error" role="alert">
                                        "Your payment could not be completed and nothing was charged."
                                    </div>
                                    <p>
                                        <a class="btn btn--primary" href="/pricing">
                                            "Try again"
                                        </a>
                                    </p>
                                }
                                    .into_any()
                            }
                            Ok(Some(CheckoutState::Processing)) if timed_out() => {
                                view! {
                                    <h1>"This is taking longer than usual"</h1>
                                    <p role="status">
                                        "Your payment is being processed. You don't need to pay again: your plan or credits appear on your billing page as soon as our billing provider confirms them, usually within minutes."
                                    </p>
                                    <p>
                                        <a
                                            class="btn btn--primary"
                                            href=move || {
                                                format!(
                                                    "/billing/success?checkout_id={}",
                                                    checkout_id().unwrap_or_default(),
                                                )
                                            }
                                        >
                                            "Check again"
                                        </a>
                                        " "
                                        <a class="btn btn--ghost" href="/billing">
                                            "Go to billing"
                                        </a>
                                    </p>
                                }
                                    .into_any()
                            }
                            Ok(Some(CheckoutState::Processing)) => {
                                let n = checks_from_url();
                                let refresh = format!(
                                    r#"<meta http-equiv="refresh" content="{};url=/billing/success?checkout_id={}&amp;n={}">"#,
                                    delay_secs(n),
                                    crate::components::auth::urlencode(&checkout_id().unwrap_or_default()),
                                    n + 1,
                                );
                                view! {
                                    <h1>"Confirming your purchase"</h1>
                                    <div
                                        class="progress"
                                        role="progressbar"
                                        aria-label="Waiting for confirmation"
                                        aria-busy="true"
                                    >
                                        <span class="progress__bar"></span>
                                    </div>
                                    <p role="status" data-testid="checkout-processing">
                                        "Payment processing. We're waiting for Polar to confirm it; this usually takes a few seconds."
                                    </p>
                                    <noscript inner_html=refresh></noscript>
                                    <p class="muted">
                                        "This page updates by itself. You can also "
                                        <a href="/billing">"go to billing"</a>
                                        "; your purchase appears there when confirmed."
                                    </p>
                                }
                                    .into_any()
                            }
                        })
                }}
            </Suspense>
        </section>
    }
}
