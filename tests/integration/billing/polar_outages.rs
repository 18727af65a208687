//! Polar slow, down, lagging or rationed: last known plans, caches (Postgres and Redis), the
//! stand-in's controls, per-user and shared budgets of Polar calls, lost webhooks repaired by
//! the scheduled reconcile, and its lease.

use super::*;

#[tokio::test]
async fn when_polar_is_down_pages_show_the_last_known_plan_and_the_guard_fails_closed_without_one() {
    let app = spawn_app().await;
    let user = app.sign_up("outage@example.com").await;
    let url = app.go("/api/billing/checkout", &[("item", "pro")]).await;
    let checkout_id = app.pay(&url, "4242424242424242").await.unwrap();
    app.wait_ready(&checkout_id).await;

    let mut config = test_config(&[]);
    config.polar.api_url = url::Url::parse(&format!("{}/polar", app.address)).unwrap();
    let state = tally::server::state::AppState::new(config, app.pool.clone()).unwrap();
    use tally::server::billing::require_benefit;
    assert!(require_benefit(&state.billing, user, "pro").await.is_ok());
    assert!(matches!(
        require_benefit(&state.billing, user, "business").await,
        Err(tally::server::billing::Error::NotEntitled(_))
    ));

    // Polar goes down and the cache is stale: the last known state still grants Pro, marked stale.
    control(&app, "/outage", serde_json::json!({ "kind": "error", "count": 1000 })).await;
    sqlx::query("UPDATE polar_customers SET state_fetched_at = now() - interval '1 hour'")
        .execute(&app.pool)
        .await
        .unwrap();
    let read =
        tally::server::billing::customer_state(&state.billing, user, tally::server::billing::STATE_TTL).await.unwrap();
    assert!(read.stale && read.has_benefit("pro"));
    assert!(require_benefit(&state.billing, user, "pro").await.is_ok());
    let billing = app.page("/billing").await;
    assert!(billing.contains("not answering") && billing.contains("<p class=\"plan-name\">Pro"), "{billing}");

    // Too old to trust: fail closed.
    sqlx::query("UPDATE polar_customers SET state_fetched_at = now() - interval '2 days'")
        .execute(&app.pool)
        .await
        .unwrap();
    assert!(matches!(
        require_benefit(&state.billing, user, "pro").await,
        Err(tally::server::billing::Error::CannotConfirm)
    ));
    // No cached state at all: fail closed.
    sqlx::query("UPDATE polar_customers SET state = NULL, state_fetched_at = NULL").execute(&app.pool).await.unwrap();
    assert!(matches!(
        require_benefit(&state.billing, user, "pro").await,
        Err(tally::server::billing::Error::CannotConfirm)
    ));
    end_outage(&app).await;
    assert!(require_benefit(&state.billing, user, "pro").await.is_ok(), "back when Polar is");
}

