//! Tally's Polar client against the stand-in, over real HTTP: every operation round-trips,
//! errors arrive in Polar's shapes and become typed errors, the hosted pages move a checkout
//! through its statuses, and webhooks arrive signed, retried with the same id, in Polar's
//! sequences.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tally::server::config::Secret;
use tally::server::polar::client::{CheckoutCreate, CustomerUpdate, Proration};
use tally::server::polar::models::{Address, CheckoutStatus, SubscriptionStatus};
use tally::server::polar::webhook_signature::{self, KeyScheme, SignedHeaders};
use tally::server::polar::{PolarClient, PolarError};
use tally::server::standin::{product_id, StandIn, StandinConfig, WebhookEndpoint};

const TOKEN: &str = "polar_oat_test_token";
const CONTROLS: &str = "standin-controls-token-for-the-tests-only";
const LEGACY_SECRET: &str = "polar_whs_legacy-secret-for-tests";
const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// What a test webhook endpoint received: `(webhook-id, timestamp, signature, body)`.
type Received = Arc<Mutex<Vec<(String, String, String, String)>>>;

struct Polar {
    url: String,
    standin: StandIn,
    client: PolarClient,
    http: reqwest::Client,
}

/// A webhook endpoint that records deliveries and answers 500 to the first `fail_first`.
async fn endpoint(fail_first: usize) -> (String, Received) {
    let received: Received = Default::default();
    let r = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let r = r.clone();
            async move {
                let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                let mut list = r.lock().unwrap();
                list.push((
                    h("webhook-id"),
                    h("webhook-timestamp"),
                    h("webhook-signature"),
                    String::from_utf8_lossy(&body).into_owned(),
                ));
                if list.len() <= fail_first {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::ACCEPTED
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

async fn start(tune: impl FnOnce(&mut StandinConfig)) -> Polar {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mut config = StandinConfig::new(&url, TOKEN);
    config.payment_delay = (Duration::ZERO, Duration::ZERO);
    config.invoice_delay = Duration::from_millis(300);
    config.retry_base = Duration::from_millis(50);
    config.controls_token = Some(CONTROLS.into());
    tune(&mut config);
    let standin = StandIn::start(config);
    tokio::spawn(standin.clone().serve(listener));
    let client =
        PolarClient::new(url::Url::parse(&url).unwrap(), Secret::new(TOKEN)).with_retries(3, Duration::from_millis(20));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    Polar { url, standin, client, http }
}

impl Polar {
    async fn checkout(&self, external: &str, product: &str) -> tally::server::polar::models::Checkout {
        self.client
            .create_checkout(&CheckoutCreate {
                products: vec![product_id(product)],
                external_customer_id: Some(external.into()),
                customer_email: Some(format!("{external}@example.com")),
                success_url: Some("http://app.test/billing/success?checkout_id={CHECKOUT_ID}".into()),
                ..Default::default()
            })
            .await
            .unwrap()
    }

    /// Submits the hosted checkout form.
    async fn pay(&self, checkout_url: &str, card: &str, tax_id: &str) -> reqwest::Response {
        self.http
            .post(format!("{checkout_url}/confirm"))
            .form(&[
                ("email", "buyer@example.com"),
                ("billing_name", "Ada Lovelace"),
                ("country", "FR"),
                ("line1", "1 rue de la Paix"),
                ("postal_code", "75002"),
                ("city", "Paris"),
                ("tax_id", tax_id),
                ("card", card),
            ])
            .send()
            .await
            .unwrap()
    }

    async fn control(&self, path: &str, body: Value) -> reqwest::Response {
        self.http.post(format!("{}/_standin{path}", self.url)).bearer_auth(CONTROLS).json(&body).send().await.unwrap()
    }
}

/// Waits until `f` finds what the stand-in was to deliver (a synchronous look at `Received`).
async fn wait_for<T>(mut f: impl FnMut() -> Option<T>) -> T {
    crate::helpers::eventually("the stand-in delivers it", || std::future::ready(f().ok_or("not yet"))).await
}

fn types(received: &Received) -> Vec<String> {
    received
        .lock()
        .unwrap()
        .iter()
        .map(|(_, _, _, b)| serde_json::from_str::<Value>(b).unwrap()["type"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn requests_without_a_valid_token_get_polars_401_shapes() {
    let p = start(|_| {}).await;
    let res = p.http.get(format!("{}/v1/products/", p.url)).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer realm=\"polar\"");
    assert_eq!(res.json::<Value>().await.unwrap(), json!({ "error": "Unauthorized", "detail": "Unauthorized" }));

    let res = p.http.get(format!("{}/v1/products/", p.url)).bearer_auth("polar_oat_revoked").send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "invalid_token");
    let bad = PolarClient::new(url::Url::parse(&p.url).unwrap(), Secret::new("polar_oat_revoked"));
    assert_eq!(bad.list_products().await.unwrap_err(), PolarError::Unauthorized { code: "invalid_token".into() });

    let res = p.http.get(format!("{}/v1/nowhere", p.url)).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({ "detail": "Not Found" }));
}

#[tokio::test]
async fn bad_input_gets_422_with_loc_and_msg() {
    let p = start(|_| {}).await;
    let res = p.http.post(format!("{}/v1/checkouts/", p.url)).bearer_auth(TOKEN).json(&json!({})).send().await.unwrap();
    assert_eq!(res.status(), 422);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["detail"][0]["loc"], json!(["body", "products"]));
    assert_eq!(body["detail"][0]["msg"], "Field required");

    let res = p
        .http
        .post(format!("{}/v1/checkouts/", p.url))
        .bearer_auth(TOKEN)
        .json(&json!({ "products": ["not-a-uuid"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["detail"][0]["loc"], json!(["body", "products", 0]));

    let err = p
        .client
        .create_checkout(&CheckoutCreate { products: vec![uuid::Uuid::new_v4().to_string()], ..Default::default() })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PolarError::Invalid { issues, .. } if issues[0].msg == "Product does not exist."),
        "{err:?}"
    );

    let err = p.client.get_checkout(&uuid::Uuid::new_v4().to_string()).await.unwrap_err();
    assert_eq!(err, PolarError::NotFound { code: "ResourceNotFound".into(), detail: "Not found".into() });

    let err = p.client.create_customer("not an email", "u1", None).await.unwrap_err();
    assert!(matches!(&err, PolarError::Invalid { issues, .. } if issues[0].field() == Some("email")), "{err:?}");
}

#[tokio::test]
async fn the_catalogue_lists_plans_and_packs_with_benefit_metadata() {
    let p = start(|_| {}).await;
    let products = p.client.list_products().await.unwrap();
    assert_eq!(products.len(), 6);
    let pro_yearly = products.iter().find(|x| x.id == product_id("pro_yearly")).unwrap();
    assert_eq!(
        (pro_yearly.recurring_interval.as_deref(), pro_yearly.prices[0].price_amount),
        (Some("year"), Some(19000))
    );
    assert_eq!(pro_yearly.benefits[0].metadata["slug"], "pro", "the same benefit as monthly Pro");
    let pro = products.iter().find(|x| x.id == product_id("pro")).unwrap();
    assert!(pro.is_recurring);
    assert_eq!(pro.prices[0].price_amount, Some(1900));
    assert_eq!(pro.benefits[0].metadata["slug"], "pro");
    assert_eq!(pro.benefits[0].metadata["monthly_credits"], 5000);
    let pack = products.iter().find(|x| x.id == product_id("pack_50")).unwrap();
    assert!(!pack.is_recurring);
    assert_eq!(pack.metadata["credits"], 50);
}

#[tokio::test]
async fn paying_on_the_hosted_page_creates_customer_subscription_order_and_grants() {
    let (hook, received) = endpoint(0).await;
    let p = start(|c| {
        c.endpoints.push(WebhookEndpoint { url: hook.clone(), secret: LEGACY_SECRET.into(), standard: false })
    })
    .await;
    let checkout = p.checkout("user-1", "pro").await;
    assert_eq!(checkout.status, CheckoutStatus::Open);
    assert_eq!(checkout.success_url, format!("http://app.test/billing/success?checkout_id={}", checkout.id));
    assert!(checkout.url.starts_with(&format!("{}/checkout/polar_c_", p.url)));
    assert_eq!(checkout.external_customer_id.as_deref(), Some("user-1"));

    // The page shows the product and its price.
    let page = p.http.get(&checkout.url).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Pro") && page.contains("$19.00"), "{page}");
    assert!(page.contains(&format!("action=\"{}/confirm\"", checkout.url)), "the form posts to this checkout");

    // An invalid VAT id is refused on the page, and nothing is paid.
    let res = p.pay(&checkout.url, "4242 4242 4242 4242", "FR123").await;
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("not a FR VAT number"));
    assert_eq!(p.client.get_checkout(&checkout.id).await.unwrap().status, CheckoutStatus::Open);

    let res = p.pay(&checkout.url, "4242 4242 4242 4242", "FR61954506077").await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], checkout.success_url.as_str());

    let after = p.client.get_checkout(&checkout.id).await.unwrap();
    assert_eq!(after.status, CheckoutStatus::Succeeded);
    assert!(after.subscription_id.is_some());

    let state = p.client.customer_state("user-1").await.unwrap();
    assert!(state.has_benefit("slug", "pro"));
    assert_eq!(state.active_subscriptions[0].status, SubscriptionStatus::Active);
    let customer = p.client.get_customer("user-1").await.unwrap();
    assert_eq!(customer.tax_id, Some(("FR61954506077".into(), "eu_vat".into())));
    assert_eq!(customer.billing_address.unwrap().city.as_deref(), Some("Paris"));

    let orders = p.client.list_orders("user-1", 1, 10).await.unwrap();
    assert_eq!(orders.pagination.total_count, 1);
    assert_eq!(orders.items[0].billing_reason.as_str(), "subscription_create");
    assert!(orders.items[0].paid);

    // Polar's sequence for a new subscription, every delivery signed with the legacy key.
    let seen = wait_for(|| {
        let t = types(&received);
        (t.last().map(String::as_str) == Some("customer.state_changed") && t.contains(&"order.paid".to_string()))
            .then_some(t)
    })
    .await;
    let pos = |t: &str| seen.iter().position(|x| x == t).unwrap_or_else(|| panic!("no {t} in {seen:?}"));
    assert!(pos("checkout.created") < pos("customer.created"));
    assert!(pos("customer.created") < pos("subscription.created"));
    assert!(pos("subscription.created") < pos("order.created"));
    assert!(pos("order.created") < pos("subscription.active"));
    assert!(pos("subscription.active") < pos("order.paid"));
    assert!(seen.contains(&"benefit_grant.created".to_string()));
    let now = chrono::Utc::now().timestamp();
    for (id, ts, sig, body) in received.lock().unwrap().iter() {
        let headers = SignedHeaders { id: Some(id), timestamp: Some(ts), signature: Some(sig) };
        assert_eq!(webhook_signature::verify(LEGACY_SECRET, headers, body.as_bytes(), now), Ok(KeyScheme::Legacy));
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["api_version"], "2026-04");
    }
}

