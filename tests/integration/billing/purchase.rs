//! Buying: a checkout to access that is real, packs, someone else's or a bad checkout, declined
//! and expired payments, billing details and invoices, trials, yearly plans, and the success
//! page without JavaScript.

use super::*;

#[tokio::test]
async fn sign_up_creates_the_polar_customer_in_the_background() {
    let app = spawn_app().await;
    let user = app.sign_up("lifecycle@example.com").await;
    let (status, id) = eventually("the Polar customer is linked", || async {
        let row: Option<(String, Option<String>)> =
            sqlx::query_as("SELECT status, polar_customer_id FROM polar_customers WHERE user_id = $1")
                .bind(user)
                .fetch_optional(&app.pool)
                .await
                .unwrap();
        match row {
            Some((s, Some(id))) => Ok((s, id)),
            other => Err(other),
        }
    })
    .await;
    assert_eq!(status, "linked");
    // Polar has it under the user's id.
    let standin = format!("{}/polar/v1/customers/external/{user}", app.address);
    let c: Value =
        reqwest::Client::new().get(standin).bearer_auth(standin_token()).send().await.unwrap().json().await.unwrap();
    assert_eq!(c["id"], id.as_str());
    assert_eq!(c["email"], "lifecycle@example.com");
}

#[tokio::test]
async fn paying_for_pro_confirms_only_once_access_is_real_then_billing_shows_it() {
    let app = spawn_app().await;
    let user = app.sign_up("buyer@example.com").await;
    assert!(app.page("/billing").await.contains("<p class=\"plan-name\">Free"));

    let url = app.go("/api/billing/checkout", &[("item", "pro")]).await;
    assert!(url.starts_with(&format!("{}/polar/checkout/polar_c_", app.address)), "{url}");
    let checkout_id = app.pay(&url, "4242 4242 4242 4242").await.expect("paid");
    let ready = app.wait_ready(&checkout_id).await;
    assert_eq!(ready, serde_json::json!({ "Ready": { "what": "Pro", "is_plan": true } }));

    // The webhooks the stand-in delivered set up the plan and its allotment.
    let billing = page_until(&app, "/billing", "Renews on").await;
    assert!(billing.contains("<p class=\"plan-name\">Pro"), "{billing}");
    assert!(billing.contains("Renews on"));
    assert!(billing.contains("Cancel at period end"));
    assert!(app.balance(user).await.allotment > 0, "the period's allotment has begun");
    // The meter: available now, still to come, and when the next credits arrive.
    assert!(billing.contains("more to come day by day until renewal"), "{billing}");
    assert!(billing.contains("Next credits arrive") && billing.contains("<time datetime=\""), "{billing}");
    let pricing = app.page("/pricing").await;
    let pro_card = pricing.split("<h2 id=\"plan-pro\">").nth(1).unwrap();
    assert!(pro_card.split("plan__cta").nth(1).unwrap().contains("Your current plan"));

    // A second plan checkout is refused: plan changes go through the subscription.
    let res = call(&app, "/api/billing/checkout", &[("item", "business")]).await;
    assert_eq!(res.status(), 409);

    // Cancel at period end, then undo, through Polar; the page follows at once.
    app.go("/api/billing/cancel", &[("cancel", "true")]).await;
    let billing = app.page("/billing").await;
    assert!(billing.contains("it will not renew") && billing.contains("Keep my subscription"), "{billing}");
    app.go("/api/billing/cancel", &[("cancel", "false")]).await;
    assert!(app.page("/billing").await.contains("Renews on"));

    // Upgrade to Business: at once, with its benefit.
    // Pro's allotment arrives by webhook; wait for it, so the difference is the upgrade's.
    allotment_reaches(&app, user, 5000).await;
    assert_eq!(app.go("/api/billing/change-plan", &[("plan", "business")]).await, "/billing?done=upgraded");
    page_until(&app, "/billing", "<p class=\"plan-name\">Business").await;
    assert!(tally::server::ledger::problems(&app.pool, None).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_pack_is_confirmed_when_its_credits_are_in_the_ledger() {
    let app = spawn_app().await;
    let user = app.sign_up("packs@example.com").await;
    let before = app.balance(user).await.total;
    let url = app.go("/api/billing/checkout", &[("item", "pack_100")]).await;
    let checkout_id = app.pay(&url, "4242424242424242").await.unwrap();
    assert_eq!(
        app.wait_ready(&checkout_id).await,
        serde_json::json!({ "Ready": { "what": "100 credits", "is_plan": false } })
    );
    let after = app.balance(user).await;
    assert_eq!(after.total, before + 100);
    assert_eq!(after.purchased, 100);
}

#[tokio::test]
async fn someone_elses_checkout_is_not_found_and_bad_items_are_refused() {
    let app = spawn_app().await;
    app.sign_up("alice@example.com").await;
    let url = app.go("/api/billing/checkout", &[("item", "pro")]).await;
    let checkout_id = app.pay(&url, "4242424242424242").await.unwrap();

    let other = spawn_app_on(app.pool.clone(), app.db_name.clone(), &[]).await;
    other.sign_up("mallory@example.com").await;
    let (code, _) = other.checkout_status(&checkout_id).await;
    assert_eq!(code, 404);
    let (code, _) = other.checkout_status("not-a-uuid").await;
    assert_eq!(code, 404);
    let page = other
        .client
        .get(format!("{}/billing/success?checkout_id={checkout_id}", other.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Purchase not found"), "{page}");

    // Only slugs from the server's map: no product ids, prices or users from the browser.
    let res =
        call(&other, "/api/billing/checkout", &[("item", tally::server::standin::product_id("pro").as_str())]).await;
    assert_eq!(res.status(), 422);
    // Anonymous visitors are sent to sign in.
    let anon = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let res = anon
        .post(format!("{}/api/billing/checkout", app.address))
        .header("accept", "text/html")
        .header("origin", &app.address)
        .form(&[("item", "pro")])
        .send()
        .await
        .unwrap();
    assert!(res.status().is_redirection());
    assert_eq!(res.headers()["location"], "/login?next=%2Fpricing");
}

#[tokio::test]
async fn a_declined_card_leaves_no_purchase_and_an_expired_checkout_says_so() {
    let app = spawn_app().await;
    let user = app.sign_up("declined@example.com").await;
    let url = app.go("/api/billing/checkout", &[("item", "pro")]).await;
    assert_eq!(app.pay(&url, "4000 0000 0000 0002").await, None, "declined: no redirect to success");
    app.client.post(format!("{url}/expire")).send().await.unwrap();
    assert_eq!(app.client.get(&url).send().await.unwrap().status(), 410);

    let token = standin_token();
    let polar = |path: String| {
        let token = token.clone();
        async move {
            reqwest::Client::new().get(path).bearer_auth(token).send().await.unwrap().json::<Value>().await.unwrap()
        }
    };
    let checkouts = polar(format!("{}/polar/v1/checkouts/", app.address)).await;
    let id = checkouts["items"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(app.checkout_status(&id).await, (200, Value::String("Expired".into())));
    assert!(app.page(&format!("/billing/success?checkout_id={id}")).await.contains("This checkout expired"));
    let orders = polar(format!("{}/polar/v1/orders/?external_customer_id={user}", app.address)).await;
    assert_eq!(orders["items"].as_array().unwrap().len(), 0, "no order after a declined card");
    assert_eq!(app.balance(user).await.purchased, 0);
}

#[tokio::test]
async fn billing_details_are_checked_saved_and_pushed_to_polar_and_invoices_follow() {
    let app = spawn_app().await;
    let user = app.sign_up("invoices@example.com").await;
    let form = |tax: &'static str| {
        vec![
            ("company", "Ada GmbH"),
            ("line1", "Unter den Linden 1"),
            ("postal_code", "10117"),
            ("city", "Berlin"),
            ("country", "DE"),
            ("tax_id", tax),
        ]
    };
    let res = call(&app, "/api/billing/details", &form("DE123")).await;
    assert_eq!(res.status(), 422);
    let err = app_error(res).await;
    assert_eq!(err.field(), Some("tax_id"));
    assert!(err.to_string().contains("DE VAT number"), "{err}");
    let saved: i64 = sqlx::query_scalar("SELECT count(*) FROM billing_details").fetch_one(&app.pool).await.unwrap();
    assert_eq!(saved, 0, "nothing saved on bad input");

    // Without JavaScript the page is rendered anew: it shows the error and what was typed,
    // once (a reload shows what is saved).
    let res = app
        .client
        .post(format!("{}/api/billing/details", app.address))
        .header("accept", "text/html")
        .header("origin", &app.address)
        .header("referer", format!("{}/settings/billing", app.address))
        .form(&[
            ("company", "Typed GmbH"),
            ("line1", "Typed Street 9"),
            ("postal_code", "10117"),
            ("city", "Berlin"),
            ("country", "AT"),
            ("tax_id", "ATU1"),
        ])
        .send()
        .await
        .unwrap();
    assert!(res.status().is_redirection(), "{}", res.status());
    let back = res.headers()["location"].to_str().unwrap().trim_start_matches(app.address.as_str()).to_string();
    assert!(back.starts_with("/settings/billing"), "{back}");
    let html = app.page(&back).await;
    assert!(
        html.contains("value=\"Typed GmbH\"")
            && html.contains("value=\"Typed Street 9\"")
            && html.contains("value=\"ATU1\""),
        "{html}"
    );
    assert!(html.contains("<option value=\"AT\" selected"), "the typed country stays selected");
    assert!(html.contains("field-tax_id-error"), "{html}");
    assert!(!app.page("/settings/billing").await.contains("Typed GmbH"));
    let saved: i64 = sqlx::query_scalar("SELECT count(*) FROM billing_details").fetch_one(&app.pool).await.unwrap();
    assert_eq!(saved, 0);

    assert_eq!(app.go("/api/billing/details", &form("de 123 456 789")).await, "/settings/billing?done=saved");
    let token = standin_token();
    let c: Value = reqwest::Client::new()
        .get(format!("{}/polar/v1/customers/external/{user}", app.address))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(c["tax_id"], serde_json::json!(["DE123456789", "eu_vat"]));
    assert_eq!(c["billing_address"]["city"], "Berlin");

    // A purchase, then its invoice: generate, "preparing", ready, download.
    let url = app.go("/api/billing/checkout", &[("item", "pack_50")]).await;
    app.pay(&url, "4242424242424242").await.unwrap();
    let settings = app.page("/settings/billing").await;
    assert!(settings.contains("50 credits") && settings.contains(">Generate<"), "{settings}");
    let order_id = settings.split("name=\"order_id\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    app.go("/api/billing/invoice", &[("order_id", &order_id)]).await;
    assert!(app.page("/settings/billing").await.contains("Preparing"));
    page_until(&app, "/settings/billing", &format!("/billing/invoices/{order_id}")).await;
    let res = app.client.get(format!("{}/billing/invoices/{order_id}", app.address)).send().await.unwrap();
    assert_eq!(res.status(), 303);
    let pdf_url = res.headers()["location"].to_str().unwrap().to_string();
    let pdf = reqwest::get(&pdf_url).await.unwrap().bytes().await.unwrap();
    let text = String::from_utf8_lossy(&pdf);
    assert!(text.contains("Ada Lovelace") || text.contains("Ada GmbH"), "billing name on the invoice");
    assert!(text.contains("DE123456789"), "VAT id on the invoice");

    // Another user cannot download or generate it.
    let other = spawn_app_on(app.pool.clone(), app.db_name.clone(), &[]).await;
    other.sign_up("other@example.com").await;
    assert_eq!(
        other.client.get(format!("{}/billing/invoices/{order_id}", other.address)).send().await.unwrap().status(),
        404
    );
    assert_eq!(call(&other, "/api/billing/invoice", &[("order_id", &order_id)]).await.status(), 404);
}

#[tokio::test]
async fn a_trial_is_shown_with_its_end() {
    let app = spawn_app_with(&[("POLAR_STANDIN_TRIAL_DAYS", "14")]).await;
    app.sign_up("trial@example.com").await;
    let url = app.go("/api/billing/checkout", &[("item", "pro")]).await;
    let id = app.pay(&url, "4242424242424242").await.unwrap();
    assert_eq!(app.wait_ready(&id).await, serde_json::json!({ "Ready": { "what": "Pro", "is_plan": true } }));
    let billing = page_until(&app, "/billing", "Trial ends on").await;
    assert!(
        billing.contains(">Trial<") && billing.contains("; then it renews."),
        "the trial badge and what follows: {billing}"
    );
}

#[tokio::test]
async fn the_success_page_refreshes_without_javascript_and_gives_up_with_a_clear_message() {
    let app = spawn_app().await;
    app.sign_up("waiting@example.com").await;
    let url = app.go("/api/billing/checkout", &[("item", "pro")]).await;
    // Not paid: the checkout is open, so the page is "processing".
    let token = standin_token();
    let checkouts: Value = reqwest::Client::new()
        .get(format!("{}/polar/v1/checkouts/", app.address))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = checkouts["items"][0]["id"].as_str().unwrap().to_string();
    assert!(url.contains(checkouts["items"][0]["client_secret"].as_str().unwrap()));
    let first = app.page(&format!("/billing/success?checkout_id={id}")).await;
    assert!(first.contains("Payment processing"), "{first}");
    assert!(
        first.contains(&format!("url=/billing/success?checkout_id={id}&amp;n=1")),
        "a noscript refresh counts its checks: {first}"
    );
    let later = app.page(&format!("/billing/success?checkout_id={id}&n=5")).await;
    assert!(later.contains("&amp;n=6"), "the count goes on");
    let last = app.page(&format!("/billing/success?checkout_id={id}&n=25")).await;
    assert!(
        last.contains("This is taking longer than usual") && !last.contains("http-equiv"),
        "after the last check it stops and explains: {last}"
    );
}

#[tokio::test]
async fn plans_are_also_sold_yearly_with_a_switch_and_twelve_months_of_credits() {
    let app = spawn_app().await;
    // The switch: plain links, the current one marked.
    let monthly = app.page("/pricing").await;
    assert!(
        monthly.contains("href=\"/pricing?billing=yearly\"") && monthly.contains("$19") && monthly.contains("/month"),
        "{monthly}"
    );
    let yearly = app.page("/pricing?billing=yearly").await;
    assert!(yearly.contains("<a href=\"/pricing?billing=yearly\" aria-current=\"page\">"), "{yearly}");
    assert!(yearly.contains("$190") && yearly.contains("$490") && yearly.contains("/year"), "{yearly}");

    let user = app.sign_up("yearly@example.com").await;
    assert!(
        app.page("/pricing?billing=yearly").await.contains("name=\"item\" value=\"pro_yearly\""),
        "the yearly checkout"
    );
    let url = app.go("/api/billing/checkout", &[("item", "pro_yearly")]).await;
    let hosted = reqwest::get(&url).await.unwrap().text().await.unwrap();
    assert!(hosted.contains("$190") && hosted.contains(" / year"), "the hosted checkout names the period: {hosted}");
    let id = app.pay(&url, "4242424242424242").await.unwrap();
    assert_eq!(app.wait_ready(&id).await, serde_json::json!({ "Ready": { "what": "Pro", "is_plan": true } }));
    settle(&app).await;
    let (start, end): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("SELECT current_period_start, current_period_end FROM subscriptions WHERE user_id = $1")
            .bind(user)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!((365..=366).contains(&(end - start).num_days()), "a yearly period");
    allotment_reaches(&app, user, 60_000).await; // twelve months of Pro's credits, accruing daily
    assert!(app.page("/billing").await.contains("<p class=\"plan-name\">Pro"));

    // A plan change keeps the billing period: Business yearly, previewed per year.
    let preview: Value = call(&app, "/api/billing/plan-change", &[("plan", "business")]).await.json().await.unwrap();
    assert_eq!(
        (preview["interval"].as_str(), preview["new_price"].as_str(), preview["new_period_credits"].as_i64()),
        (Some("year"), Some("$490.00"), Some(180_000)),
        "{preview}"
    );
    assert!((29_990..=30_000).contains(&cents(preview["charge_now"].as_str().unwrap())), "{preview}");
    assert!(app.page("/billing/change?to=business").await.contains("then yearly, with 180,000 credits a year"));
    assert_eq!(app.go("/api/billing/change-plan", &[("plan", "business")]).await, "/billing?done=upgraded");
    let product: String = sqlx::query_scalar("SELECT product_id FROM subscriptions WHERE user_id = $1")
        .bind(user)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(product, tally::server::standin::product_id("business_yearly"));
}