#[tokio::test]
async fn with_redis_customer_state_is_read_there_first_dropped_on_change_and_redis_is_optional() {
    let redis = RedisServer::start();
    let app = spawn_app_with(&[("REDIS_URL", &redis.url)]).await;
    let user = app.sign_up("redis@example.com").await;
    app.buy("pro").await;
    let mut r = redis::Client::open(redis.url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let key = format!("tally:customer_state:{user}");
    // The purchase's webhooks keep dropping the entry while they arrive; then a read caches it.
    // The entry and its TTL are read in one round trip (a late webhook may drop it in between).
    let (cached, ttl) = eventually("the page's read is cached in Redis", || async {
        page_until(&app, "/billing", "<p class=\"plan-name\">Pro").await;
        let (cached, ttl): (Option<String>, i64) =
            redis::pipe().get(&key).cmd("TTL").arg(&key).query_async(&mut r.clone()).await.unwrap();
        cached.map(|c| (c, ttl)).ok_or(ttl)
    })
    .await;
    let cached: Value = serde_json::from_str(&cached).unwrap();
    assert!(cached["state"]["granted_benefits"].to_string().contains("\"pro\""), "{cached}");
    assert!((1..=30).contains(&ttl), "expires with the cache's TTL: {ttl}");

    settle(&app).await;
    // Reads through the cache go to Redis first: an entry saying "no customer" makes /pricing
    // show Free as the current plan. (/billing serves the Postgres row its account statement
    // reads anyway while a page may show it: `customer_state::stored_for_page`.)
    let planted = serde_json::json!({ "state": null, "fetched_at": chrono::Utc::now() }).to_string();
    let _: () = redis::AsyncCommands::set_ex(&mut r, &key, planted, 30).await.unwrap();
    let pricing = app.page("/pricing").await;
    let free_card = pricing.split("<h2 id=\"plan-free\">").nth(1).expect("the Free card");
    assert!(free_card.split("plan__cta").nth(1).unwrap().contains("Your current plan"), "{pricing}");

    // A change at Polar (a renewal, from its webhooks alone): once processed, the entry is gone
    // and the next read is Polar's truth again.
    let sub: String = sqlx::query_scalar("SELECT id FROM subscriptions WHERE user_id = $1")
        .bind(user)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(control(&app, &format!("/subscriptions/{sub}/renew"), Value::Null).await.status(), 200);
    page_until(&app, "/billing", "<p class=\"plan-name\">Pro").await;

    // A change made through Tally drops it at once.
    let _: () = redis::AsyncCommands::set_ex(&mut r, &key, "{}", 30).await.unwrap();
    app.go("/api/billing/cancel", &[("cancel", "true")]).await;
    let exists: bool = redis::AsyncCommands::exists(&mut r, &key).await.unwrap();
    assert!(!exists, "canceling dropped the entry");

    // Redis going away is a cache miss, not an outage.
    drop(r);
    drop(redis);
    let html = app.page("/billing").await;
    assert!(html.contains("<p class=\"plan-name\">Pro") && html.contains("it will not renew"), "{html}");
}

#[tokio::test]
async fn after_a_change_the_cache_follows_polars_lagging_state_within_seconds() {
    // Customer State lags changes (Polar caches it); a read right after the upgrade still says
    // Pro. That answer must not be kept for the whole TTL.
    let app = spawn_app_with(&[("POLAR_STANDIN_STATE_LAG_MS", "1500")]).await;
    app.sign_up("lag@example.com").await;
    app.buy("pro").await;
    settle(&app).await;
    assert_eq!(app.go("/api/billing/change-plan", &[("plan", "business")]).await, "/billing?done=upgraded");
    assert!(app.page("/billing").await.contains("<p class=\"plan-name\">Pro"), "Polar's state has not caught up yet");
    // page_until gives up after about 10 s, well within the 30 s TTL.
    page_until(&app, "/billing", "<p class=\"plan-name\">Business").await;
}

#[tokio::test]
async fn the_stand_ins_controls_refuse_requests_without_the_controls_token() {
    let app = spawn_app().await;
    for (path, body) in [
        ("/orders/00000000-0000-4000-8000-000000000000/refund", serde_json::json!({})),
        ("/webhooks/endpoints", serde_json::json!({ "url": "http://127.0.0.1:9/x", "secret": "s" })),
    ] {
        let res = reqwest::Client::new()
            .post(format!("{}/polar/_standin{path}", app.address))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{path}");
        let res = reqwest::Client::new()
            .post(format!("{}/polar/_standin{path}", app.address))
            .bearer_auth(standin_token())
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{path}: the API token is not the controls token");
    }
    assert_eq!(
        reqwest::Client::new()
            .get(format!("{}/polar/_standin/webhooks/deliveries", app.address))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test]
async fn another_users_ids_are_refused_before_polar_is_asked() {
    let app = spawn_app().await;
    app.sign_up("owner@example.com").await;
    let url = app.go("/api/billing/checkout", &[("item", "pack_50")]).await;
    let checkout_id = app.pay(&url, "4242424242424242").await.unwrap();
    app.wait_ready(&checkout_id).await;
    let order_id: Option<String> =
        sqlx::query_scalar("SELECT id FROM polar_orders LIMIT 1").fetch_optional(&app.pool).await.unwrap();
    assert!(order_id.is_some(), "the order is known to be the owner's");
    let other = spawn_app_on(app.pool.clone(), app.db_name.clone(), &[]).await;
    other.sign_up("intruder@example.com").await;
    let before = standin_requests(&app).await.len();
    assert_eq!(other.checkout_status(&checkout_id).await.0, 404);
    assert_eq!(
        call(
            &other,
            "/api/billing/invoice",
            &[("order_id", order_id.as_deref().unwrap_or("00000000-0000-4000-8000-000000000000"))]
        )
        .await
        .status(),
        404
    );
    let after = standin_requests(&app).await;
    let asked: Vec<_> = after[before..]
        .iter()
        .filter(|(_, p)| p.contains(&checkout_id) || order_id.as_deref().is_some_and(|o| p.contains(o)))
        .collect();
    assert!(asked.is_empty(), "Polar was asked about another user's ids: {asked:?}");
}

#[tokio::test]
async fn each_user_has_a_budget_of_polar_calls() {
    let app = spawn_app_with(&[("POLAR_CALLS_PER_USER_PER_MINUTE", "3")]).await;
    app.sign_up("busy@example.com").await;
    for _ in 0..3 {
        assert_eq!(call(&app, "/api/billing/checkout", &[("item", "pack_50")]).await.status(), 200);
    }
    let res = call(&app, "/api/billing/checkout", &[("item", "pack_50")]).await;
    assert_eq!(res.status(), 429);
    assert!(matches!(app_error(res).await, tally::error::AppError::RateLimited { .. }));
    // Another user is not affected.
    let other = spawn_app_on(app.pool.clone(), app.db_name.clone(), &[("POLAR_CALLS_PER_USER_PER_MINUTE", "3")]).await;
    other.sign_up("calm@example.com").await;
    assert_eq!(call(&other, "/api/billing/checkout", &[("item", "pack_50")]).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_account_bursting_cannot_spend_what_every_customer_shares() {
    let app = spawn_app().await;
    // The attacker: a new, unconfirmed account.
    let attacker = app.another_browser();
    let res =
        post_form(&attacker, "/api/signup", &[("email", "burst@example.com"), ("password", "correct horse battery")])
            .await;
    assert!(res.status().is_redirection());
    let attacker_id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM users WHERE email = 'burst@example.com'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let asked_about = |requests: &[(String, String)]| {
        requests.iter().filter(|(_, path)| path.contains(&attacker_id.to_string())).count()
    };
    let before = asked_about(&standin_requests(&app).await);

    // 1,000 concurrent plan-change previews, each of which needs the account's Customer State;
    // meanwhile another customer buys.
    let burst: Vec<_> = (0..1000)
        .map(|_| {
            let a = attacker.same_browser();
            tokio::spawn(async move { call(&a, "/api/billing/plan-change", &[("plan", "pro")]).await })
        })
        .collect();
    let buyer = app.another_browser();
    buyer.sign_up("buyer@example.com").await;
    let checkout = call(&buyer, "/api/billing/checkout", &[("item", "pro")]).await;
    assert_eq!(checkout.status(), 200, "another customer's checkout during the burst");
    let (mut limited, mut answered) = (0, 0);
    for r in burst {
        let res = r.await.unwrap();
        match res.status().as_u16() {
            429 => {
                assert!(res.headers().contains_key("retry-after"), "a 429 says when to come back");
                limited += 1;
            }
            409 => answered += 1,
            s => panic!("unexpected {s}: {}", res.text().await.unwrap()),
        }
    }
    assert_eq!(limited + answered, 1000);
    // Polar was asked about the attacker at most its budget (unconfirmed: 10 a minute).
    let asked = asked_about(&standin_requests(&app).await) - before;
    assert!((1..=10).contains(&asked), "Polar was asked {asked} times for one account");
    let ready: serde_json::Value =
        app.client.get(format!("{}/readyz", app.address)).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["polar_circuit"], "closed", "{ready}");
    assert_eq!(ready["polar_background_circuit"], "closed", "{ready}");
}

#[tokio::test]
async fn all_pages_together_leave_background_work_its_share_of_polars_quota() {
    let app = spawn_app_with(&[("POLAR_PAGE_REQUESTS_PER_MINUTE", "4")]).await;
    let mut users = vec![];
    for i in 0..3 {
        let b = app.another_browser();
        b.sign_up(&format!("share-{i}@example.com")).await;
        users.push(b);
    }
    // The budget is counted per clock minute: start the six calls early in one, so that a
    // minute turning between them cannot hand out a second budget (this test failed once so).
    let second = chrono::Utc::now().timestamp().rem_euclid(60);
    if second > 40 {
        tokio::time::sleep(std::time::Duration::from_secs((61 - second) as u64)).await;
    }
    let mut statuses = vec![];
    for b in &users {
        for _ in 0..2 {
            statuses.push(call(b, "/api/billing/checkout", &[("item", "pack_50")]).await.status().as_u16());
        }
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 4, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 2, "{statuses:?}");
    // Usage shipping, on its own share and breaker, still reaches Polar.
    let user: uuid::Uuid = sqlx::query_scalar("SELECT id FROM users WHERE email = 'share-0@example.com'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let mut conn = app.pool.acquire().await.unwrap();
    let spent = tally::server::ledger::spend(&mut conn, user, 1, "share", &serde_json::json!({}), chrono::Utc::now())
        .await
        .unwrap();
    assert!(matches!(spent, tally::server::ledger::SpendOutcome::Spent { .. }));
    usage_drained(&app).await;
}

/// A plan a little past its cache TTL is shown at once and refreshed behind the page (views of
/// a busy account stalled on Polar each time its state expired); one marked stale by a webhook,
/// or older than the grace, is read before the page is shown, as before.
#[tokio::test]
async fn a_page_shows_a_plan_just_past_its_ttl_at_once_and_refreshes_it_behind() {
    let app = spawn_app().await;
    let user = app.sign_up("aging@example.com").await;
    app.buy("pro").await;
    page_until(&app, "/billing", "<p class=\"plan-name\">Pro").await;
    settle(&app).await;
    // Polar hangs from now on: a page that waited for it would say so.
    control(&app, "/outage", serde_json::json!({ "kind": "timeout", "count": 1000 })).await;
    let age = |secs: i64, stale: bool| {
        sqlx::query(
            "UPDATE polar_customers SET state_fetched_at = now() - make_interval(secs => $2), state_stale = $3,
                    state_changed_at = now() - interval '1 hour' WHERE user_id = $1",
        )
        .bind(user)
        .bind(secs as f64)
        .bind(stale)
        .execute(&app.pool)
    };
    let state_calls = |r: Vec<(String, String)>| r.iter().filter(|(_, p)| p.ends_with("/state")).count();

    let before = state_calls(standin_requests(&app).await);
    age(45, false).await.unwrap();
    let html = app.page("/billing").await;
    assert!(html.contains("<p class=\"plan-name\">Pro") && !html.contains("not answering"), "{html}");
    let asked = eventually("the page's refresh asks Polar", || async {
        let asked = state_calls(standin_requests(&app).await) - before;
        if asked > 0 {
            Ok(asked)
        } else {
            Err(asked)
        }
    })
    .await;
    assert_eq!(asked, 1, "one refresh behind the page");

    // Marked stale by a webhook, or past the grace: the page asks Polar first (and, Polar
    // hanging, shows the last known plan with a notice).
    for (secs, stale) in [(45, true), (30 + 60 + 5, false)] {
        age(secs, stale).await.unwrap();
        let html = app.page("/billing").await;
        assert!(html.contains("<p class=\"plan-name\">Pro") && html.contains("not answering"), "{secs} s, {stale}");
    }
    end_outage(&app).await;
}

#[tokio::test]
async fn a_page_answers_in_seconds_with_the_last_known_plan_while_polar_hangs() {
    let app = spawn_app().await;
    let user = app.sign_up("hang@example.com").await;
    app.buy("pro").await;
    page_until(&app, "/billing", "<p class=\"plan-name\">Pro").await;
    // Polar stops answering (each request hangs for a minute); the cached state is too old
    // to serve, so the page must ask, and must not wait.
    control(&app, "/outage", serde_json::json!({ "kind": "timeout", "count": 1000 })).await;
    sqlx::query("UPDATE polar_customers SET state_fetched_at = now() - interval '1 hour' WHERE user_id = $1")
        .bind(user)
        .execute(&app.pool)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let html = app.page("/billing").await;
    assert!(started.elapsed() < std::time::Duration::from_secs(15), "answered after {:?}", started.elapsed());
    assert!(
        html.contains("not answering") && html.contains("<p class=\"plan-name\">Pro"),
        "the last known plan, with a notice: {html}"
    );
    end_outage(&app).await;
}

#[tokio::test]
async fn a_renewal_or_revocation_whose_webhook_was_lost_is_applied_by_the_scheduled_reconcile() {
    let app = spawn_app_with(&[("RECONCILE_EVERY_SECS", "1"), ("RECONCILE_ACCOUNTS_PER_MINUTE", "600")]).await;
    let user = app.sign_up("lost-hooks@example.com").await;
    app.buy("pro").await;
    let stored = |pool: sqlx::PgPool| async move {
        sqlx::query_as::<_, (String, String, chrono::DateTime<chrono::Utc>)>(
            "SELECT id, status, current_period_start FROM subscriptions WHERE user_id = $1",
        )
        .bind(user)
        .fetch_optional(&pool)
        .await
        .unwrap()
    };
    let (sub, _, start) = eventually("the subscription's webhook arrives", || async {
        stored(app.pool.clone()).await.ok_or("no subscription yet")
    })
    .await;
    // From now on every webhook about this customer is lost (the endpoint down past retries).
    let res = control(&app, "/webhooks/lose", serde_json::json!({ "external_customer_ids": [user.to_string()] })).await;
    assert_eq!(res.status(), 204);
    let events_before: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_events").fetch_one(&app.pool).await.unwrap();

    // Renewed at Polar: the new period reaches the ledger without its webhook.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(control(&app, &format!("/subscriptions/{sub}/renew"), serde_json::Value::Null).await.status(), 200);
    let (_, status, new_start) = eventually("the scheduled reconcile applies the renewal", || async {
        let now = stored(app.pool.clone()).await;
        match now {
            Some((sub, status, s)) if s > start => Ok((sub, status, s)),
            other => Err(other),
        }
    })
    .await;
    assert_eq!(status, "active");
    let period: String = sqlx::query_scalar("SELECT period_key FROM credit_accounts WHERE user_id = $1")
        .bind(user)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(period, tally::server::ledger::period::key(&sub, new_start));

    // Revoked at Polar: applied too, so no overage stays open and the allotment ends.
    app.revoke_at_polar(&sub).await;
    eventually("the scheduled reconcile applies the revocation", || async {
        let now = stored(app.pool.clone()).await;
        if now.as_ref().is_some_and(|(_, s, _)| s == "canceled") {
            Ok(())
        } else {
            Err(now)
        }
    })
    .await;
    let events_after: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_events").fetch_one(&app.pool).await.unwrap();
    assert_eq!(events_after, events_before, "no webhook arrived: the reconcile did it");
    assert!(tally::server::ledger::problems(&app.pool, None).await.unwrap().is_empty());
}

#[tokio::test]
async fn one_instance_at_a_time_holds_the_reconcile_lease() {
    let (pool, _) = fresh_database().await;
    use tally::server::billing::scheduled::take_lease;
    let now = chrono::Utc::now();
    let ttl = chrono::Duration::seconds(10);
    assert!(take_lease(&pool, "reconcile", "a", ttl, now).await.unwrap());
    assert!(!take_lease(&pool, "reconcile", "b", ttl, now).await.unwrap(), "b waits while a holds it");
    assert!(take_lease(&pool, "reconcile", "a", ttl, now + chrono::Duration::seconds(5)).await.unwrap(), "a renews");
    assert!(!take_lease(&pool, "reconcile", "b", ttl, now + chrono::Duration::seconds(12)).await.unwrap());
    // a stopped renewing (crashed): once its lease expired, b takes over.
    assert!(take_lease(&pool, "reconcile", "b", ttl, now + chrono::Duration::seconds(16)).await.unwrap());
    assert!(!take_lease(&pool, "reconcile", "a", ttl, now + chrono::Duration::seconds(17)).await.unwrap());
}

#[tokio::test]
async fn the_invoices_page_reads_polar_once_a_minute_however_often_it_renders() {
    let app = spawn_app().await;
    app.sign_up("renders@example.com").await;
    app.buy("pack_50").await;
    page_until(&app, "/settings/billing", "50 credits").await;
    let orders_calls =
        |r: &[(String, String)]| r.iter().filter(|(m, p)| m == "GET" && p.starts_with("/v1/orders")).count();
    let before = orders_calls(&standin_requests(&app).await);
    // More renders than the user's budget of Polar calls a minute.
    for _ in 0..80 {
        let html = app.page("/settings/billing").await;
        assert!(html.contains("50 credits") && !html.contains("can't be listed"));
    }
    assert_eq!(orders_calls(&standin_requests(&app).await) - before, 0, "served from the cache");
    // A new order (a checkout, then its webhooks) makes the next renders read the list again,
    // and then it is served from the cache again.
    app.buy("pack_100").await;
    page_until(&app, "/settings/billing", "100 credits").await;
    let after = orders_calls(&standin_requests(&app).await);
    assert!(after > before, "re-read once the list may have changed");
    // Once the purchase's webhooks have all been applied:
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    app.page("/settings/billing").await;
    let settled = orders_calls(&standin_requests(&app).await);
    for _ in 0..40 {
        assert!(app.page("/settings/billing").await.contains("100 credits"));
    }
    assert_eq!(orders_calls(&standin_requests(&app).await), settled, "cached again");
}
