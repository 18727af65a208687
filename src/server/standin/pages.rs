//! The stand-in's hosted pages: the checkout at a checkout's `url`, the customer portal at a
//! customer session's `customer_portal_url`, and invoice files. Plain server-rendered HTML
//! forms (they work without JavaScript), styled to be clearly "the payment provider's page".
//!
//! Test cards on the checkout: 4242 4242 4242 4242 pays; 4000 0000 0000 0002 is declined.

use super::ops::PaymentDetails;
use super::world::{Address, Checkout};
use super::StandIn;
use crate::domain::countries::{COUNTRIES, EMBARGOED};
use crate::domain::money::format_cents_exact as format_cents;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use rand::Rng;
use std::collections::HashMap;

pub fn routes(s: StandIn) -> Router {
    Router::new()
        .route("/checkout/{secret}", get(checkout_page))
        .route("/checkout/{secret}/confirm", post(confirm))
        .route("/checkout/{secret}/expire", post(expire))
        .route("/checkout/{secret}/confirmation", get(confirmation))
        .route("/{org}/portal", get(portal_page))
        .route("/{org}/portal/action", post(portal_action))
        .route("/_files/invoices/{file}", get(invoice_file))
        .with_state(s)
}

pub const CARD_OK: &str = "4242424242424242";
pub const CARD_DECLINED: &str = "4000000000000002";

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Polar (local stand-in)</title><link rel="icon" href="data:,"><style>
body{{font:16px/1.5 system-ui,sans-serif;margin:0;background:#f4f4f6;color:#1d1d22}}
header{{background:#0b0d12;color:#fff;padding:.75rem 1.25rem;display:flex;justify-content:space-between;align-items:center;gap:1rem;flex-wrap:wrap}}
header strong{{letter-spacing:.02em}} header small{{color:#c8cad3}}
main{{max-width:36rem;margin:1.5rem auto;padding:0 1rem}}
section{{background:#fff;border:1px solid #dcdde3;border-radius:10px;padding:1.25rem;margin-bottom:1rem}}
h1{{font-size:1.4rem;margin:.2rem 0 1rem}} h2{{font-size:1.1rem;margin:0 0 .75rem}}
label{{display:block;font-weight:600;margin:.75rem 0 .25rem}} .hint{{font-weight:400;color:#50525c;font-size:.9rem}}
input,select{{width:100%;box-sizing:border-box;font:inherit;padding:.55rem .6rem;border:1px solid #9a9ca6;border-radius:6px;background:#fff}}
.row{{display:flex;gap:.75rem}} .row>div{{flex:1}}
button{{font:inherit;font-weight:600;padding:.65rem 1rem;border-radius:6px;border:1px solid #1f3fcc;background:#2446e0;color:#fff;cursor:pointer}}
button.secondary{{background:#fff;color:#1f3fcc}} button.danger{{background:#fff;color:#a3122b;border-color:#a3122b}}
button:focus-visible,input:focus-visible,select:focus-visible,a:focus-visible{{outline:3px solid #f5a623;outline-offset:2px}}
.pay{{width:100%;margin-top:1.25rem;font-size:1.05rem}}
.error{{background:#fdecee;border:1px solid #a3122b;color:#7a0d20;padding:.6rem .8rem;border-radius:6px}}
.ok{{background:#e8f6ee;border:1px solid #17723f;color:#0d4d29;padding:.6rem .8rem;border-radius:6px}}
.price{{font-size:1.6rem;font-weight:700}} table{{width:100%;border-collapse:collapse}} td,th{{text-align:left;padding:.4rem .3rem;border-bottom:1px solid #e4e5ea;font-size:.95rem}}
.actions{{display:flex;gap:.5rem;flex-wrap:wrap;margin-top:.75rem}} .actions form{{margin:0}}
a{{color:#1f3fcc}}
</style></head><body><header><strong>Polar</strong><small>Local stand-in · no real money moves</small></header><main>{body}</main></body></html>"#,
        title = esc(title)
    ))
}

fn not_found_page(what: &str) -> Response {
    (StatusCode::NOT_FOUND, page("Not found", &format!("<section><h1>Not found</h1><p>{}</p></section>", esc(what))))
        .into_response()
}

fn find_checkout(s: &StandIn, secret: &str) -> Option<Checkout> {
    s.mutate(|w, _, _| w.checkouts.iter().find(|c| c.client_secret == secret).cloned())
}

fn country_options(selected: &str) -> String {
    let mut out = String::from(r#"<option value="">Choose a country</option>"#);
    for (code, name) in COUNTRIES.iter().filter(|(c, _)| !EMBARGOED.contains(c)) {
        let sel = if *code == selected { " selected" } else { "" };
        out.push_str(&format!(r#"<option value="{code}"{sel}>{}</option>"#, esc(name)));
    }
    out
}

async fn checkout_page(State(s): State<StandIn>, Path(secret): Path<String>) -> Response {
    let Some(c) = find_checkout(&s, &secret) else { return not_found_page("This checkout link is not valid.") };
    render_checkout(&s, &c, c.last_error.as_deref(), &HashMap::new())
}

fn render_checkout(s: &StandIn, c: &Checkout, error: Option<&str>, form: &HashMap<String, String>) -> Response {
    let product = s.read(|w, _| w.product(&c.product_id).cloned()).expect("catalogue product");
    let price = format_cents(product.price_amount, &product.currency);
    let per = product.recurring_interval.as_deref().map(|i| format!(" / {i}")).unwrap_or_default();
    let summary = format!(
        r#"<section aria-labelledby="what"><h2 id="what">{}</h2><p class="price">{price}<span class="hint">{per}</span></p><p class="hint">{}</p><p class="hint">Plus VAT or sales tax for your country; none for a business with a valid VAT id of its country.</p></section>"#,
        esc(&product.name),
        esc(product.description.as_deref().unwrap_or(""))
    );
    match c.status.as_str() {
        "expired" => {
            let back = c
                .return_url
                .as_deref()
                .map(|u| format!(r#"<p><a href="{}">Go back</a></p>"#, esc(u)))
                .unwrap_or_default();
            return (StatusCode::GONE, page("Checkout expired", &format!("{summary}<section><h1>This checkout has expired</h1><p>Start a new checkout from the site you came from.</p>{back}</section>"))).into_response();
        }
        "succeeded" => {
            let to = c.success_url.clone().unwrap_or_default();
            return page("Paid", &format!(r#"<section><h1>Payment received</h1><p class="ok">This checkout is paid.</p><p><a href="{}">Continue</a></p></section>"#, esc(&to))).into_response();
        }
        _ => {}
    }
    let v = |k: &str, default: Option<&str>| esc(form.get(k).map(String::as_str).or(default).unwrap_or(""));
    let addr = c.customer_billing_address.clone().unwrap_or_default();
    let country = form.get("country").cloned().unwrap_or(addr.country.clone());
    let error_html = error
        .map(|e| format!(r#"<p class="error" role="alert" id="checkout-error">{}</p>"#, esc(e)))
        .unwrap_or_default();
    let body = format!(
        r#"{summary}<section aria-labelledby="pay"><h1 id="pay">Pay {name}</h1>{error_html}
<form method="post" action="{base}/checkout/{secret}/confirm" novalidate>
<label for="email">Email</label><input id="email" name="email" type="email" autocomplete="email" required value="{email}">
<label for="billing_name">Name on invoice</label><input id="billing_name" name="billing_name" autocomplete="name" required value="{billing_name}">
<label for="country">Country</label><select id="country" name="country" autocomplete="country" required>{countries}</select>
<label for="line1">Address <span class="hint">(optional)</span></label><input id="line1" name="line1" autocomplete="address-line1" value="{line1}">
<div class="row"><div><label for="postal_code">Postal code <span class="hint">(optional)</span></label><input id="postal_code" name="postal_code" autocomplete="postal-code" value="{postal}"></div>
<div><label for="city">City <span class="hint">(optional)</span></label><input id="city" name="city" autocomplete="address-level2" value="{city}"></div></div>
<label for="tax_id">VAT / tax id <span class="hint">(optional, for business purchases)</span></label><input id="tax_id" name="tax_id" value="{tax_id}">
<label for="card">Card number <span class="hint">Test cards: 4242 4242 4242 4242 pays, 4000 0000 0000 0002 is declined.</span></label>
<input id="card" name="card" inputmode="numeric" autocomplete="cc-number" required value="{card}">
<div class="row"><div><label for="exp">Expiry</label><input id="exp" name="exp" autocomplete="cc-exp" value="{exp}" placeholder="MM / YY"></div>
<div><label for="cvc">CVC</label><input id="cvc" name="cvc" autocomplete="cc-csc" value="{cvc}"></div></div>
<button class="pay" type="submit">Pay {price}{per}</button></form></section>
<section aria-labelledby="other"><h2 id="other">Not paying?</h2><p class="hint">This checkout expires on its own 24 hours after it was created. For tests and demos you can expire it now.</p>
<form method="post" action="{base}/checkout/{secret}/expire"><button class="secondary" type="submit">Let this checkout expire now</button></form></section>"#,
        base = s.inner.config.public_url,
        secret = esc(&c.client_secret),
        name = esc(&product.name),
        email = v("email", c.customer_email.as_deref()),
        billing_name = v("billing_name", c.customer_billing_name.as_deref().or(c.customer_name.as_deref())),
        countries = country_options(&country),
        line1 = v("line1", addr.line1.as_deref()),
        postal = v("postal_code", addr.postal_code.as_deref()),
        city = v("city", addr.city.as_deref()),
        tax_id = v("tax_id", c.customer_tax_id.as_deref()),
        card = v("card", Some("4242 4242 4242 4242")),
        exp = v("exp", Some("12 / 34")),
        cvc = v("cvc", Some("123")),
    );
    let status = if error.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    (status, page(&format!("Pay {}", product.name), &body)).into_response()
}

async fn confirm(
    State(s): State<StandIn>,
    Path(secret): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let Some(c) = find_checkout(&s, &secret) else { return not_found_page("This checkout link is not valid.") };
    if c.status != "open" {
        return render_checkout(&s, &c, None, &form);
    }
    let field = |k: &str| form.get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let email = field("email").unwrap_or_default();
    if crate::domain::email::Email::parse(&email).is_err() {
        return render_checkout(&s, &c, Some("Enter a valid email address."), &form);
    }
    let Some(billing_name) = field("billing_name") else {
        return render_checkout(&s, &c, Some("Enter the name for the invoice."), &form);
    };
    let country = field("country").unwrap_or_default().to_ascii_uppercase();
    if crate::domain::countries::name(&country).is_none() || EMBARGOED.contains(&country.as_str()) {
        return render_checkout(&s, &c, Some("Choose your country."), &form);
    }
    let tax_id = match field("tax_id") {
        None => None,
        Some(t) => match crate::domain::tax_id::validate(&country, &t) {
            Ok(t) => Some((t.value, t.kind.to_string())),
            Err(e) => return render_checkout(&s, &c, Some(&e), &form),
        },
    };
    let card: String = form.get("card").map(|c| c.chars().filter(char::is_ascii_digit).collect()).unwrap_or_default();
    if card != CARD_OK && card != CARD_DECLINED {
        return render_checkout(
            &s,
            &c,
            Some("Use a test card: 4242 4242 4242 4242 (pays) or 4000 0000 0000 0002 (declined)."),
            &form,
        );
    }
    // The customer clicked Pay: `confirmed` says nothing about the payment yet.
    s.mutate(|w, now, ev| {
        if let Some(ck) = w.checkout_mut(&c.id) {
            ck.status = "confirmed".into();
            ck.modified_at = Some(now);
        }
        let json = w.checkout_json(w.checkouts.iter().find(|x| x.id == c.id).expect("exists"));
        ev.0.push(super::ops::Event { event_type: "checkout.updated".into(), timestamp: now, data: json });
    });
    let (lo, hi) = s.inner.config.payment_delay;
    let delay = if hi > lo { rand::thread_rng().gen_range(lo..=hi) } else { lo };
    tokio::time::sleep(delay).await;
    if card == CARD_DECLINED {
        s.mutate(|w, now, ev| w.decline_checkout(&c.id, now, ev));
        let c = find_checkout(&s, &secret).expect("exists");
        return render_checkout(&s, &c, c.last_error.as_deref(), &form);
    }
    let details = PaymentDetails {
        email,
        name: Some(billing_name.clone()),
        billing_name: Some(billing_name),
        address: Some(Address {
            line1: field("line1"),
            line2: None,
            postal_code: field("postal_code"),
            city: field("city"),
            state: None,
            country,
        }),
        tax_id,
    };
    match s.mutate(|w, now, ev| w.complete_checkout(&c.id, &details, now, ev)) {
        Ok(()) => {
            let c = find_checkout(&s, &secret).expect("exists");
            let to = c
                .success_url
                .clone()
                .unwrap_or_else(|| format!("{}/checkout/{}/confirmation", s.inner.config.public_url, c.client_secret));
            Redirect::to(&to).into_response()
        }
        Err(r) => {
            s.mutate(|w, now, ev| w.decline_checkout(&c.id, now, ev));
            render_checkout(&s, &c, Some(&r.detail), &form)
        }
    }
}

async fn expire(State(s): State<StandIn>, Path(secret): Path<String>) -> Response {
    let Some(c) = find_checkout(&s, &secret) else { return not_found_page("This checkout link is not valid.") };
    s.mutate(|w, now, ev| {
        if let Some(ck) = w.checkout_mut(&c.id) {
            if ck.status == "open" {
                ck.expires_at = now;
            }
        }
        w.expire_checkouts(now, ev);
    });
    Redirect::to(&format!("{}/checkout/{secret}", s.inner.config.public_url)).into_response()
}

async fn confirmation(State(s): State<StandIn>, Path(secret): Path<String>) -> Response {
    let Some(c) = find_checkout(&s, &secret) else { return not_found_page("This checkout link is not valid.") };
    page(
        "Thank you",
        &format!("<section><h1>Thank you</h1><p>Checkout status: <strong>{}</strong>.</p></section>", esc(&c.status)),
    )
    .into_response()
}

// ---- customer portal ----

fn session_customer(s: &StandIn, token: &str) -> Option<String> {
    let now = s.now();
    s.read(|w, _| w.sessions.iter().find(|x| x.token == token && x.expires_at > now).map(|x| x.customer_id.clone()))
}

async fn portal_page(
    State(s): State<StandIn>,
    Path(org): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let token = q.get("customer_session_token").cloned().unwrap_or_default();
    if org != s.inner.config.org_slug {
        return not_found_page("No such organization.");
    }
    let Some(customer_id) = session_customer(&s, &token) else {
        return (StatusCode::UNAUTHORIZED, page("Session expired", "<section><h1>This portal link has expired</h1><p>Open the billing portal again from the site you came from.</p></section>")).into_response();
    };
    let notice = q.get("done").map(|d| format!(r#"<p class="ok" role="status">{}</p>"#, esc(d))).unwrap_or_default();
    let body = s.read(|w, now| {
        let c = w.customer(&customer_id).expect("sessions point at customers");
        let return_url = w.sessions.iter().find(|x| x.token == token).and_then(|x| x.return_url.clone());
        let action = |fields: &str, label: &str, class: &str| {
            format!(
                r#"<form method="post" action="{}/{}/portal/action"><input type="hidden" name="token" value="{}">{fields}<button class="{class}" type="submit">{label}</button></form>"#,
                s.inner.config.public_url,
                esc(&w.org().slug),
                esc(&token)
            )
        };
        let mut subs = String::new();
        for sub in w.subscriptions.iter().filter(|x| x.customer_id == c.id && x.ended_at.is_none()) {
            let p = w.product(&sub.product_id).expect("catalogue product");
            let status = if sub.cancel_at_period_end { format!("Cancels on {}", sub.current_period_end.format("%B %-d, %Y")) } else { format!("{} · renews on {}", sub.status, sub.current_period_end.format("%B %-d, %Y")) };
            let mut actions = String::new();
            let id = esc(&sub.id);
            if sub.cancel_at_period_end {
                actions.push_str(&action(&format!(r#"<input type="hidden" name="op" value="uncancel"><input type="hidden" name="subscription" value="{id}">"#), "Keep my subscription", ""));
            } else {
                actions.push_str(&action(&format!(r#"<input type="hidden" name="op" value="cancel"><input type="hidden" name="subscription" value="{id}">"#), "Cancel at period end", "danger"));
                let interval = w.interval_of(&sub.product_id);
                for other in w.products.iter().filter(|o| o.recurring_interval.as_deref() == Some(interval.as_str()) && o.id != sub.product_id) {
                    actions.push_str(&action(
                        &format!(r#"<input type="hidden" name="op" value="switch"><input type="hidden" name="subscription" value="{id}"><input type="hidden" name="product" value="{}">"#, esc(&other.id)),
                        &format!("Switch to {} ({}/{interval})", esc(&other.name), format_cents(other.price_amount, &other.currency)),
                        "secondary",
                    ));
                }
            }
            subs.push_str(&format!(r#"<tr><td>{}</td><td>{}/{}</td><td>{}</td></tr><tr><td colspan="3"><div class="actions">{actions}</div></td></tr>"#, esc(&p.name), format_cents(sub.amount, &sub.currency), w.interval_of(&sub.product_id), esc(&status)));
        }
        if subs.is_empty() {
            subs = r#"<tr><td colspan="3">No active subscription.</td></tr>"#.into();
        }
        let mut orders = String::new();
        for o in w.orders.iter().rev().filter(|o| o.customer_id == c.id) {
            let invoice = if o.invoice_generated(now) {
                format!(r#"<a href="{}/_files/invoices/{}.pdf?sig={}">Download invoice</a>"#, s.inner.config.public_url, esc(&o.id), s.file_signature(&o.id))
            } else if o.invoice_ready_at.is_some() {
                "Preparing…".to_string()
            } else if o.status == "pending" {
                "Payment pending".to_string()
            } else {
                action(&format!(r#"<input type="hidden" name="op" value="invoice"><input type="hidden" name="order" value="{}">"#, esc(&o.id)), "Generate invoice", "secondary")
            };
            orders.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{invoice}</td></tr>",
                o.created_at.format("%Y-%m-%d"),
                esc(&o.description),
                format_cents(o.amount + o.tax_amount, &o.currency),
                esc(&o.status)
            ));
        }
        if orders.is_empty() {
            orders = r#"<tr><td colspan="5">No orders yet.</td></tr>"#.into();
        }
        let back = return_url.map(|u| format!(r#"<p><a href="{}">Back to the app</a></p>"#, esc(&u))).unwrap_or_default();
        format!(
            r#"<section><h1>Billing portal</h1>{notice}<p>{}</p>{back}</section>
<section aria-labelledby="subs"><h2 id="subs">Subscription</h2><table><tbody>{subs}</tbody></table></section>
<section aria-labelledby="orders"><h2 id="orders">Orders</h2><table><thead><tr><th>Date</th><th>Item</th><th>Amount</th><th>Status</th><th>Invoice</th></tr></thead><tbody>{orders}</tbody></table></section>"#,
            esc(&c.email)
        )
    });
    page("Billing portal", &body).into_response()
}

async fn portal_action(
    State(s): State<StandIn>,
    Path(org): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let token = form.get("token").cloned().unwrap_or_default();
    let Some(customer_id) = session_customer(&s, &token) else {
        return (
            StatusCode::UNAUTHORIZED,
            page("Session expired", "<section><h1>This portal link has expired</h1></section>"),
        )
            .into_response();
    };
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let owns_sub = |id: &str| s.read(|w, _| w.subscriptions.iter().any(|x| x.id == id && x.customer_id == customer_id));
    let result: Result<&str, String> = match get("op").as_str() {
        "cancel" if owns_sub(&get("subscription")) => s
            .mutate(|w, now, ev| w.cancel_at_period_end(&get("subscription"), true, None, None, now, ev))
            .map(|_| "Your subscription will end at the end of the period.")
            .map_err(|r| r.detail),
        "uncancel" if owns_sub(&get("subscription")) => s
            .mutate(|w, now, ev| w.cancel_at_period_end(&get("subscription"), false, None, None, now, ev))
            .map(|_| "Your subscription continues.")
            .map_err(|r| r.detail),
        "switch" if owns_sub(&get("subscription")) => s
            .mutate(|w, now, ev| w.change_product(&get("subscription"), &get("product"), "invoice", now, ev))
            .map(|_| "Your plan was changed.")
            .map_err(|r| r.detail),
        "invoice" => {
            let delay = s.inner.config.invoice_delay;
            let order = get("order");
            let scheduled = s.mutate(|w, now, _| {
                match w.orders.iter_mut().find(|o| o.id == order && o.customer_id == customer_id) {
                    Some(o)
                        if o.billing_name.is_some() && o.billing_address.is_some() && o.invoice_ready_at.is_none() =>
                    {
                        o.invoice_ready_at = Some(now + chrono::Duration::from_std(delay).unwrap_or_default());
                        Ok(true)
                    }
                    Some(o) if o.invoice_ready_at.is_some() => Ok(false),
                    Some(_) => Err("Add a billing name and address first.".to_string()),
                    None => Err("No such order.".to_string()),
                }
            });
            if scheduled == Ok(true) {
                s.announce_invoice_when_ready(order);
            }
            scheduled.map(|_| "Your invoice is being prepared; reload in a moment.")
        }
        _ => Err("That action is not available.".into()),
    };
    let msg = match result {
        Ok(m) => m.to_string(),
        Err(e) => e,
    };
    let done: String = url::form_urlencoded::byte_serialize(msg.as_bytes()).collect();
    Redirect::to(&format!("{}/{org}/portal?customer_session_token={token}&done={done}", s.inner.config.public_url))
        .into_response()
}

async fn invoice_file(
    State(s): State<StandIn>,
    Path(file): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(order_id) = file.strip_suffix(".pdf") else { return not_found_page("No such file.") };
    let sig_ok = q.get("sig").is_some_and(|sig| s.file_signature_ok(order_id, sig));
    if !sig_ok {
        return (StatusCode::FORBIDDEN, "This link is not valid.").into_response();
    }
    let doc = s.read(|w, now| {
        let o = w.orders.iter().find(|o| o.id == order_id && o.invoice_generated(now))?;
        let c = w.customer(&o.customer_id)?;
        Some(super::invoice::render(w.org(), o, c))
    });
    match doc {
        Some((number, pdf)) => (
            [
                (header::CONTENT_TYPE, "application/pdf".to_string()),
                (header::CONTENT_DISPOSITION, format!("attachment; filename=\"invoice-{number}.pdf\"")),
            ],
            pdf,
        )
            .into_response(),
        None => not_found_page("No invoice exists for this order yet."),
    }
}
