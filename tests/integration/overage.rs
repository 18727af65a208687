//! Overage and usage alerts: a Pro customer spends past their credits, the ledger records the
//! overage as its own entries (never a negative balance), the cap stops it with a 402 naming
//! the cap, the billing page's projected charge equals the stand-in's cycle-end order to the
//! cent, and each alert fires once, also under 1,000 concurrent spends.

use crate::helpers::*;
use chrono::{DateTime, Duration, Utc};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sqlx::PgPool;
use tally::server::ledger::{self, SpendOutcome};
use uuid::Uuid;

async fn usage(app: &TestApp) -> Value {
    let res = call(app, "/api/usage", &[]).await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

async fn save_settings(app: &TestApp, form: &[(&str, &str)]) -> reqwest::Response {
    call(app, "/api/usage/settings", form).await
}

/// The user's live subscription id, once its webhook was applied.
async fn subscription_of(app: &TestApp, user: Uuid) -> String {
    eventually("the subscription reaches the ledger", || async {
        let id: Option<String> = sqlx::query_scalar(
            "SELECT s.id FROM subscriptions s JOIN credit_accounts a ON a.user_id = s.user_id AND a.period_key IS NOT NULL
              WHERE s.user_id = $1 AND s.status = 'active'",
        )
        .bind(user)
        .fetch_optional(&app.pool)
        .await
        .unwrap();
        id.ok_or("no active subscription with a period")
    })
    .await
}

/// Waits until `user` has its Polar customer (created in the background after sign-up).
async fn customer_synced(app: &TestApp, user: Uuid) {
    eventually(&format!("the Polar customer of {user} is created"), || async {
        let linked: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM polar_customers WHERE user_id = $1 AND polar_customer_id IS NOT NULL)",
        )
        .bind(user)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if linked {
            Ok(())
        } else {
            Err("not linked")
        }
    })
    .await
}

/// The stand-in's orders of `user` with `billing_reason`.
async fn orders(app: &TestApp, user: Uuid, reason: &str) -> Vec<Value> {
    let page = app.polar_get(&format!("/v1/orders/?external_customer_id={user}&limit=100")).await;
    page["items"].as_array().unwrap().iter().filter(|o| o["billing_reason"] == reason).cloned().collect()
}

async fn text(app: &TestApp, key: &str, chars: usize) -> reqwest::Response {
    app.spend(Some(key), &json!({ "text": "a".repeat(chars) }).to_string(), None).await
}

async fn overage_entries(pool: &PgPool, user: Uuid) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce(sum(amount), 0)::bigint FROM credit_entries WHERE user_id = $1 AND kind = 'overage'",
    )
    .bind(user)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_pro_customer_past_their_credits_is_billed_the_projected_overage_to_the_cent() {
    // A Pro period is 5,000 credits and calls cost up to 100: a history makes ~120 calls.
    let app = spawn_app_with(&[("FREE_CREDITS", "0"), ("API_RATE_LIMIT_PER_MINUTE", "5000")]).await;
    // Generated histories: random call sizes and caps; each ends at the renewal, where the
    // stand-in bills the overage Polar received, and the projected charge must equal it.
    // Overage starts only once the whole period's allotment is used: the days not yet
    // released are advanced first.
    for seed in 0..3u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let email = format!("overage-{seed}@example.com");
        let user = app.sign_up(&email).await;
        // Each history pays with the test helper's one payer address: wait until this user's
        // Polar customer exists, so the purchase links by external id, not by that address.
        customer_synced(&app, user).await;
        app.buy("pro").await;
        let sub = subscription_of(&app, user).await;
        let key = app.create_api_key("overage").await;

        // Overage off (the default): past the balance is 402 insufficient, nothing spent.
        let mut refused = None;
        for _ in 0..10 {
            let res = text(&app, &key, 100_000).await;
            if res.status() == 402 {
                refused = Some(res.json::<Value>().await.unwrap());
                break;
            }
            assert_eq!(res.status(), 200);
        }
        assert_eq!(refused.expect("the balance ran out")["error"]["code"], "insufficient_credits");
        assert_eq!(overage_entries(&app.pool, user).await, 0);

        let cap_cents: i64 = rng.gen_range(150..900);
        let cap = format!("{}.{:02}", cap_cents / 100, cap_cents % 100);
        let res = save_settings(&app, &[("overage_allowed", "on"), ("spend_cap", &cap), ("alert_percent", "on")]).await;
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());

        let mut capped = None;
        for _ in 0..200 {
            let chars = rng.gen_range(1..=100_000usize);
            let res = text(&app, &key, chars).await;
            match res.status().as_u16() {
                200 => {}
                402 => {
                    let body: Value = res.json().await.unwrap();
                    assert_eq!(body["error"]["code"], "spend_cap_reached", "{body}");
                    assert_eq!(body["error"]["cap_cents"], cap_cents, "the 402 names the cap");
                    let message = body["error"]["message"].as_str().unwrap().to_string();
                    assert!(message.contains(&format!("${cap}")), "{message}");
                    capped = Some(body);
                    break;
                }
                s => panic!("unexpected {s}: {}", res.text().await.unwrap()),
            }
        }
        let capped = capped.expect("the cap stopped the calls");
        assert!(capped["error"]["overage_cents"].as_i64().unwrap() <= cap_cents);

        // The ledger: overage is its own entry kind, the balance never below zero, all sums.
        let b = app.balance(user).await;
        assert!(b.total >= 0);
        let over = overage_entries(&app.pool, user).await;
        assert!(over > 0 && over <= cap_cents, "overage {over} within the cap {cap_cents}");
        assert!(ledger::problems(&app.pool, None).await.unwrap().is_empty());

        let u = usage(&app).await;
        let period = &u["period"];
        assert_eq!(period["overage_units"], over);
        // Overage is only what the whole period's allotment did not cover (no other credits).
        let allotment = period["allotment"].as_i64().unwrap();
        assert_eq!(allotment, 5000);
        assert_eq!(period["spent"].as_i64().unwrap(), allotment + over, "overage began where the allotment ended");
        assert_eq!(period["to_release"], 0, "the rest of the period was advanced: {period}");
        let (released, advanced) = (period["released"].as_i64().unwrap(), period["advanced"].as_i64().unwrap());
        assert!(advanced > 4000 && released + advanced == allotment, "{period}");
        assert_eq!(period["unit_cents"], 1);
        assert_eq!(period["cap_cents"], cap_cents);
        let projected = period["projected_cents"].as_i64().unwrap();
        assert_eq!(projected, over, "Pro's metered price is one cent a credit");
        let html = app.page("/billing").await;
        let shown = tally::domain::money::format_cents_exact(projected, "usd");
        assert!(html.contains(&shown), "the billing page shows the projected charge {shown}");

        // Polar has every event; the renewal bills the overage as its own order.
        usage_drained(&app).await;
        // A period lasts at least a second (the allotment is keyed by its start to the second).
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let before = app.polar_get(&format!("/v1/subscriptions/{sub}")).await;
        let res = control(&app, &format!("/subscriptions/{sub}/renew"), Value::Null).await;
        assert_eq!(res.status(), 200);
        let renewed: Value = res.json().await.unwrap();
        assert_ne!(renewed["current_period_start"], before["current_period_start"], "renewed: {renewed}");
        let billed = orders(&app, user, "subscription_meter_cycle").await;
        assert_eq!(billed.len(), 1, "one overage order: {billed:?}");
        assert_eq!(billed[0]["net_amount"], projected, "billed to the cent: {}", billed[0]);
        assert_eq!(billed[0]["status"], "paid");

        // The next period starts at zero overage (once the renewal's webhook is applied; a
        // delivery that failed is retried by Polar after 2 s, 4 s, …).
        eventually_within(std::time::Duration::from_secs(30), "the renewal reaches the ledger", || async {
            let fresh = usage(&app).await;
            if fresh["period"]["overage_units"] == 0 {
                return Ok(());
            }
            let hooks: Vec<(String, String, Option<String>)> =
                sqlx::query_as("SELECT event_type, status, last_error FROM webhook_events ORDER BY received_at")
                    .fetch_all(&app.pool)
                    .await
                    .unwrap();
            Err((fresh, hooks))
        })
        .await;
        let res = call(&app, "/api/logout", &[]).await;
        assert!(res.status().is_success() || res.status().is_redirection());
    }
}

