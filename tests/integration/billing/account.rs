//! The account over time: deletion, reconcile after lost local state, credit history and its
//! CSV export, and many billing pages at once on a small pool.

use super::*;

#[tokio::test]
async fn deleting_the_account_deletes_the_polar_customer_and_pseudonymizes_the_user() {
    let app = spawn_app().await;
    let user = app.sign_up("leaving@example.com").await;
    app.buy("pro").await;
    // Access is confirmed from Customer State; the subscription's own webhook may land a little
    // later. Wait for it, so the account has a live subscription here when it is deleted.
    eventually("the subscription is applied", || async {
        let live: i64 =
            sqlx::query_scalar("SELECT count(*) FROM subscriptions WHERE user_id = $1 AND status = 'active'")
                .bind(user)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        if live == 1 {
            Ok(())
        } else {
            Err(live)
        }
    })
    .await;
    let credits_before = app.balance(user).await;

    let res = call(&app, "/api/account/delete", &[("confirm_email", "someone@example.com")]).await;
    assert_eq!(res.status(), 422);
    assert_eq!(app_error(res).await.field(), Some("confirm_email"));

    assert_eq!(
        app.go("/api/account/delete", &[("confirm_email", "Leaving@Example.com")]).await,
        "/?done=account-deleted"
    );
    let (email, deleted): (String, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT email, deleted_at FROM users WHERE id = $1")
            .bind(user)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(email.ends_with("@deleted.invalid") && deleted.is_some());
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions WHERE user_id = $1")
        .bind(user)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(sessions, 0);
    // Signed out: account pages send the browser to sign in.
    let res = app.client.get(format!("{}/billing", app.address)).send().await.unwrap();
    assert!(res.status().is_redirection());
    // Polar no longer has the customer; its subscription ended with it, here at once (Polar's
    // webhooks about it may come later and no longer name the user).
    let token = standin_token();
    let res = reqwest::Client::new()
        .get(format!("{}/polar/v1/customers/external/{user}", app.address))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let status: String = sqlx::query_scalar("SELECT status FROM subscriptions WHERE user_id = $1")
        .bind(user)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(status, "canceled");
    let scheduled: i64 =
        sqlx::query_scalar("SELECT count(*) FROM credit_accruals WHERE user_id = $1 AND applied_at IS NULL")
            .bind(user)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(scheduled, 0, "no allotment accrues for an account that is gone");
    // The ledger keeps its history and totals; free credits stay on the books.
    assert_eq!(app.balance(user).await.free, credits_before.free);
    assert!(tally::server::ledger::problems(&app.pool, None).await.unwrap().is_empty());
    // The address can sign up again as a new account.
    app.sign_up("leaving@example.com").await;
}

#[tokio::test]
async fn reconcile_restores_what_polar_says_after_local_state_was_lost() {
    let app = spawn_app().await;
    let user = app.sign_up("reconcile@example.com").await;
    app.buy("business").await;
    // Let the checkout's webhooks land, then lose the local view.
    tokio::time::sleep(Duration::from_millis(800)).await;
    sqlx::query("DELETE FROM subscriptions").execute(&app.pool).await.unwrap();
    sqlx::query("DELETE FROM polar_customers").execute(&app.pool).await.unwrap();
    let mut config = test_config(&[]);
    config.polar.api_url = url::Url::parse(&format!("{}/polar", app.address)).unwrap();
    let state = tally::server::state::AppState::new(config, app.pool.clone()).unwrap();
    let plan = tally::server::billing::reconcile(&state.billing, user).await.unwrap();
    assert_eq!(plan, tally::domain::plans::PlanId::Business);
    let (plan, status): (Option<String>, String) =
        sqlx::query_as("SELECT plan, status FROM subscriptions WHERE user_id = $1")
            .bind(user)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((plan.as_deref(), status.as_str()), (Some("business"), "active"));
    let linked: String = sqlx::query_scalar("SELECT status FROM polar_customers WHERE user_id = $1")
        .bind(user)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(linked, "linked");
}

#[tokio::test]
async fn the_billing_page_shows_credit_history_and_usage() {
    let app = spawn_app().await;
    let user = app.sign_up("history@example.com").await;
    let billing = app.page("/billing").await;
    assert!(billing.contains("Free credits") && billing.contains("+1,000"), "the free grant is in the history");
    assert!(billing.contains("No credits spent in the last 30 days."));
    for i in 0..3 {
        let key = format!("h{i}");
        let mut conn = app.pool.acquire().await.unwrap();
        tally::server::ledger::spend(
            &mut conn,
            user,
            2,
            &key,
            &serde_json::json!({ "operation": "text.stats" }),
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    }
    let billing = app.page("/billing").await;
    // Three spends in a row of one operation (and key) on one day: one line, their total, and
    // each of them when the line is expanded.
    assert!(billing.contains("3 API calls: text.stats") && billing.contains(">-6<"), "{billing}");
    assert!(billing.contains("<details class=\"run\"") && billing.matches(">-2<").count() == 3, "{billing}");
    assert!(billing.contains("6 credits spent in the last 30 days"), "the chart sums today's spend");
    // A run of 25 on a named key: its name, 10 entries to expand, and the rest as CSV.
    let (key, _) = tally::server::api_keys::create(&app.pool, user, "Production", 10).await.unwrap().unwrap();
    for i in 0..25 {
        let mut conn = app.pool.acquire().await.unwrap();
        tally::server::ledger::spend(
            &mut conn,
            user,
            1,
            &format!("r{i}"),
            &serde_json::json!({ "operation": "text.stats", "api_key_id": key }),
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    }
    let billing = app.page("/billing").await;
    assert!(billing.contains("25 API calls: text.stats (key “Production”)") && billing.contains(">-25<"), "{billing}");
    assert!(billing.contains("and 15 more: ") && billing.contains("/billing/history.csv?from="), "{billing}");
    // Pagination: 15 lines a page; more spends (on alternating keys, so each is its own line)
    // push the free grant to page 2.
    let keys = [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()];
    for i in 3..20 {
        let mut conn = app.pool.acquire().await.unwrap();
        tally::server::ledger::spend(
            &mut conn,
            user,
            1,
            &format!("h{i}"),
            &serde_json::json!({ "operation": "text.stats", "api_key_id": keys[i % 2] }),
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    }
    let first = app.page("/billing").await;
    assert!(!first.contains("Free credits") && !first.contains("?after="), "{first}");
    // Older pages down to the free grant, the oldest entry: no Older link there. (A page reads
    // at most 30 entries, so the run of 25 and the 17 single calls take more than one.)
    let mut pages = vec![first];
    while let Some(older) = pager_link(pages.last().unwrap(), "/billing?before=") {
        pages.push(app.page(&older).await);
        assert!(pages.len() <= 4, "46 entries take at most four pages");
    }
    let last = pages.last().unwrap();
    assert!(pages.len() >= 2 && last.contains("Free credits"), "{last}");
    assert!(pages.iter().filter(|p| p.contains("Free credits")).count() == 1, "each entry on one page");
    assert!(pages.iter().any(|p| p.contains("3 API calls: text.stats")), "the first run is still one line");
    let newer = pager_link(last, "/billing?after=").expect("a Newer link");
    let back = app.page(&newer).await;
    assert!(!back.contains("Free credits") && back.contains("?before="), "Newer leads back");
    // A cursor that is not one of ours shows the newest page, not an error.
    let forged = app.page("/billing?before=1%27%20OR%201%3D1--").await;
    assert!(forged.contains("API call: text.stats") && !forged.contains("Free credits"));
}

/// The pager link starting with `prefix`, without its fragment.
fn pager_link(html: &str, prefix: &str) -> Option<String> {
    let start = html.find(prefix)?;
    let rest = &html[start..];
    let end = rest.find(['#', '"'])?;
    Some(rest[..end].to_string())
}

#[tokio::test]
async fn the_credit_history_downloads_as_csv_for_a_bounded_range_in_chunks() {
    let app = spawn_app().await;
    let user = app.sign_up("csv@example.com").await;
    // 2,500 entries yesterday: the export reads them in three chunks.
    let yesterday = chrono::Utc::now() - chrono::Duration::days(1);
    let mut conn = app.pool.acquire().await.unwrap();
    let g = tally::server::ledger::grant_pack(&mut conn, user, "csv-order", 5000, "csv-product", yesterday).await;
    assert!(g.unwrap().applied);
    for i in 0..2499 {
        let meta = serde_json::json!({ "operation": "text.stats" });
        tally::server::ledger::spend(&mut conn, user, 1, &format!("csv-{i}"), &meta, yesterday).await.unwrap();
    }
    drop(conn);
    let res = app.client.get(format!("{}/billing/history.csv", app.address)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(res.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment; filename=\"tally-credits-"));
    let csv = res.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "time_utc,kind,description,credits");
    // Compressed, as a browser asks for it (the encoder reads the body to its end and once more).
    let gzipped =
        app.client.get(format!("{}/billing/history.csv", app.address)).header("accept-encoding", "gzip").send();
    let gzipped = gzipped.await.unwrap();
    assert_eq!((gzipped.status().as_u16(), gzipped.headers()["content-encoding"].to_str().unwrap()), (200, "gzip"));
    assert!(gzipped.bytes().await.expect("the whole compressed body").len() > 100);
    // The free credits, the pack and 2,499 spends, oldest first.
    assert_eq!(lines.len(), 1 + 1 + 1 + 2499, "every entry once");
    assert_eq!(lines.iter().filter(|l| l.ends_with(",spend,API call: text.stats,-1")).count(), 2499);
    let total: i64 = lines[1..].iter().map(|l| l.rsplit(',').next().unwrap().parse::<i64>().unwrap()).sum();
    assert_eq!(total, app.balance(user).await.total, "the export adds up to the balance");
    // Yesterday only: the free credits came with the sign-up, today.
    let today = chrono::Utc::now().date_naive();
    let only_yesterday = format!("/billing/history.csv?from={}&to={}", yesterday.date_naive(), yesterday.date_naive());
    let csv = app.client.get(format!("{}{only_yesterday}", app.address)).send().await.unwrap().text().await.unwrap();
    assert_eq!(csv.lines().count(), 1 + 1 + 2499, "the free credits (today) are outside the range");
    for (query, why) in [
        (format!("from={}&to={today}", today - chrono::Duration::days(400)), "more than a year"),
        (format!("from={today}&to={}", today - chrono::Duration::days(1)), "from after to"),
        ("from=yesterday".to_string(), "not a date"),
    ] {
        let res = app.client.get(format!("{}/billing/history.csv?{query}", app.address)).send().await.unwrap();
        assert_eq!(res.status(), 422, "{why}");
    }
    // Signed out: sign in first, and nothing of anyone's history.
    let res = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/billing/history.csv", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert!(app.page("/billing").await.contains("Download CSV"));
}

/// A request never holds one pooled connection while it waits for another: with two
/// connections in the pool, forty billing pages at once all render (each reads its plan, then
/// the rest of the page on one connection); a starved one would wait out the pool's acquire
/// timeout and fail.
#[tokio::test]
async fn many_billing_pages_at_once_never_starve_a_small_pool() {
    let app = spawn_app_with(&[("DATABASE_POOL_SIZE", "2")]).await;
    app.sign_up("starve@example.com").await;
    let pages = futures::future::join_all((0..40).map(|_| {
        let (client, url) = (app.client.clone(), format!("{}/billing", app.address));
        async move {
            let res = client.get(url).send().await.unwrap();
            (res.status(), res.text().await.unwrap())
        }
    }))
    .await;
    for (status, body) in &pages {
        assert_eq!(*status, 200);
        assert!(body.contains("Credit history"), "{body}");
    }
}
