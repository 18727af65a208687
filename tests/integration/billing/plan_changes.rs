//! Changing plans: a downgrade at renewal and a failed renewal, the previewed upgrade matching
//! what Polar charges and the ledger grants, and paid-only features following the benefit.

use super::*;

#[tokio::test]
async fn a_downgrade_waits_for_renewal_and_a_failed_renewal_shows_past_due() {
    let app = spawn_app().await;
    let user = app.sign_up("downgrade@example.com").await;
    app.buy("business").await;
    let pricing = app.page("/pricing").await;
    assert!(pricing.contains("Switch to Pro at renewal"), "pricing offers the downgrade at renewal");

    assert_eq!(app.go("/api/billing/change-plan", &[("plan", "pro")]).await, "/billing?done=scheduled");
    let billing = page_until(&app, "/billing", "<p class=\"plan-name\">Business").await;
    assert!(billing.contains("Renews on"), "still Business until renewal");

    // Renewal: the pending change applies, and this time the payment fails.
    let sub: String = sqlx::query_scalar("SELECT id FROM subscriptions WHERE user_id = $1")
        .bind(user)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(control(&app, "/renewals/fail-next", serde_json::json!({})).await.status(), 204);
    assert_eq!(control(&app, &format!("/subscriptions/{sub}/renew"), Value::Null).await.status(), 200);
    let billing = page_until(&app, "/billing", "Payment past due").await;
    assert!(billing.contains("Fix payment in the billing portal"), "{billing}");
    let (plan, status): (Option<String>, String) =
        sqlx::query_as("SELECT plan, status FROM subscriptions WHERE id = $1")
            .bind(&sub)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((plan.as_deref(), status.as_str()), (Some("pro"), "past_due"));
}