#[tokio::test]
async fn orders_carry_vat_by_country_reverse_charged_for_a_valid_vat_id_and_refunds_split_it() {
    let p = start(|_| {}).await;
    // A French consumer: 20 % VAT on the 5.00 pack.
    let checkout = p.checkout("user_vat_1", "pack_50").await;
    assert_eq!(p.pay(&checkout.url, "4242424242424242", "").await.status(), 303);
    let orders = p.client.list_orders("user_vat_1", 1, 10).await.unwrap().items;
    let raw: Value = p
        .http
        .get(format!("{}/v1/orders/{}", p.url, orders[0].id))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (raw["net_amount"].as_i64(), raw["tax_amount"].as_i64(), raw["total_amount"].as_i64()),
        (Some(500), Some(100), Some(600))
    );
    assert_eq!(raw["items"][0]["tax_amount"], 100);
    // The same buyer as a French business with a valid VAT id: reverse charge, no tax.
    let checkout = p.checkout("user_vat_1", "pack_50").await;
    assert_eq!(p.pay(&checkout.url, "4242424242424242", "FR61954506077").await.status(), 303);
    let listed = p.client.list_orders("user_vat_1", 1, 10).await.unwrap().items;
    let order = listed.iter().find(|o| o.id != orders[0].id).unwrap();
    let raw2: Value = p
        .http
        .get(format!("{}/v1/orders/{}", p.url, order.id))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((raw2["tax_amount"].as_i64(), raw2["total_amount"].as_i64()), (Some(0), Some(500)));
    // Refunds are net amounts; the tax goes back in proportion, the rest with the last one.
    let refund: Value = p
        .http
        .post(format!("{}/v1/refunds/", p.url))
        .bearer_auth(TOKEN)
        .json(&json!({ "order_id": orders[0].id, "reason": "customer_request", "amount": 150 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((refund["amount"].as_i64(), refund["tax_amount"].as_i64()), (Some(150), Some(30)));
    let raw: Value = p
        .http
        .get(format!("{}/v1/orders/{}", p.url, orders[0].id))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (raw["status"].as_str(), raw["refunded_amount"].as_i64(), raw["refunded_tax_amount"].as_i64()),
        (Some("partially_refunded"), Some(150), Some(30))
    );
    assert_eq!((raw["refundable_amount"].as_i64(), raw["refundable_tax_amount"].as_i64()), (Some(350), Some(70)));
    let too_much = p
        .http
        .post(format!("{}/v1/refunds/", p.url))
        .bearer_auth(TOKEN)
        .json(&json!({ "order_id": orders[0].id, "reason": "customer_request", "amount": 351 }))
        .send()
        .await
        .unwrap();
    assert_eq!(too_much.status(), 422, "refunds are capped at the net amount left");
    let rest: Value = p
        .http
        .post(format!("{}/v1/refunds/", p.url))
        .bearer_auth(TOKEN)
        .json(&json!({ "order_id": orders[0].id, "reason": "customer_request", "amount": 350 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rest["tax_amount"], 70);
    let raw: Value = p
        .http
        .get(format!("{}/v1/orders/{}", p.url, orders[0].id))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (raw["status"].as_str(), raw["refunded_amount"].as_i64(), raw["refunded_tax_amount"].as_i64()),
        (Some("refunded"), Some(500), Some(100))
    );
}

#[tokio::test]
async fn a_declined_card_returns_the_checkout_to_open_and_expiry_ends_it() {
    let p = start(|_| {}).await;
    let checkout = p.checkout("user-2", "pack_50").await;
    let res = p.pay(&checkout.url, "4000 0000 0000 0002", "").await;
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("Your card was declined."));
    assert_eq!(p.client.get_checkout(&checkout.id).await.unwrap().status, CheckoutStatus::Open);
    assert!(p.client.customer_state("user-2").await.is_err(), "no customer after a declined card");

    let res = p.http.post(format!("{}/expire", checkout.url)).send().await.unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(p.client.get_checkout(&checkout.id).await.unwrap().status, CheckoutStatus::Expired);
    assert_eq!(p.http.get(&checkout.url).send().await.unwrap().status(), 410);
}

#[tokio::test]
async fn webhooks_are_retried_with_the_same_id_and_a_fresh_timestamp_under_the_standard_scheme() {
    let (hook, received) = endpoint(2).await;
    let p = start(|c| {
        c.endpoints.push(WebhookEndpoint { url: hook.clone(), secret: STANDARD_SECRET.into(), standard: true })
    })
    .await;
    p.checkout("user-3", "pro").await;
    let got = wait_for(|| {
        let r = received.lock().unwrap();
        (r.len() >= 3).then(|| r.clone())
    })
    .await;
    assert_eq!(got[0].0, got[1].0, "a retry keeps the webhook-id");
    assert_eq!(got[1].0, got[2].0);
    let now = chrono::Utc::now().timestamp();
    for (id, ts, sig, body) in &got {
        let headers = SignedHeaders { id: Some(id), timestamp: Some(ts), signature: Some(sig) };
        assert_eq!(webhook_signature::verify(STANDARD_SECRET, headers, body.as_bytes(), now), Ok(KeyScheme::Standard));
    }
    // The endpoint has answered the third attempt; the stand-in records it once the answer is in.
    let log = wait_for(|| {
        let log = p.standin.deliveries();
        log.iter().any(|d| d.status == Some(202)).then_some(log)
    })
    .await;
    assert_eq!(log.iter().filter(|d| d.status == Some(500)).count(), 2);
    assert_eq!(log.last().unwrap().status, Some(202));
    assert_eq!(log.last().unwrap().attempt, 3);
}

#[tokio::test]
async fn invoices_are_generated_asynchronously_as_a_pdf_with_the_billing_details() {
    let p = start(|_| {}).await;
    let checkout = p.checkout("user-4", "pack_100").await;
    assert_eq!(p.pay(&checkout.url, "4242424242424242", "FR61954506077").await.status(), 303);
    let order = p.client.list_orders("user-4", 1, 10).await.unwrap().items.remove(0);
    assert_eq!(p.client.invoice(&order.id).await.unwrap(), None, "no invoice before generation");
    p.client.generate_invoice(&order.id).await.unwrap();
    assert_eq!(p.client.invoice(&order.id).await.unwrap(), None, "not ready yet");
    let url = crate::helpers::eventually("the invoice is generated", || async {
        p.client.invoice(&order.id).await.unwrap().map(|u| u.url).ok_or("not ready")
    })
    .await;
    assert!(p.client.get_order(&order.id).await.unwrap().is_invoice_generated);
    let res = p.http.get(&url).send().await.unwrap();
    assert_eq!(res.headers()["content-type"], "application/pdf");
    let pdf = res.bytes().await.unwrap();
    assert!(pdf.starts_with(b"%PDF-1.4"));
    let text = String::from_utf8_lossy(&pdf);
    for needle in ["Ada Lovelace", "1 rue de la Paix", "75002 Paris", "France", "FR61954506077", "$9.00"] {
        assert!(text.contains(needle), "invoice lacks {needle}");
    }
    // A tampered link is refused.
    assert_eq!(p.http.get(url.replace("sig=", "sig=0")).send().await.unwrap().status(), 403);
}

#[tokio::test]
async fn subscriptions_cancel_uncancel_switch_and_revoke() {
    let p = start(|_| {}).await;
    let checkout = p.checkout("user-5", "pro").await;
    p.pay(&checkout.url, "4242424242424242", "").await;
    let sub_id = p.client.get_checkout(&checkout.id).await.unwrap().subscription_id.unwrap();

    let s = p.client.set_cancel_at_period_end(&sub_id, true).await.unwrap();
    assert!(s.cancel_at_period_end);
    assert_eq!(s.ends_at, Some(s.current_period_end));
    assert!(
        p.client.customer_state("user-5").await.unwrap().has_benefit("slug", "pro"),
        "access continues until the period ends"
    );
    let s = p.client.set_cancel_at_period_end(&sub_id, false).await.unwrap();
    assert!(!s.cancel_at_period_end && s.ends_at.is_none());

    let s = p.client.change_product(&sub_id, &product_id("business"), Proration::Invoice).await.unwrap();
    assert_eq!(s.product_id, product_id("business"));
    let state = p.client.customer_state("user-5").await.unwrap();
    assert!(state.has_benefit("slug", "business") && !state.has_benefit("slug", "pro"));
    let orders = p.client.all_orders("user-5").await.unwrap();
    assert_eq!(orders.len(), 2);
    assert_eq!(orders[0].billing_reason.as_str(), "subscription_update");

    let s = p.client.revoke_subscription(&sub_id).await.unwrap();
    assert_eq!(s.status, SubscriptionStatus::Canceled);
    assert!(p.client.customer_state("user-5").await.unwrap().granted_benefits.is_empty());
    let err = p.client.set_cancel_at_period_end(&sub_id, true).await.unwrap_err();
    assert!(matches!(err, PolarError::Forbidden { ref code, .. } if code == "AlreadyCanceledSubscription"), "{err:?}");
}

#[tokio::test]
async fn renewals_cycle_on_the_clock_and_a_failed_payment_is_past_due() {
    let (hook, received) = endpoint(0).await;
    let p = start(|c| {
        c.endpoints.push(WebhookEndpoint { url: hook.clone(), secret: LEGACY_SECRET.into(), standard: false })
    })
    .await;
    let checkout = p.checkout("user-6", "pro").await;
    p.pay(&checkout.url, "4242424242424242", "").await;
    let sub_id = p.client.get_checkout(&checkout.id).await.unwrap().subscription_id.unwrap();
    let first = p.client.get_subscription(&sub_id).await.unwrap();

    assert_eq!(p.control("/clock/advance", json!({ "seconds": 32 * 86400 })).await.status(), 200);
    let renewed = p.client.get_subscription(&sub_id).await.unwrap();
    assert_eq!(renewed.current_period_start, first.current_period_end);
    assert_eq!(renewed.status, SubscriptionStatus::Active);
    let orders = p.client.all_orders("user-6").await.unwrap();
    assert_eq!(orders.iter().filter(|o| o.billing_reason.as_str() == "subscription_cycle" && o.paid).count(), 1);
    wait_for(|| types(&received).contains(&"subscription.cycled".to_string()).then_some(())).await;

    assert_eq!(p.control("/renewals/fail-next", json!({})).await.status(), 204);
    assert_eq!(p.control(&format!("/subscriptions/{sub_id}/renew"), json!({})).await.status(), 200);
    assert_eq!(p.client.get_subscription(&sub_id).await.unwrap().status, SubscriptionStatus::PastDue);
    wait_for(|| types(&received).contains(&"subscription.past_due".to_string()).then_some(())).await;
    // Dunning: the subscription is no longer active, but benefits stay granted until Polar
    // gives up and revokes it.
    let state = p.client.customer_state("user-6").await.unwrap();
    assert!(state.active_subscriptions.is_empty());
    assert!(state.has_benefit("slug", "pro"));
}

#[tokio::test]
async fn customers_are_created_updated_and_deleted_by_external_id() {
    let p = start(|_| {}).await;
    let c = p.client.create_customer("a@example.com", "user-7", Some("Ada")).await.unwrap();
    assert_eq!(c.external_id.as_deref(), Some("user-7"));
    let dup = p.client.create_customer("b@example.com", "user-7", None).await.unwrap_err();
    assert!(matches!(&dup, PolarError::Invalid { issues, .. } if issues[0].field() == Some("external_id")), "{dup:?}");

    // A tax id needs a country, and must match its format.
    let err = p
        .client
        .update_customer("user-7", &CustomerUpdate { tax_id: Some(Some("DE123456789".into())), ..Default::default() })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PolarError::Invalid { issues, .. } if issues[0].msg == "Country is required to validate tax ID."),
        "{err:?}"
    );
    let address = Address {
        line1: Some("Unter den Linden 1".into()),
        city: Some("Berlin".into()),
        postal_code: Some("10117".into()),
        country: "DE".into(),
        ..Default::default()
    };
    let err = p
        .client
        .update_customer(
            "user-7",
            &CustomerUpdate {
                billing_address: Some(address.clone()),
                tax_id: Some(Some("DE123".into())),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(&err, PolarError::Invalid { issues, .. } if issues[0].field() == Some("tax_id")), "{err:?}");
    let c = p
        .client
        .update_customer(
            "user-7",
            &CustomerUpdate {
                billing_name: Some("Ada GmbH".into()),
                billing_address: Some(address),
                tax_id: Some(Some("DE123456789".into())),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(c.tax_id, Some(("DE123456789".into(), "eu_vat".into())));
    assert_eq!(c.billing_name.as_deref(), Some("Ada GmbH"));

    let session = p.client.create_customer_session("user-7", Some("http://app.test/billing")).await.unwrap();
    assert!(session.token.starts_with("polar_cst_"));
    let portal = p.http.get(&session.customer_portal_url).send().await.unwrap();
    assert_eq!(portal.status(), 200);
    assert!(portal.text().await.unwrap().contains("a@example.com"));
    let err = p.client.create_customer_session("nobody", None).await.unwrap_err();
    assert!(
        matches!(&err, PolarError::Invalid { issues, .. } if issues[0].msg == "Customer does not exist."),
        "{err:?}"
    );

    p.client.delete_customer("user-7", true).await.unwrap();
    assert!(matches!(p.client.get_customer("user-7").await.unwrap_err(), PolarError::NotFound { .. }));
    // The external id is free again.
    p.client.create_customer("a2@example.com", "user-7", None).await.unwrap();
}

#[tokio::test]
async fn usage_events_are_idempotent_by_external_id() {
    let p = start(|_| {}).await;
    let e = |id: &str| tally::server::polar::client::UsageEvent {
        name: "text.stats".into(),
        external_customer_id: "user-8".into(),
        external_id: id.into(),
        timestamp: None,
        metadata: Default::default(),
    };
    let r = p.client.ingest_events(&[e("a"), e("b")]).await.unwrap();
    assert_eq!((r.inserted, r.duplicates), (2, 0));
    let r = p.client.ingest_events(&[e("a"), e("c")]).await.unwrap();
    assert_eq!((r.inserted, r.duplicates), (1, 1));
    assert!(p.client.list_customer_meters("user-8").await.unwrap().is_empty());
}

#[tokio::test]
async fn the_client_retries_what_is_safe_and_honours_retry_after() {
    let p = start(|_| {}).await;
    // 429 with retry-after: retried after the wait, then succeeds.
    p.control("/outage", json!({ "kind": "rate_limit", "count": 1, "retry_after": 1 })).await;
    let started = std::time::Instant::now();
    assert_eq!(p.client.list_products().await.unwrap().len(), 6);
    assert!(started.elapsed() >= Duration::from_millis(900), "waited for retry-after");

    // Two 500s: a GET is retried through them.
    p.control("/outage", json!({ "kind": "error", "count": 2 })).await;
    assert_eq!(p.client.list_products().await.unwrap().len(), 6);

    // A 500 on a create is not repeated (it might have happened): the error surfaces, and the
    // next request goes through (only one request was spent on the outage).
    p.control("/outage", json!({ "kind": "error", "count": 1 })).await;
    let err = p.client.create_customer("c@example.com", "user-9", None).await.unwrap_err();
    assert_eq!(err, PolarError::Server { status: 500 });
    assert!(err.is_unavailable());
    p.client.create_customer("c@example.com", "user-9", None).await.unwrap();

    // A lasting outage: GETs give up after their attempts with a typed error.
    p.control("/outage", json!({ "kind": "error", "count": 100 })).await;
    assert_eq!(p.client.get_customer("user-9").await.unwrap_err(), PolarError::Server { status: 500 });
    p.http.delete(format!("{}/_standin/outage", p.url)).bearer_auth(CONTROLS).send().await.unwrap();

    // Unreachable: a typed error, not a panic.
    let gone = PolarClient::new(url::Url::parse("http://127.0.0.1:9").unwrap(), Secret::new(TOKEN))
        .with_retries(2, Duration::from_millis(10));
    assert!(matches!(gone.list_products().await.unwrap_err(), PolarError::Unreachable(_)));
}

#[tokio::test]
async fn the_circuit_breaker_fails_fast_while_polar_is_down_and_probes_when_it_may_be_back() {
    let p = start(|_| {}).await;
    let client = PolarClient::new(url::Url::parse(&p.url).unwrap(), Secret::new(TOKEN))
        .with_retries(1, Duration::from_millis(1))
        .with_breaker(3, Duration::from_millis(400));
    p.control("/outage", json!({ "kind": "error", "count": 100 })).await;
    for _ in 0..3 {
        assert!(matches!(client.list_products().await, Err(PolarError::Server { .. })));
    }
    assert_eq!(client.breaker().state_name(), "open");
    let seen = p.standin.requests().len();
    let e = client.list_products().await.unwrap_err();
    assert!(matches!(&e, PolarError::Unreachable(m) if m.contains("circuit open")), "{e}");
    assert!(e.is_unavailable());
    assert_eq!(p.standin.requests().len(), seen, "an open circuit does not call Polar");
    p.http.delete(format!("{}/_standin/outage", p.url)).bearer_auth(CONTROLS).send().await.unwrap();
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(client.list_products().await.is_ok(), "the probe goes through and closes the circuit");
    assert_eq!(client.breaker().state_name(), "closed");
    assert_eq!(client.breaker().opened_total(), 1);
}

#[tokio::test]
async fn polar_rate_limits_the_stand_in_too() {
    let p = start(|c| c.rate_limit_per_minute = Some(5)).await;
    for _ in 0..5 {
        assert_eq!(
            p.http.get(format!("{}/v1/products/", p.url)).bearer_auth(TOKEN).send().await.unwrap().status(),
            200
        );
    }
    let res = p.http.get(format!("{}/v1/products/", p.url)).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(res.text().await.unwrap(), "", "Polar's 429 has an empty body");
}

#[tokio::test]
async fn metered_prices_bill_the_overage_received_in_a_period_and_meters_announce_their_recompute() {
    let (hook, received) = endpoint(0).await;
    let p = start(|c| {
        c.endpoints.push(WebhookEndpoint { url: hook.clone(), secret: LEGACY_SECRET.into(), standard: false });
        c.state_lag = Duration::from_millis(200);
    })
    .await;
    // The monthly plans carry a metered price on the overage meter; the yearly ones do not.
    let products = p.client.list_products().await.unwrap();
    let pro = products.iter().find(|x| x.id == product_id("pro")).unwrap();
    let metered = pro.prices.iter().find(|x| x.amount_type == "metered_unit").expect("a metered price");
    assert_eq!((metered.unit_amount.as_deref(), metered.cap_amount), (Some("1"), Some(5000)));
    assert_eq!(
        metered.overage_terms(),
        Some(tally::domain::usage::OverageTerms { unit_cents: 1, cap_cents: Some(5000) })
    );
    let yearly = products.iter().find(|x| x.id == product_id("pro_yearly")).unwrap();
    assert!(yearly.prices.iter().all(|x| x.amount_type != "metered_unit"));

    let checkout = p.checkout("user-9", "pro").await;
    assert_eq!(p.pay(&checkout.url, "4242 4242 4242 4242", "").await.status(), 303);
    let sub = p.client.list_subscriptions("user-9").await.unwrap().remove(0);
    let meter = tally::server::standin::world::overage_meter_id();
    assert!(sub.overage_terms(Some(&meter)).is_some(), "the subscription carries its metered price");
    // Only a metered price on the overage meter bills overage: on any other meter, or with no
    // overage meter configured, Tally offers none.
    assert_eq!(sub.overage_terms(Some(&tally::server::standin::world::credits_meter_id())), None);
    assert_eq!(sub.overage_terms(None), None);

    // 7,000 overage credits (past the $50 cap) and some usage; one event sent twice.
    let e = |id: &str, name: &str, credits: i64| tally::server::polar::client::UsageEvent {
        name: name.into(),
        external_customer_id: "user-9".into(),
        external_id: id.into(),
        timestamp: None,
        metadata: [("credits".to_string(), json!(credits))].into_iter().collect(),
    };
    let r = p
        .client
        .ingest_events(&[
            e("o1", "credits.overage", 4000),
            e("s1", "credits.spent", 9000),
            e("o2", "credits.overage", 3000),
        ])
        .await
        .unwrap();
    assert_eq!((r.inserted, r.duplicates), (3, 0));
    assert_eq!(p.client.ingest_events(&[e("o1", "credits.overage", 4000)]).await.unwrap().duplicates, 1);

    // The recompute is announced: customer.state_changed with both meters active.
    let state = wait_for(|| {
        received.lock().unwrap().iter().rev().find_map(|(_, _, _, body)| {
            let v: Value = serde_json::from_str(body).ok()?;
            (v["type"] == "customer.state_changed" && v["data"]["active_meters"].as_array()?.len() == 2).then_some(v)
        })
    })
    .await;
    let consumed: Vec<f64> = state["data"]["active_meters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["consumed_units"].as_f64().unwrap())
        .collect();
    assert_eq!(consumed, [9000.0, 7000.0]);
    let meters = p.client.list_customer_meters("user-9").await.unwrap();
    assert!(meters[1].counts_event("credits.overage") && !meters[1].counts_event("credits.spent"));

    // At the cycle end: one order for the overage, capped at $50, with tax as any order.
    assert_eq!(p.control(&format!("/subscriptions/{}/renew", sub.id), Value::Null).await.status(), 200);
    let orders = p.client.list_orders("user-9", 1, 10).await.unwrap().items;
    let billed: Vec<_> = orders.iter().filter(|o| o.billing_reason.as_str() == "subscription_meter_cycle").collect();
    assert_eq!(billed.len(), 1, "{orders:?}");
    assert_eq!((billed[0].net_amount, billed[0].status.as_str()), (Some(5000), "paid"));
    assert!(billed[0].tax_amount > 0, "VAT on the overage as on the plan (France)");
    // The next period starts empty: another renewal bills nothing more.
    assert_eq!(p.control(&format!("/subscriptions/{}/renew", sub.id), Value::Null).await.status(), 200);
    let orders = p.client.list_orders("user-9", 1, 10).await.unwrap().items;
    assert_eq!(orders.iter().filter(|o| o.billing_reason.as_str() == "subscription_meter_cycle").count(), 1);
}

#[tokio::test]
async fn meter_credits_are_granted_each_cycle_and_the_metered_price_bills_the_negative_balance() {
    let p = start(|c| c.meter_credits = true).await;
    let products = p.client.list_products().await.unwrap();
    let pro = products.iter().find(|x| x.id == product_id("pro")).unwrap();
    let credit = pro.benefits.iter().find(|b| b.benefit_type == "meter_credit").expect("a meter_credit benefit");
    assert_eq!(credit.description, "5000 API credits a month");

    let checkout = p.checkout("user-10", "pro").await;
    assert_eq!(p.pay(&checkout.url, "4242 4242 4242 4242", "").await.status(), 303);
    let sub = p.client.list_subscriptions("user-10").await.unwrap().remove(0);
    // The grant credits the meter at once (a meter.credited system event).
    let meters = p.client.list_customer_meters("user-10").await.unwrap();
    assert_eq!(meters.len(), 1);
    assert_eq!((meters[0].credited_units, meters[0].consumed_units, meters[0].balance), (5000.0, 0.0, 5000.0));
    let state = p.client.customer_state("user-10").await.unwrap();
    assert!(state.granted_benefits.iter().any(|g| g.benefit_type == "meter_credit"));
    assert_eq!(state.active_meters.len(), 1);

    // 6,200 credits used: 1,200 past the period's 5,000 credits.
    let e = |id: &str, credits: i64| tally::server::polar::client::UsageEvent {
        name: "credits.spent".into(),
        external_customer_id: "user-10".into(),
        external_id: id.into(),
        timestamp: None,
        metadata: [("credits".to_string(), json!(credits))].into_iter().collect(),
    };
    p.client.ingest_events(&[e("a", 6000), e("b", 200)]).await.unwrap();
    let meters = p.client.list_customer_meters("user-10").await.unwrap();
    assert_eq!((meters[0].consumed_units, meters[0].balance), (6200.0, -1200.0));

    // The cycle end bills the negative balance ($0.01 a credit), then the meter starts again:
    // reset, and credited the new period's 5,000.
    assert_eq!(p.control(&format!("/subscriptions/{}/renew", sub.id), Value::Null).await.status(), 200);
    let orders = p.client.list_orders("user-10", 1, 10).await.unwrap().items;
    let billed: Vec<_> = orders.iter().filter(|o| o.billing_reason.as_str() == "subscription_meter_cycle").collect();
    assert_eq!(billed.len(), 1);
    assert_eq!(billed[0].net_amount, Some(1200));
    let meters = p.client.list_customer_meters("user-10").await.unwrap();
    assert_eq!((meters[0].credited_units, meters[0].consumed_units, meters[0].balance), (5000.0, 0.0, 5000.0));
    // Within the credits, the next cycle bills nothing.
    p.client.ingest_events(&[e("c", 4999)]).await.unwrap();
    assert_eq!(p.control(&format!("/subscriptions/{}/renew", sub.id), Value::Null).await.status(), 200);
    let orders = p.client.list_orders("user-10", 1, 10).await.unwrap().items;
    assert_eq!(orders.iter().filter(|o| o.billing_reason.as_str() == "subscription_meter_cycle").count(), 1);
}