#[tokio::test]
async fn the_free_plan_never_goes_into_overage_and_bad_settings_are_refused() {
    let app = spawn_app_with(&[("FREE_CREDITS", "2")]).await;
    let user = app.sign_up("free-overage@example.com").await;
    let key = app.create_api_key("free").await;
    let res = save_settings(&app, &[("overage_allowed", "on")]).await;
    assert_eq!(res.status(), 200);
    let res = text(&app, &key, 5_000).await;
    assert_eq!(res.status(), 402);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "insufficient_credits");
    assert_eq!(overage_entries(&app.pool, user).await, 0);
    assert_eq!(usage(&app).await["period"], Value::Null, "no period without a plan");

    for (field, form) in [
        ("spend_cap", vec![("spend_cap", "12.345")]),
        ("spend_cap", vec![("spend_cap", "-5")]),
        ("spend_cap", vec![("spend_cap", "100001")]),
        ("alert_below", vec![("alert_below", "0")]),
        ("alert_below", vec![("alert_below", "many")]),
    ] {
        let res = save_settings(&app, &form).await;
        assert_eq!(res.status(), 422, "{form:?}");
        assert_eq!(app_error(res).await.field(), Some(field), "{form:?}");
    }
    // Nothing of a refused form was saved.
    assert_eq!(usage(&app).await["settings"]["overage_allowed"], true);
}

/// A user without credits.
async fn new_user(pool: &PgPool) -> Uuid {
    sqlx::query_scalar("INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id")
        .bind(format!("{}@example.com", Uuid::new_v4()))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A user with `allotment` credits this period (all spendable now) and the given overage terms.
async fn account(pool: &PgPool, allotment: i64, overage: Option<(i64, Option<i64>)>, allowed: bool) -> Uuid {
    let user = new_user(pool).await;
    let now = Utc::now();
    let (start, end) = (now - Duration::days(1), now + Duration::days(29));
    let mut conn = pool.acquire().await.unwrap();
    let key = format!("allotment:sub-{user}:{}", start.timestamp());
    let period_key = ledger::period::key(&format!("sub-{user}"), start);
    ledger::grant(
        &mut conn,
        &ledger::Grant {
            user_id: user,
            bucket: ledger::BucketKind::Allotment,
            entry_kind: "allotment",
            source_key: key.clone(),
            amount: allotment,
            expires_at: Some(end),
            key: key.clone(),
            metadata: json!({}),
            schedule: None,
        },
        now,
    )
    .await
    .unwrap();
    let terms = overage.map(|(unit_cents, cap_cents)| tally::domain::usage::OverageTerms { unit_cents, cap_cents });
    let period = ledger::period::PeriodStart {
        key: &period_key,
        start,
        end,
        allotment,
        overage: terms,
        open: true,
        default_cap_cents: 10_000,
    };
    ledger::period::start(&mut conn, user, &period).await.unwrap();
    let settings = tally::server::usage::settings::UsageSettings { overage_allowed: allowed, ..Default::default() };
    tally::server::usage::settings::save(&mut conn, user, &settings).await.unwrap();
    user
}

/// Spends of `cost` under each of `keys` at once, each on its own connection; their outcomes.
async fn concurrent_spends(
    pool: &PgPool,
    user: Uuid,
    keys: Vec<String>,
    cost: i64,
    now: DateTime<Utc>,
) -> Vec<SpendOutcome> {
    let tasks: Vec<_> = keys
        .into_iter()
        .map(|key| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut conn = pool.acquire().await.unwrap();
                ledger::spend(&mut conn, user, cost, &key, &json!({}), now).await.unwrap()
            })
        })
        .collect();
    let mut out = vec![];
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