#[tokio::test]
async fn a_plan_change_is_previewed_and_the_preview_matches_what_happens() {
    let app = spawn_app().await;
    // Anonymous: sign in first, and come back to the same preview.
    let html = app.page("/billing/change?to=business").await;
    assert!(html.contains("/login?next=/billing/change%3Fto%3Dbusiness"), "{html}");

    let user = app.sign_up("preview@example.com").await;
    let html = app.page("/billing/change?to=business").await;
    assert!(
        html.contains("This plan change is not available") && html.contains("You have no active subscription."),
        "{html}"
    );

    app.buy("pro").await;
    assert!(
        app.page("/pricing").await.contains("href=\"/billing/change?to=business\""),
        "pricing links to the preview"
    );

    // The upgrade: a prorated charge now and extra credits for the rest of the period.
    let html = app.page("/billing/change?to=business").await;
    assert!(
        html.contains("Upgrade to Business") && html.contains("You are on Pro ($19.00/month, 5,000 credits a month)."),
        "{html}"
    );
    assert!(html.contains("$49.00 on") && html.contains("with 15,000 credits a month"), "{html}");
    let res = call(&app, "/api/billing/plan-change", &[("plan", "business")]).await;
    assert_eq!(res.status(), 200);
    let preview: Value = res.json().await.unwrap();
    assert_eq!(preview["upgrade"], true);
    let charge = cents(preview["charge_now"].as_str().unwrap());
    let extra = preview["extra_credits_now"].as_i64().unwrap();
    // Just bought, so nearly the whole period is left: about the full difference.
    assert!((2990..=3000).contains(&charge), "{preview}");
    assert!((9950..=10000).contains(&extra), "{preview}");
    // The page says the same (rendered a moment apart: within a credit).
    let shown: i64 = html
        .split("+")
        .find_map(|t| t.split_once(" credits for the rest of this period"))
        .map(|(n, _)| n.replace(',', "").parse().unwrap())
        .expect("the credits line");
    assert!((shown - extra).abs() <= 1, "page {shown}, preview {extra}");

    // Pro's allotment arrives by webhook; wait for it, so the difference is the upgrade's.
    allotment_reaches(&app, user, 5000).await;
    assert_eq!(app.go("/api/billing/change-plan", &[("plan", "business")]).await, "/billing?done=upgraded");
    // What Polar charged and what the ledger granted match the preview (to the second that
    // passed in between: a cent, a credit).
    let orders = app.polar_get(&format!("/v1/orders/?external_customer_id={user}")).await;
    let charged = orders["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["billing_reason"] == "subscription_update")
        .unwrap_or_else(|| panic!("no prorated order: {orders}"))["subtotal_amount"]
        .as_i64()
        .unwrap();
    assert!((charge - charged).abs() <= 1, "previewed {charge}, charged {charged}");
    let granted = eventually("the upgrade's extra credits are granted", || async {
        let b = app.balance(user).await;
        let granted = b.allotment + b.pending_allotment - 5000;
        if granted > 0 {
            Ok(granted)
        } else {
            Err(granted)
        }
    })
    .await;
    assert!((extra - granted).abs() <= 1, "previewed {extra}, granted {granted}");

    // The downgrade: nothing now, the new plan from the renewal; once scheduled, it says so.
    let html = app.page("/billing/change?to=pro").await;
    assert!(
        html.contains("Switch to Pro at renewal")
            && html.contains("Nothing. You keep your plan and its credits until the renewal."),
        "{html}"
    );
    assert!(html.contains("5,000 credits a month instead of 15,000"), "{html}");
    let preview: Value = call(&app, "/api/billing/plan-change", &[("plan", "pro")]).await.json().await.unwrap();
    assert_eq!(
        (preview["upgrade"].as_bool(), preview["charge_now"].as_str(), preview["extra_credits_now"].as_i64()),
        (Some(false), Some("$0.00"), Some(0))
    );
    assert_eq!(app.go("/api/billing/change-plan", &[("plan", "pro")]).await, "/billing?done=scheduled");
    let html = app.page("/billing/change?to=pro").await;
    assert!(html.contains("This switch is already scheduled for"), "{html}");
    // Not a plan one can switch to.
    let res = call(&app, "/api/billing/plan-change", &[("plan", "enterprise")]).await;
    assert_eq!(res.status(), 422);
}

async fn text_stats(app: &TestApp, key: &str, chars: usize) -> reqwest::Response {
    app.spend(Some(key), &serde_json::json!({ "text": "a".repeat(chars) }).to_string(), None).await
}

#[tokio::test]
async fn paid_only_features_follow_the_granted_benefit_and_fail_closed() {
    let app = spawn_app().await;
    let user = app.sign_up("entitled@example.com").await;
    // Free: two API keys, even when five are asked for at once.
    let create = || call(&app, "/api/keys/create", &[("name", "k")]);
    let (a, b, c, d, e) = tokio::join!(create(), create(), create(), create(), create());
    let mut created = vec![];
    for res in [a, b, c, d, e] {
        match res.status().as_u16() {
            200 => created.push(res.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_string()),
            403 => assert!(
                app_error(res).await.to_string().contains("The Free plan includes 2 API keys"),
                "the refusal explains"
            ),
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(created.len(), 2, "exactly the Free allowance");
    let key = created[0].clone();

    // Free: up to 10,000 characters a call; longer is refused and costs nothing.
    let before = app.balance(user).await.total;
    let res = text_stats(&app, &key, 10_001).await;
    assert_eq!(res.status(), 403);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "plan_required", "{body}");
    assert_eq!(app.balance(user).await.total, before);
    assert_eq!(text_stats(&app, &key, 10_000).await.status(), 200);
    assert_eq!(app.balance(user).await.total, before - 10);

    // Pro grants the `pro` benefit: longer texts and more keys.
    app.buy("pro").await;
    let res = text_stats(&app, &key, 10_001).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    assert_eq!(call(&app, "/api/keys/create", &[("name", "third")]).await.status(), 200);

    // Polar unreachable and the last known state older than the grace period: fail closed.
    sqlx::query("UPDATE polar_customers SET state_stale = true, state_fetched_at = now() - interval '25 hours' WHERE user_id = $1").bind(user).execute(&app.pool).await.unwrap();
    control(&app, "/outage", serde_json::json!({ "kind": "error", "count": 1000 })).await;
    let res = text_stats(&app, &key, 10_001).await;
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "billing_unavailable", "{body}");
    // Within the free limit nothing depends on Polar.
    assert_eq!(text_stats(&app, &key, 100).await.status(), 200);
    end_outage(&app).await;
    assert_eq!(text_stats(&app, &key, 10_001).await.status(), 200, "back when Polar is");
}