async fn alerts_of(pool: &PgPool, user: Uuid) -> Vec<String> {
    sqlx::query_scalar("SELECT alert FROM usage_alerts WHERE user_id = $1 ORDER BY alert")
        .bind(user)
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_thousand_concurrent_spends_fire_each_alert_once_and_never_pass_the_cap() {
    let (_, db) = fresh_database().await;
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(20).connect(&database_url(&db)).await.unwrap();
    let keys = |prefix: &str, n: usize| (0..n).map(|i| format!("{prefix}-{i}")).collect::<Vec<_>>();
    let now = Utc::now();

    // Without overage: the 1,000 credits go to the first 1,000 spends of one; 80 % and 100 %
    // fire once each, the rest is refused.
    let user = account(&pool, 1000, Some((1, Some(500))), false).await;
    let out = concurrent_spends(&pool, user, keys("a", 1000), 1, now).await;
    assert!(out.iter().all(|o| matches!(o, SpendOutcome::Spent { .. })));
    assert_eq!(alerts_of(&pool, user).await, ["percent_100", "percent_80"]);
    let refused = concurrent_spends(&pool, user, keys("b", 10), 1, now).await;
    assert!(refused.iter().all(|o| matches!(o, SpendOutcome::Insufficient { available: 0 })), "{refused:?}");

    // With overage capped at $5 (500 credits at 1 cent): 1,000 spends of 2 against 1,000
    // credits take exactly 1,500; 80/100/150 % and overage each fire once.
    let user = account(&pool, 1000, Some((1, Some(500))), true).await;
    let out = concurrent_spends(&pool, user, keys("c", 1000), 2, now).await;
    let spent: i64 = out.iter().map(|o| if let SpendOutcome::Spent { spent, .. } = o { *spent } else { 0 }).sum();
    assert_eq!(spent, 1500, "the allotment and the whole cap, never more");
    assert_eq!(out.iter().filter(|o| matches!(o, SpendOutcome::OverCap { .. })).count(), 250);
    assert_eq!(overage_entries(&pool, user).await, 500);
    assert_eq!(alerts_of(&pool, user).await, ["overage", "percent_100", "percent_150", "percent_80"]);
    let p = ledger::period::current(&pool, user, now).await.unwrap().unwrap();
    assert_eq!((p.spent, p.overage, p.projected_charge_cents()), (1500, 500, 500));

    // A retried spend is answered from the ledger, never spends or alerts again.
    let committed: Vec<String> = sqlx::query_scalar(
        "SELECT idempotency_key FROM credit_entries WHERE user_id = $1 AND kind = 'spend' AND strpos(idempotency_key, '#') = 0 LIMIT 5",
    )
    .bind(user)
    .fetch_all(&pool)
    .await
    .unwrap();
    let again = concurrent_spends(&pool, user, committed, 2, now).await;
    assert!(again.iter().all(|o| matches!(o, SpendOutcome::Duplicate { .. })), "{again:?}");
    assert_eq!(ledger::period::current(&pool, user, now).await.unwrap().unwrap().spent, 1500);

    let problems = ledger::problems(&pool, None).await.unwrap();
    assert!(problems.is_empty(), "{problems:?}");
}

#[tokio::test]
async fn alerts_show_as_banners_and_are_mailed_once_each() {
    let app = spawn_app_with(&[("FREE_CREDITS", "0")]).await;
    let email = "alerts@example.com";
    let user = app.sign_up(email).await;
    app.buy("pro").await;
    subscription_of(&app, user).await;
    let key = app.create_api_key("alerts").await;
    let res = save_settings(
        &app,
        &[("overage_allowed", "on"), ("alert_percent", "on"), ("alert_overage", "on"), ("alert_email", "on")],
    )
    .await;
    assert_eq!(res.status(), 200);
    // Past 80 % and 100 % of the 5,000-credit allotment (overage pays for what the day's
    // accrual does not cover; Pro's cap is $50, 5,000 credits).
    for _ in 0..51 {
        let res = text(&app, &key, 100_000).await;
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    }
    for subject in [
        "You have used 80 % of this period's credits",
        "You have used all of this period's credits",
        "You are now using overage credits",
    ] {
        wait_for_mail(&app, email, subject).await;
    }
    // Once each, whatever else is spent.
    for _ in 0..3 {
        assert_eq!(text(&app, &key, 100).await.status(), 200);
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let mails = mailbox(&app, email).await;
    for subject in ["80 %", "all of this period", "overage credits"] {
        let n = mails.iter().filter(|m| m["subject"].as_str().unwrap_or_default().contains(subject)).count();
        assert_eq!(n, 1, "one mail about {subject:?}: {mails:?}");
    }
    let html = app.page("/billing").await;
    for alert in ["percent_80", "percent_100", "overage"] {
        assert!(html.contains(&format!("data-alert=\"{alert}\"")), "banner {alert}");
    }
    // Dismissed, the banner goes and the alert does not come back.
    assert_eq!(call(&app, "/api/usage/dismiss", &[("alert", "percent_80")]).await.status(), 200);
    let html = app.page("/billing").await;
    assert!(!html.contains("data-alert=\"percent_80\""));
    assert!(html.contains("data-alert=\"percent_100\""));
    assert_eq!(call(&app, "/api/usage/dismiss", &[("alert", "<script>")]).await.status(), 422);
}

/// Re-states `user`'s period with a new end and openness (as a later subscription state does).
async fn restate(pool: &PgPool, user: Uuid, end: DateTime<Utc>, open: bool) {
    let (key, start, allotment): (String, DateTime<Utc>, i64) =
        sqlx::query_as("SELECT period_key, period_start, period_allotment FROM credit_accounts WHERE user_id = $1")
            .bind(user)
            .fetch_one(pool)
            .await
            .unwrap();
    let overage = Some(tally::domain::usage::OverageTerms { unit_cents: 1, cap_cents: Some(500) });
    let p = ledger::period::PeriodStart { key: &key, start, end, allotment, overage, open, default_cap_cents: 10_000 };
    ledger::period::start(&mut pool.acquire().await.unwrap(), user, &p).await.unwrap();
}

#[tokio::test]
async fn no_new_overage_near_the_period_end_or_once_the_subscription_is_ending_and_only_crossings_notify() {
    let (_, db) = fresh_database().await;
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(4).connect(&database_url(&db)).await.unwrap();
    let now = Utc::now();
    let spend = |user: Uuid, cost: i64, key: &'static str| {
        let pool = pool.clone();
        async move { ledger::spend(&mut pool.acquire().await.unwrap(), user, cost, key, &json!({}), now).await.unwrap() }
    };

    // Set to end (or past due): the price stays, no new overage; what was used is still billed.
    let user = account(&pool, 10, Some((1, Some(500))), true).await;
    assert!(matches!(spend(user, 15, "k1").await, SpendOutcome::Spent { .. }), "5 credits of overage");
    restate(&pool, user, now + Duration::days(29), false).await;
    assert_eq!(spend(user, 1, "k2").await, SpendOutcome::Insufficient { available: 0 });
    let p = ledger::period::current(&pool, user, now).await.unwrap().unwrap();
    assert_eq!((p.overage, p.projected_charge_cents(), p.overage_open), (5, 5, false));

    // Ten minutes before the end, overage closes: the last events must reach Polar in time.
    restate(&pool, user, now + Duration::minutes(9), true).await;
    assert_eq!(spend(user, 1, "k3").await, SpendOutcome::Insufficient { available: 0 });
    restate(&pool, user, now + Duration::minutes(11), true).await;
    assert!(matches!(spend(user, 1, "k4").await, SpendOutcome::Spent { .. }));

    // Only a spend that crosses a line writes an alert and notifies the alert worker.
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await.unwrap();
    listener.listen(tally::server::usage::alerts::CHANNEL).await.unwrap();
    let quiet = account(&pool, 1000, None, false).await;
    assert!(matches!(spend(quiet, 10, "q1").await, SpendOutcome::Spent { .. }));
    let heard = tokio::time::timeout(std::time::Duration::from_millis(500), listener.recv()).await;
    assert!(heard.is_err(), "a spend that crossed nothing notified: {heard:?}");
    assert!(matches!(spend(quiet, 790, "q2").await, SpendOutcome::Spent { .. }));
    let heard = tokio::time::timeout(std::time::Duration::from_secs(5), listener.recv()).await;
    assert!(heard.is_ok_and(|n| n.is_ok()), "the 80 % crossing notified");
    assert_eq!(alerts_of(&pool, quiet).await, ["percent_80"]);

    // One spend crossing 80 % and 100 % at once: the banners list the higher one first.
    let both = account(&pool, 1000, None, false).await;
    assert!(matches!(spend(both, 1000, "b1").await, SpendOutcome::Spent { .. }));
    let key: String = sqlx::query_scalar("SELECT period_key FROM credit_accounts WHERE user_id = $1")
        .bind(both)
        .fetch_one(&pool)
        .await
        .unwrap();
    let panel = tally::server::usage::panel::read(&mut pool.acquire().await.unwrap(), both, now).await.unwrap();
    assert_eq!(panel.period.map(|p| p.period.key), Some(key));
    let shown: Vec<_> = panel.alerts.into_iter().map(|a| a.alert).collect();
    use tally::domain::usage::Alert;
    assert_eq!(shown, [Alert::Percent(100), Alert::Percent(80)]);
    assert!(ledger::problems(&pool, None).await.unwrap().is_empty());
}

/// A Pro customer (no free credits) with overage switched on and an API key: (user, the
/// subscription's id, the key).
async fn pro_with_overage(app: &TestApp, email: &str) -> (Uuid, String, String) {
    let user = app.sign_up(email).await;
    customer_synced(app, user).await;
    app.buy("pro").await;
    let sub = subscription_of(app, user).await;
    let key = app.create_api_key("overage").await;
    let res = save_settings(app, &[("overage_allowed", "on"), ("alert_percent", "on")]).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    (user, sub, key)
}

/// Issue #21: a Pro customer with overage on, on the first day of their period, is never billed
/// for credits their plan pays for this month; overage is what the whole allotment (5,000
/// credits, released ~167 a day) does not cover, billed to the cent. While it is unbilled, the
/// account cannot be deleted by its owner; an operator can, on purpose.
#[tokio::test]
async fn overage_starts_only_where_the_whole_periods_allotment_ends() {
    let app = spawn_app_with(&[("FREE_CREDITS", "0"), ("API_RATE_LIMIT_PER_MINUTE", "1000")]).await;
    let email = "advance@example.com";
    let (user, sub, key) = pro_with_overage(&app, email).await;
    let released_today = app.balance(user).await.total;
    assert!(released_today > 0 && released_today < 200, "day one releases ~167 credits, got {released_today}");

    // 3,000 credits in 30 calls: all within the plan's 5,000, so no overage at all.
    for i in 0..30 {
        let res = text(&app, &key, 100_000).await;
        assert_eq!(res.status(), 200, "call {i}: {}", res.text().await.unwrap());
    }
    assert_eq!(overage_entries(&app.pool, user).await, 0);
    let period = usage(&app).await["period"].clone();
    assert_eq!((period["spent"].as_i64(), period["overage_units"].as_i64()), (Some(3000), Some(0)), "{period}");
    assert_eq!(period["projected_cents"], 0);
    assert_eq!(period["advanced"].as_i64().unwrap(), 3000 - released_today, "{period}");
    assert_eq!(period["released"].as_i64().unwrap() + period["advanced"].as_i64().unwrap(), 3000, "{period}");
    assert_eq!(period["to_release"], 2000, "{period}");
    let html = app.page("/billing").await;
    assert!(html.contains("Released early (advanced)") && html.contains(">$0.00<"), "the page says it plainly");
    assert!(ledger::problems(&app.pool, None).await.unwrap().is_empty());

    // To 6,000: exactly 1,000 credits past the allotment are overage ($10.00 at a cent each).
    for i in 0..30 {
        let res = text(&app, &key, 100_000).await;
        assert_eq!(res.status(), 200, "call {i}: {}", res.text().await.unwrap());
    }
    assert_eq!(overage_entries(&app.pool, user).await, 1000);
    let period = usage(&app).await["period"].clone();
    assert_eq!((period["spent"].as_i64(), period["overage_units"].as_i64()), (Some(6000), Some(1000)), "{period}");
    assert_eq!((period["to_release"].as_i64(), period["projected_cents"].as_i64()), (Some(0), Some(1000)), "{period}");
    let b = app.balance(user).await;
    assert_eq!((b.pending_allotment, b.next_accrual_at), (0, None), "no release is announced for advanced days");
    assert!(ledger::problems(&app.pool, None).await.unwrap().is_empty());
    // The alerts still count against the whole allotment: 80 %, 100 % (and overage) fired.
    let fired: Vec<String> = sqlx::query_scalar("SELECT alert FROM usage_alerts WHERE user_id = $1 ORDER BY alert")
        .bind(user)
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(fired, ["overage", "percent_100", "percent_80"]);

    // The owner cannot delete the account while that overage is unbilled: the message names
    // the amount and when Polar bills it.
    let res = call(&app, "/api/account/delete", &[("confirm_email", email)]).await;
    assert_eq!(res.status(), 409);
    let message = app_error(res).await.to_string();
    assert!(message.contains("$10.00") && message.contains("1,000 credits"), "{message}");
    let end: DateTime<Utc> = sqlx::query_scalar("SELECT period_end FROM credit_accounts WHERE user_id = $1")
        .bind(user)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(message.contains(&end.format("%B %-d, %Y").to_string()), "{message}");
    let deleted: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT deleted_at FROM users WHERE id = $1").bind(user).fetch_one(&app.pool).await.unwrap();
    assert_eq!(deleted, None);
    // The refusal changed nothing: overage is still open and a call still goes through.
    assert_eq!(text(&app, &key, 1_000).await.status(), 200);
    assert_eq!(overage_entries(&app.pool, user).await, 1001);

    // The renewal bills exactly what the page projected.
    usage_drained(&app).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let res = control(&app, &format!("/subscriptions/{sub}/renew"), Value::Null).await;
    assert_eq!(res.status(), 200);
    let billed = orders(&app, user, "subscription_meter_cycle").await;
    assert_eq!(billed.len(), 1, "{billed:?}");
    assert_eq!(billed[0]["net_amount"], 1001, "billed to the cent: {}", billed[0]);
    assert!(ledger::problems(&app.pool, None).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_operator_can_delete_an_account_with_unbilled_overage_on_purpose() {
    let app = spawn_app_with(&[("FREE_CREDITS", "0"), ("API_RATE_LIMIT_PER_MINUTE", "1000")]).await;
    let (user, _, key) = pro_with_overage(&app, "operator-delete@example.com").await;
    for _ in 0..51 {
        assert_eq!(text(&app, &key, 100_000).await.status(), 200);
    }
    assert_eq!(overage_entries(&app.pool, user).await, 100);

    let mut config = test_config(&[]);
    config.polar.api_url = url::Url::parse(&format!("{}/polar", app.address)).unwrap();
    let state = tally::server::state::AppState::new(config, app.pool.clone()).unwrap();
    use tally::server::billing::{delete_account, Deletion};
    let refused = delete_account(&state.billing, user, Deletion::Customer).await.unwrap_err();
    assert!(refused.to_string().contains("$1.00"), "{refused}");
    // A deletion that never reaches Polar (the user's budget of calls is spent) changes
    // nothing: overage, closed while it was tried, is open again.
    let mut tight = test_config(&[("POLAR_CALLS_PER_USER_PER_MINUTE", "1")]);
    tight.polar.api_url = state.config.polar.api_url.clone();
    let tight = tally::server::state::AppState::new(tight, app.pool.clone()).unwrap();
    let _ = tally::server::billing::polar_budget(&tight.billing, user).await; // this minute's one call
    let limited = delete_account(&tight.billing, user, Deletion::OperatorKeepsOverage).await.unwrap_err();
    assert!(matches!(limited, tally::server::billing::Error::RateLimited(_)), "{limited:?}");
    let open: bool = sqlx::query_scalar("SELECT overage_open FROM credit_accounts WHERE user_id = $1")
        .bind(user)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(open, "overage reopened after a deletion that did not happen");
    delete_account(&state.billing, user, Deletion::OperatorKeepsOverage).await.unwrap();
    let deleted: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT deleted_at FROM users WHERE id = $1").bind(user).fetch_one(&app.pool).await.unwrap();
    assert!(deleted.is_some());
    // What was used stays recorded: the entries, and the period's counters.
    assert_eq!(overage_entries(&app.pool, user).await, 100);
    let (overage, open): (i64, bool) =
        sqlx::query_as("SELECT period_overage, overage_open FROM credit_accounts WHERE user_id = $1")
            .bind(user)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((overage, open), (100, false));
    assert!(ledger::problems(&app.pool, None).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_metered_price_on_another_meter_offers_no_overage() {
    // Tally's overage meter is some other meter than the stand-in's metered prices bill.
    let app =
        spawn_app_with(&[("FREE_CREDITS", "0"), ("POLAR_OVERAGE_METER_ID", "3f1b6a4e-8c2d-4e7f-9a10-5b6c7d8e9f01")])
            .await;
    let user = app.sign_up("other-meter@example.com").await;
    customer_synced(&app, user).await;
    app.buy("pro").await;
    subscription_of(&app, user).await;
    assert_eq!(save_settings(&app, &[("overage_allowed", "on")]).await.status(), 200);
    let period = usage(&app).await["period"].clone();
    assert_eq!(period["unit_cents"], Value::Null, "{period}");
    let key = app.create_api_key("k").await;
    let mut refused = None;
    for _ in 0..5 {
        let res = text(&app, &key, 100_000).await;
        if res.status() == 402 {
            refused = Some(res.json::<Value>().await.unwrap());
            break;
        }
    }
    assert_eq!(refused.expect("the released credits ran out")["error"]["code"], "insufficient_credits");
    assert_eq!(overage_entries(&app.pool, user).await, 0);
    assert!(app.page("/billing").await.contains("Your plan has no overage"));
}

/// A user whose period allotment of `allotment` credits is released in ten equal days, the
/// first now; overage at a cent a credit with `plan_cap`, and `default_cap`.
async fn accruing_account(pool: &PgPool, allotment: i64, plan_cap: Option<i64>, default_cap: i64) -> Uuid {
    let user = new_user(pool).await;
    let now = Utc::now();
    let (start, end) = (now - Duration::hours(1), now + Duration::days(10) - Duration::hours(1));
    let mut conn = pool.acquire().await.unwrap();
    let source = format!("allotment:accruing-{user}");
    let schedule: Vec<_> = (0..10)
        .map(|d| tally::domain::credits::Accrual { due_at: start + Duration::days(d), amount: allotment / 10 })
        .collect();
    ledger::grant(
        &mut conn,
        &ledger::Grant {
            user_id: user,
            bucket: ledger::BucketKind::Allotment,
            entry_kind: "allotment",
            source_key: source.clone(),
            amount: allotment,
            expires_at: Some(end),
            key: source,
            metadata: json!({}),
            schedule: Some(schedule),
        },
        now,
    )
    .await
    .unwrap();
    let key = ledger::period::key(&format!("accruing-{user}"), start);
    let overage = Some(tally::domain::usage::OverageTerms { unit_cents: 1, cap_cents: plan_cap });
    let p = ledger::period::PeriodStart {
        key: &key,
        start,
        end,
        allotment,
        overage,
        open: true,
        default_cap_cents: default_cap,
    };
    ledger::period::start(&mut conn, user, &p).await.unwrap();
    let settings = tally::server::usage::settings::UsageSettings { overage_allowed: true, ..Default::default() };
    tally::server::usage::settings::save(&mut conn, user, &settings).await.unwrap();
    user
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_spends_from_two_pools_cross_the_allotments_end_exactly() {
    let (_, db) = fresh_database().await;
    let pool_of = || sqlx::postgres::PgPoolOptions::new().max_connections(10).connect(database_url(&db).leak());
    let (a, b) = (pool_of().await.unwrap(), pool_of().await.unwrap());
    // 1,000 credits over ten days (100 released now), a 200-credit pack, overage capped at $5.
    let user = accruing_account(&a, 1000, Some(500), 10_000).await;
    let now = Utc::now();
    ledger::grant_pack(&mut a.acquire().await.unwrap(), user, "pack-1", 200, "pack-product", now).await.unwrap();
    assert_eq!(app_balance(&a, user).await, 300);

    // 1,000 spends of 2 credits: 1,200 covered by the released credits, the pack and the
    // advanced 900; then 500 of overage; the remaining 150 refused at the cap.
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let pool = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let mut conn = pool.acquire().await.unwrap();
                ledger::spend(&mut conn, user, 2, &format!("c{i}"), &json!({}), now).await.unwrap()
            })
        })
        .collect();
    let (mut spent, mut capped) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            SpendOutcome::Spent { .. } => spent += 1,
            SpendOutcome::OverCap { .. } => capped += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((spent, capped), (850, 150));
    assert_eq!(overage_entries(&a, user).await, 500);
    let advanced: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(amount), 0)::bigint FROM credit_entries WHERE user_id = $1 AND kind = 'advance'",
    )
    .bind(user)
    .fetch_one(&a)
    .await
    .unwrap();
    assert_eq!(advanced, 900);
    let p = ledger::period::current(&a, user, now).await.unwrap().unwrap();
    assert_eq!((p.spent, p.overage, p.projected_charge_cents()), (1700, 500, 500));
    let progress = ledger::period::allotment_progress(&a, user, p.start, p.end, now).await.unwrap();
    assert_eq!(
        progress,
        ledger::period::AllotmentProgress { scheduled: 1000, released: 100, advanced: 900, pending: 0 }
    );
    assert!(ledger::problems(&a, None).await.unwrap().is_empty());
    assert_eq!(app_balance(&a, user).await, 0);

    // The advanced days come due and release nothing more; the invariant still holds.
    let later = now + Duration::days(5);
    assert_eq!(ledger::balance(&a, user, later).await.unwrap().total, 0);
    assert!(ledger::problems(&a, None).await.unwrap().is_empty());
    // The check can fail: an accrual that forgets its advance is caught.
    sqlx::query("UPDATE credit_accruals SET advanced = 0 WHERE user_id = $1 AND seq = 9")
        .bind(user)
        .execute(&a)
        .await
        .unwrap();
    let problems = ledger::problems(&a, None).await.unwrap();
    assert!(format!("{problems:?}").contains("advanced but its advance entries sum to 900"), "{problems:?}");
}

async fn app_balance(pool: &PgPool, user: Uuid) -> i64 {
    sqlx::query_scalar("SELECT balance FROM credit_accounts WHERE user_id = $1")
        .bind(user)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn overage_without_a_price_cap_is_bounded_by_the_default_or_the_users_cap_and_off_means_released_only() {
    let (pool, _) = fresh_database().await;
    let now = Utc::now();
    let spend = |user: Uuid, cost: i64, key: String| {
        let pool = pool.clone();
        async move { ledger::spend(&mut pool.acquire().await.unwrap(), user, cost, &key, &json!({}), now).await.unwrap() }
    };
    // No cap on the price, none set by the user: Tally's default ($3: 300 credits) bounds it.
    let user = accruing_account(&pool, 1000, None, 300).await;
    assert!(matches!(spend(user, 1300, "all".into()).await, SpendOutcome::Spent { .. }));
    assert_eq!(spend(user, 1, "one-more".into()).await, SpendOutcome::OverCap { available: 0 });
    let p = ledger::period::current(&pool, user, now).await.unwrap().unwrap();
    assert_eq!((p.overage, p.cap_in_force()), (300, Some((300, true))));

    // The user's own cap wins over the default, higher or lower.
    let user = accruing_account(&pool, 1000, None, 300).await;
    let mut conn = pool.acquire().await.unwrap();
    let mine = tally::server::usage::settings::UsageSettings {
        overage_allowed: true,
        spend_cap_cents: Some(50),
        ..Default::default()
    };
    tally::server::usage::settings::save(&mut conn, user, &mine).await.unwrap();
    assert_eq!(spend(user, 1051, "past-mine".into()).await, SpendOutcome::OverCap { available: 100 });
    assert!(matches!(spend(user, 1050, "to-mine".into()).await, SpendOutcome::Spent { .. }));
    let p = ledger::period::current(&pool, user, now).await.unwrap().unwrap();
    assert_eq!((p.overage, p.cap_in_force()), (50, Some((50, false))));

    // Overage off: only what is released now, as before; nothing is advanced.
    let user = accruing_account(&pool, 1000, Some(500), 300).await;
    let off = tally::server::usage::settings::UsageSettings::default();
    tally::server::usage::settings::save(&mut conn, user, &off).await.unwrap();
    assert_eq!(spend(user, 101, "past-released".into()).await, SpendOutcome::Insufficient { available: 100 });
    assert!(matches!(spend(user, 100, "released".into()).await, SpendOutcome::Spent { .. }));
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT kind FROM credit_entries WHERE user_id = $1 ORDER BY kind")
            .bind(user)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(kinds, ["daily_accrual", "spend"], "released days and spends only: nothing advanced");
    assert!(ledger::problems(&pool, None).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_second_subscriptions_period_keeps_the_first_ones_counters_and_both_are_checked() {
    let (pool, _) = fresh_database().await;
    let now = Utc::now();
    let spend = |user: Uuid, cost: i64, key: &'static str| {
        let pool = pool.clone();
        async move { ledger::spend(&mut pool.acquire().await.unwrap(), user, cost, key, &json!({}), now).await.unwrap() }
    };
    // Subscription A: 100 credits, overage on; 150 spent, so 50 of overage.
    let user = account(&pool, 100, Some((1, Some(500))), true).await;
    assert!(matches!(spend(user, 150, "a1").await, SpendOutcome::Spent { .. }));
    let a = ledger::period::current(&pool, user, now).await.unwrap().unwrap();
    assert_eq!((a.spent, a.overage), (150, 50));

    // Subscription B starts a period inside A's (a second checkout, or a plan change made as a
    // new subscription): spends count into B from now on, and A's counters are kept.
    let b_key = ledger::period::key("sub-b", now - Duration::hours(1));
    let terms = Some(tally::domain::usage::OverageTerms { unit_cents: 2, cap_cents: Some(1000) });
    let b = ledger::period::PeriodStart {
        key: &b_key,
        start: now - Duration::hours(1),
        end: now + Duration::days(30),
        allotment: 200,
        overage: terms,
        open: true,
        default_cap_cents: 10_000,
    };
    ledger::period::start(&mut pool.acquire().await.unwrap(), user, &b).await.unwrap();
    let current = ledger::period::current(&pool, user, now).await.unwrap().unwrap();
    assert_eq!((current.key.as_str(), current.spent, current.overage), (b_key.as_str(), 0, 0));
    let archived: (i64, i64, Option<i64>) =
        sqlx::query_as("SELECT spent, overage, unit_cents FROM credit_periods WHERE user_id = $1 AND period_key = $2")
            .bind(user)
            .bind(&a.key)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(archived, (150, 50, Some(1)));
    assert!(ledger::problems(&pool, None).await.unwrap().is_empty());

    // Overage in B goes to B's bucket, under B's price; A's is untouched.
    assert!(matches!(spend(user, 20, "b1").await, SpendOutcome::Spent { .. }));
    let current = ledger::period::current(&pool, user, now).await.unwrap().unwrap();
    assert_eq!((current.spent, current.overage, current.projected_charge_cents()), (20, 20, 40));
    // A late state of A (its period started earlier) does not take the account back.
    let a_again = ledger::period::PeriodStart {
        key: &a.key,
        start: a.start,
        end: a.end,
        allotment: 100,
        overage: Some(tally::domain::usage::OverageTerms { unit_cents: 1, cap_cents: Some(500) }),
        open: true,
        default_cap_cents: 10_000,
    };
    ledger::period::start(&mut pool.acquire().await.unwrap(), user, &a_again).await.unwrap();
    assert_eq!(ledger::period::current(&pool, user, now).await.unwrap().unwrap().key, b_key);
    assert!(ledger::problems(&pool, None).await.unwrap().is_empty());

    // Both periods' overage is unbilled (what account deletion checks), until A ends.
    let unbilled = ledger::period::unbilled(&pool, user, now).await.unwrap();
    assert_eq!(unbilled.iter().map(|u| (u.overage, u.charge_cents())).collect::<Vec<_>>(), [(50, 50), (20, 40)]);
    ledger::period::end(&mut pool.acquire().await.unwrap(), user, &a.key, now).await.unwrap();
    let unbilled = ledger::period::unbilled(&pool, user, now).await.unwrap();
    assert_eq!(unbilled.iter().map(|u| u.key.as_str()).collect::<Vec<_>>(), [b_key.as_str()]);

    // The check covers the archived period: a counter that disagrees with its entries is caught.
    sqlx::query("UPDATE credit_periods SET overage = 49 WHERE user_id = $1").bind(user).execute(&pool).await.unwrap();
    let problems = ledger::problems(&pool, None).await.unwrap();
    assert!(format!("{problems:?}").contains("counts 49 overage but its overage entries sum to 50"), "{problems:?}");
}

#[tokio::test]
async fn a_revoked_subscriptions_overage_stays_recorded_and_visible() {
    let app = spawn_app_with(&[("FREE_CREDITS", "0"), ("API_RATE_LIMIT_PER_MINUTE", "1000")]).await;
    let (user, sub, key) = pro_with_overage(&app, "revoked-overage@example.com").await;
    for _ in 0..51 {
        assert_eq!(text(&app, &key, 100_000).await.status(), 200);
    }
    assert_eq!(overage_entries(&app.pool, user).await, 100);

    // Revoked now at Polar (as from its dashboard): once the webhook is applied, the period is
    // over, and what was used in it is still recorded and shown.
    app.revoke_at_polar(&sub).await;
    let period = eventually("the revoked subscription's period ends", || async {
        let period = usage(&app).await["period"].clone();
        if period["ended"] == true {
            Ok(period)
        } else {
            Err(period)
        }
    })
    .await;
    assert_eq!((period["overage_units"].as_i64(), period["projected_cents"].as_i64()), (Some(100), Some(100)));
    let html = app.page("/billing").await;
    assert!(html.contains("Usage in your last period") && html.contains("ended early"), "shown on the page");
    // No new spend reaches into the ended period (a free account now), and nothing was lost.
    assert_eq!(text(&app, &key, 1_000).await.status(), 402);
    assert_eq!(overage_entries(&app.pool, user).await, 100);
    assert!(ledger::problems(&app.pool, None).await.unwrap().is_empty());
}

#[tokio::test]
async fn alert_mail_is_bounded_per_account_and_never_delays_account_mail() {
    let (pool, _) = fresh_database().await;
    let mailer = tally::server::mail::Mailer::dev_mailbox("Tally <billing@tally.test>").unwrap();
    let now = Utc::now();
    let user = account(&pool, 1000, None, false).await;
    let to: String =
        sqlx::query_scalar("SELECT email FROM users WHERE id = $1").bind(user).fetch_one(&pool).await.unwrap();
    // An account moving its low-balance threshold back and forth fires an alert per threshold.
    for n in 1..=5 {
        sqlx::query(
            "INSERT INTO usage_alerts (user_id, period_key, alert, fired_at, entry_key, balance, period_spent, allotment)
             VALUES ($1, 'p', $2, $3, 'k', 0, 0, 1000)",
        )
        .bind(user)
        .bind(format!("below:{n}00"))
        .bind(now)
        .execute(&pool)
        .await
        .unwrap();
    }
    let queued = tally::server::usage::alerts::mail_new(&pool, &mailer, "http://tally.test", 2, now).await.unwrap();
    assert_eq!(queued, 2, "at most ALERT_MAILS_PER_DAY alert mails a day");
    let handled: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_alerts WHERE handled_at IS NOT NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(handled, 5, "every alert is dealt with (the banner still shows it)");

    // A password reset queued after them is sent first.
    let mut conn = pool.acquire().await.unwrap();
    let reset = tally::server::mail::Mail {
        kind: "reset_password",
        to: to.clone(),
        subject: "Reset your password".into(),
        text: "https://tally.test/reset?token=x".into(),
    };
    tally::server::mail::enqueue(&mut conn, Some(user), &reset).await.unwrap();
    assert!(tally::server::mail::send_due(&pool, &mailer, Utc::now()).await.unwrap());
    let first: String =
        sqlx::query_scalar("SELECT subject FROM dev_mailbox ORDER BY id LIMIT 1").fetch_one(&pool).await.unwrap();
    assert_eq!(first, "Reset your password");
    while tally::server::mail::send_due(&pool, &mailer, Utc::now()).await.unwrap() {}
    let sent: i64 = sqlx::query_scalar("SELECT count(*) FROM dev_mailbox").fetch_one(&pool).await.unwrap();
    assert_eq!(sent, 3);
}
