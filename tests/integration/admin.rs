//! The operator console's service: operators made from the command line, finding a customer,
//! credit adjustments applied once with their audit row in the same transaction, and an audit
//! log that cannot be changed.

use crate::helpers::*;
use chrono::Utc;
use tally::server::admin::{self, ActionError, Adjusted, Operator};
use tally::server::ledger;

async fn operator_of(app: &TestApp, email: &str) -> Operator {
    let id = app.sign_up(email).await;
    assert!(admin::add(&app.pool, email).await.unwrap());
    admin::operator(&app.pool, id).await.unwrap().expect("an operator now")
}

/// Makes this database refuse (or take again) every new audit row, as if its disk were full:
/// an action must then apply nothing.
async fn refuse_audit_rows(app: &TestApp, refuse: bool) {
    let sql = if refuse {
        "CREATE OR REPLACE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'audit down'; END $$;
         CREATE TRIGGER refuse_audit BEFORE INSERT ON operator_audit FOR EACH ROW EXECUTE FUNCTION refuse_audit();"
    } else {
        "DROP TRIGGER refuse_audit ON operator_audit"
    };
    sqlx::raw_sql(sql).execute(&app.pool).await.unwrap();
}

async fn audit_rows(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM operator_audit").fetch_one(&app.pool).await.unwrap()
}

#[tokio::test]
async fn operators_are_made_and_unmade_from_the_command_line_only() {
    let app = spawn_app().await;
    let user = app.sign_up("staff@example.com").await;
    assert_eq!(admin::operator(&app.pool, user).await.unwrap(), None, "nobody is an operator by default");
    assert!(admin::add(&app.pool, "Staff@Example.com").await.unwrap());
    assert!(!admin::add(&app.pool, "staff@example.com").await.unwrap(), "already one");
    let op = admin::operator(&app.pool, user).await.unwrap().unwrap();
    assert_eq!(op.email, "staff@example.com");
    assert_eq!(
        admin::list(&app.pool).await.unwrap().iter().map(|(e, _)| e.as_str()).collect::<Vec<_>>(),
        ["staff@example.com"]
    );
    assert!(admin::add(&app.pool, "nobody@example.com").await.unwrap_err().contains("no account"));
    assert!(admin::remove(&app.pool, "staff@example.com").await.unwrap());
    assert!(!admin::remove(&app.pool, "staff@example.com").await.unwrap());
    assert_eq!(admin::operator(&app.pool, user).await.unwrap(), None);
}

#[tokio::test]
async fn a_customer_is_found_by_email_id_polar_id_or_api_key_prefix() {
    let app = spawn_app().await;
    let user = app.sign_up("findme@example.com").await;
    let key = app.create_api_key("support").await;
    let prefix: String = sqlx::query_scalar("SELECT prefix FROM api_keys").fetch_one(&app.pool).await.unwrap();
    assert!(key.starts_with(&prefix));
    sqlx::query(
        "INSERT INTO polar_customers (user_id, polar_customer_id, status) VALUES ($1, 'cus_findme', 'linked')
                 ON CONFLICT (user_id) DO UPDATE SET polar_customer_id = 'cus_findme'",
    )
    .bind(user)
    .execute(&app.pool)
    .await
    .unwrap();
    for query in ["FindMe@example.com", &user.to_string(), "cus_findme", &prefix] {
        let found = admin::find(&app.pool, query).await.unwrap();
        assert_eq!(found.iter().map(|f| f.id).collect::<Vec<_>>(), [user], "{query}");
    }
    for query in ["", "findme", "someone@example.com", "tly_", &"x".repeat(400)] {
        assert!(admin::find(&app.pool, query).await.unwrap().is_empty(), "{query}");
    }
}

#[tokio::test]
async fn a_grant_applies_once_with_its_audit_row_however_often_the_form_is_sent() {
    let app = spawn_app().await;
    let op = operator_of(&app, "op@example.com").await;
    let customer = app.sign_up("customer@example.com").await;
    let now = Utc::now();
    let before = ledger::balance(&app.pool, customer, now).await.unwrap().total;
    let form = "f0rmkey0f0nesubmit1";
    // A double click: the same form twice at once, then once more.
    let (a, b) = tokio::join!(
        admin::adjust_credits(&app.pool, &op, customer, 100, "Goodwill for the outage", form, now),
        admin::adjust_credits(&app.pool, &op, customer, 100, "Goodwill for the outage", form, now),
    );
    let mut applied = [a.unwrap(), b.unwrap()];
    applied.sort_by_key(|a| matches!(a, Adjusted::AlreadyApplied));
    assert_eq!(applied, [Adjusted::Applied { before, after: before + 100 }, Adjusted::AlreadyApplied]);
    let again = admin::adjust_credits(&app.pool, &op, customer, 100, "Goodwill for the outage", form, now).await;
    assert_eq!(again.unwrap(), Adjusted::AlreadyApplied);
    assert_eq!(ledger::balance(&app.pool, customer, now).await.unwrap().total, before + 100);
    let rows = admin::audit(&app.pool, Some(customer), 10).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0].action.as_str(), rows[0].operator_email.as_str()), ("grant_credits", "op@example.com"));
    assert_eq!(rows[0].reason, "Goodwill for the outage");
    assert_eq!(rows[0].before, Some(serde_json::json!({ "balance": before })));
    assert_eq!(rows[0].after, Some(serde_json::json!({ "balance": before + 100, "delta": 100 })));
    // Taking back: never below zero, refused with nothing written.
    let too_much =
        admin::adjust_credits(&app.pool, &op, customer, -(before + 101), "Chargeback", "f0rmkey0ftakeback22", now);
    assert!(matches!(too_much.await, Err(ActionError::Ledger(ledger::AdjustError::Insufficient { .. }))));
    // A reason is required; a form key must look like one.
    let no_reason = admin::adjust_credits(&app.pool, &op, customer, 5, "  ", "f0rmkey0fnoreason33", now).await;
    assert!(matches!(no_reason, Err(ActionError::Reason)));
    let bad_key = admin::adjust_credits(&app.pool, &op, customer, 5, "Goodwill", "short", now).await;
    assert!(matches!(bad_key, Err(ActionError::FormKey)));
    let nobody = admin::adjust_credits(&app.pool, &op, uuid::Uuid::new_v4(), 5, "Goodwill", "f0rmkey0fnobody4444", now);
    assert!(matches!(nobody.await, Err(ActionError::NoCustomer)));
    assert_eq!(audit_rows(&app).await, 1);
    assert!(ledger::problems(&app.pool, None).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_action_and_its_audit_row_commit_together_or_not_at_all() {
    let app = spawn_app().await;
    let op = operator_of(&app, "op2@example.com").await;
    let customer = app.sign_up("atomic@example.com").await;
    let now = Utc::now();
    let before = ledger::balance(&app.pool, customer, now).await.unwrap().total;
    // The audit row cannot be written (this database refuses it): the grant is undone with it.
    refuse_audit_rows(&app, true).await;
    let failed = admin::adjust_credits(&app.pool, &op, customer, 100, "Goodwill", "f0rmkey0fatomic5555", now).await;
    assert!(matches!(failed, Err(ActionError::Db(_))), "{failed:?}");
    assert_eq!(ledger::balance(&app.pool, customer, now).await.unwrap().total, before, "no credits without the record");
    let entries: i64 =
        sqlx::query_scalar("SELECT count(*) FROM credit_entries WHERE idempotency_key LIKE 'operator:%'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(entries, 0);
    // Once the audit log takes rows again, the same form applies, with its row.
    refuse_audit_rows(&app, false).await;
    let applied = admin::adjust_credits(&app.pool, &op, customer, 100, "Goodwill", "f0rmkey0fatomic5555", now).await;
    assert_eq!(applied.unwrap(), Adjusted::Applied { before, after: before + 100 });
    assert_eq!(audit_rows(&app).await, 1);
}

#[tokio::test]
async fn the_audit_log_refuses_updates_deletes_and_truncation() {
    let app = spawn_app().await;
    let op = operator_of(&app, "op3@example.com").await;
    let customer = app.sign_up("audited@example.com").await;
    admin::adjust_credits(&app.pool, &op, customer, 10, "Welcome back", "f0rmkey0fappendonly6", Utc::now())
        .await
        .unwrap();
    for statement in
        ["UPDATE operator_audit SET reason = 'rewritten'", "DELETE FROM operator_audit", "TRUNCATE operator_audit"]
    {
        let err = sqlx::query(statement).execute(&app.pool).await.unwrap_err().to_string();
        assert!(err.contains("append-only"), "{statement}: {err}");
    }
    assert_eq!(admin::audit(&app.pool, None, 10).await.unwrap()[0].reason, "Welcome back");
}

async fn status_of(client: &reqwest::Client, url: String) -> u16 {
    client.get(url).send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn the_console_is_a_404_for_anyone_but_an_operator() {
    let app = spawn_app().await;
    let customer = app.sign_up("someone@example.com").await;
    let paths = [
        "/admin".to_string(),
        "/admin?q=someone%40example.com".into(),
        format!("/admin/customers/{customer}"),
        format!("/admin/customers/{customer}?polar=1"),
        "/admin/audit".into(),
        "/admin/audit.csv".into(),
    ];
    // Anonymous, then signed in without the role: the console does not exist.
    for path in &paths {
        assert_eq!(status_of(&reqwest::Client::new(), format!("{}{path}", app.address)).await, 404, "{path}");
        assert_eq!(status_of(&app.client, format!("{}{path}", app.address)).await, 404, "{path}");
        assert!(!app.page(path).await.contains("Operator console"));
    }
    let id = customer.to_string();
    assert_eq!(call(&app, "/api/admin/search", &[("q", "someone@example.com")]).await.status(), 404);
    assert_eq!(call(&app, "/api/admin/customer", &[("id", id.as_str())]).await.status(), 404);
    let filters = [("action", ""), ("operator", ""), ("customer", "")];
    assert_eq!(call(&app, "/api/admin/audit", &filters).await.status(), 404);
    let grant = [
        ("customer", id.as_str()),
        ("direction", "grant"),
        ("credits", "100"),
        ("reason", "Sneaky"),
        ("form_key", "f0rmkey0fnotanop777"),
    ];
    assert_eq!(call(&app, "/api/admin/adjust", &grant).await.status(), 404);
    let resync = [("customer", id.as_str()), ("reason", "Sneaky"), ("form_key", "f0rmkey0fnotanop777")];
    assert_eq!(call(&app, "/api/admin/resync", &resync).await.status(), 404);
    assert_eq!(audit_rows(&app).await, 0);
    // With the role, the same session sees it.
    admin::add(&app.pool, "someone@example.com").await.unwrap();
    assert_eq!(status_of(&app.client, format!("{}/admin", app.address)).await, 200);
    assert!(app.page("/admin").await.contains("Operator console"));
}

#[tokio::test]
async fn an_operator_finds_a_customer_and_grants_credits_once_with_a_reason() {
    let app = spawn_app().await;
    let customer_id = app.sign_up("buyer@example.com").await;
    // The browser's session is now the operator's.
    app.sign_up("operator@example.com").await;
    admin::add(&app.pool, "operator@example.com").await.unwrap();
    let results = app.page("/admin?q=BUYER%40example.com").await;
    assert!(results.contains(&format!("/admin/customers/{customer_id}")), "{results}");
    let page = app.page(&format!("/admin/customers/{customer_id}")).await;
    assert!(page.contains("buyer@example.com") && page.contains("Grant or take credits"), "{page}");
    assert!(!page.contains("Sign in again"), "a fresh sign-in may act");
    let form_key = page.split("name=\"form_key\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let before = app.balance(customer_id).await.total;
    let id = customer_id.to_string();
    let grant = [
        ("customer", id.as_str()),
        ("direction", "grant"),
        ("credits", "100"),
        ("reason", "Refund for the outage on Friday"),
        ("form_key", form_key.as_str()),
    ];
    // A double submit.
    let (a, b) = tokio::join!(call(&app, "/api/admin/adjust", &grant), call(&app, "/api/admin/adjust", &grant));
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    assert_eq!(app.balance(customer_id).await.total, before + 100);
    let page = app.page(&format!("/admin/customers/{customer_id}?done=adjusted")).await;
    assert!(page.contains("recorded in the audit log"), "{page}");
    assert_eq!(page.matches("Refund for the outage on Friday").count(), 2, "once in the ledger, once in the audit log");
    assert!(page.contains(&format!("balance {before} → {}", before + 100)));
    // Refusals: no reason, a number that is not one, more than there is to take.
    for (field, bad) in [("reason", ("reason", "")), ("credits", ("credits", "ten")), ("credits", ("credits", "-5"))] {
        let mut form = grant.to_vec();
        form.retain(|(k, _)| *k != bad.0);
        form.push(bad);
        let res = call(&app, "/api/admin/adjust", &form).await;
        assert_eq!(res.status(), 422, "{bad:?}");
        assert_eq!(app_error(res).await.field(), Some(field));
    }
    let take = [
        ("customer", id.as_str()),
        ("direction", "take"),
        ("credits", "999999999"),
        ("reason", "Chargeback"),
        ("form_key", "f0rmkey0ftakeall888"),
    ];
    let res = call(&app, "/api/admin/adjust", &take).await;
    assert_eq!(res.status(), 422);
    assert_eq!(app_error(res).await.field(), Some("credits"));
    assert_eq!(audit_rows(&app).await, 1);
}

#[tokio::test]
async fn an_operator_signed_in_long_ago_signs_in_again_before_acting() {
    let app = spawn_app().await;
    let customer = app.sign_up("late@example.com").await;
    admin::add(&app.pool, "late@example.com").await.unwrap();
    sqlx::query("UPDATE sessions SET created_at = now() - interval '16 minutes'").execute(&app.pool).await.unwrap();
    let page = app.page(&format!("/admin/customers/{customer}")).await;
    assert!(page.contains("Sign in again") && page.contains("/login?next=/admin/customers/"), "{page}");
    let id = customer.to_string();
    let grant = [
        ("customer", id.as_str()),
        ("direction", "grant"),
        ("credits", "5"),
        ("reason", "Goodwill"),
        ("form_key", "f0rmkey0fstale99999"),
    ];
    let res = call(&app, "/api/admin/adjust", &grant).await;
    assert_eq!(res.status(), 422);
    assert_eq!(app_error(res).await.field(), Some("password"));
    assert_eq!(audit_rows(&app).await, 0);
    // Signing in again makes a new session: now it acts.
    let res =
        post_form(&app, "/api/login", &[("email", "late@example.com"), ("password", "correct horse battery")]).await;
    assert!(res.status().is_redirection(), "{}", res.status());
    assert_eq!(call(&app, "/api/admin/adjust", &grant).await.status(), 200);
    assert_eq!(audit_rows(&app).await, 1);
}

#[tokio::test]
async fn an_operator_revokes_a_key_once_with_a_reason_after_granting_from_the_same_page() {
    let app = spawn_app().await;
    let customer = app.sign_up("keyholder@example.com").await;
    let key = app.create_api_key("laptop").await;
    let prefix: String = sqlx::query_scalar("SELECT prefix FROM api_keys").fetch_one(&app.pool).await.unwrap();
    app.sign_up("keyop@example.com").await;
    admin::add(&app.pool, "keyop@example.com").await.unwrap();
    let page = app.page(&format!("/admin/customers/{customer}")).await;
    assert!(page.contains(&format!("Revoke {prefix}")), "{page}");
    let form_key = page.split("name=\"form_key\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let id = customer.to_string();
    // A grant from this page first: the page's forms share its key, each action still applies.
    let grant = [
        ("customer", id.as_str()),
        ("direction", "grant"),
        ("credits", "5"),
        ("reason", "Goodwill"),
        ("form_key", form_key.as_str()),
    ];
    assert_eq!(call(&app, "/api/admin/adjust", &grant).await.status(), 200);
    let revoke = [
        ("customer", id.as_str()),
        ("prefix", prefix.as_str()),
        ("reason", "Key leaked in a public repo"),
        ("form_key", form_key.as_str()),
    ];
    let no_reason =
        [("customer", id.as_str()), ("prefix", prefix.as_str()), ("reason", ""), ("form_key", form_key.as_str())];
    assert_eq!(call(&app, "/api/admin/revoke-key", &no_reason).await.status(), 422);
    let (a, b) =
        tokio::join!(call(&app, "/api/admin/revoke-key", &revoke), call(&app, "/api/admin/revoke-key", &revoke));
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    let res = reqwest::Client::new()
        .post(format!("{}/api/v1/text/stats", app.address))
        .bearer_auth(&key)
        .json(&serde_json::json!({ "text": "hello" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "the key stopped working");
    let actions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM operator_audit ORDER BY id").fetch_all(&app.pool).await.unwrap();
    assert_eq!(actions, ["grant_credits", "revoke_api_key"]);
    let page = app.page(&format!("/admin/customers/{customer}?done=revoked")).await;
    assert!(page.contains("Key leaked in a public repo") && !page.contains(&format!("Revoke {prefix}")), "{page}");
    // Someone else's key prefix is no key of this customer.
    let other =
        [("customer", id.as_str()), ("prefix", "tly_nope00"), ("reason", "Mistake"), ("form_key", form_key.as_str())];
    assert_eq!(call(&app, "/api/admin/revoke-key", &other).await.status(), 404);
}

/// The operator's form key and the page it came from.
async fn operator_page(app: &TestApp, customer: uuid::Uuid) -> (String, String) {
    let page = app.page(&format!("/admin/customers/{customer}")).await;
    let form_key = page.split("name=\"form_key\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    (page, form_key)
}

/// "I paid but have no credits": the order's webhook was parked (its handler failed ten times
/// while the database was down). An operator sees it on the customer's page with its error,
/// retries it with a reason, and the order is applied once, however often the form is sent.
#[tokio::test]
async fn an_operator_retries_a_parked_webhook_and_the_order_is_applied_once() {
    // The 50-credit pack of `webhooks::pack_order`.
    let app = spawn_app_with(&[("POLAR_PRODUCT_PACK_50", "11111111-1111-4111-8111-111111111150")]).await;
    let customer = app.sign_up("paid-no-credits@example.com").await;
    let before = app.balance(customer).await.total;
    let body: serde_json::Value =
        serde_json::from_str(&crate::webhooks::pack_order("order.paid", "ord_parked", customer, 0)).unwrap();
    sqlx::query(
        "INSERT INTO webhook_events (webhook_id, event_type, payload, user_id, status, attempts, last_error)
         VALUES ('msg_parked', 'order.paid', $1, $2, 'failed', 10, 'database unavailable')",
    )
    .bind(&body)
    .bind(customer)
    .execute(&app.pool)
    .await
    .unwrap();
    let other = app.sign_up("bystander@example.com").await.to_string();
    app.sign_up("webhook-op@example.com").await;
    admin::add(&app.pool, "webhook-op@example.com").await.unwrap();
    let (page, form_key) = operator_page(&app, customer).await;
    assert!(page.contains("msg_parked") && page.contains("database unavailable"), "{page}");
    assert!(page.contains("Reason for retrying msg_parked"), "a parked event offers a retry: {page}");
    let id = customer.to_string();
    let form = |reason: &'static str| {
        [
            ("customer", id.clone()),
            ("webhook_id", "msg_parked".into()),
            ("reason", reason.into()),
            ("form_key", form_key.clone()),
        ]
    };
    let no_reason = form("");
    let no_reason: Vec<(&str, &str)> = no_reason.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(call(&app, "/api/admin/retry-webhook", &no_reason).await.status(), 422);
    assert_eq!(
        sqlx::query_scalar::<_, String>("SELECT status FROM webhook_events").fetch_one(&app.pool).await.unwrap(),
        "failed"
    );
    let retry = form("Database is back; apply the order");
    let retry: Vec<(&str, &str)> = retry.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (a, b) =
        tokio::join!(call(&app, "/api/admin/retry-webhook", &retry), call(&app, "/api/admin/retry-webhook", &retry));
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    eventually("the retried order is applied", || async {
        let status: String =
            sqlx::query_scalar("SELECT status FROM webhook_events").fetch_one(&app.pool).await.unwrap();
        if status == "done" {
            Ok(())
        } else {
            Err(status)
        }
    })
    .await;
    assert_eq!(app.balance(customer).await.total, before + 50, "the pack's credits, once");
    assert_eq!(call(&app, "/api/admin/retry-webhook", &retry).await.status(), 200, "sent again: nothing to do");
    let audit: Vec<(String, serde_json::Value)> =
        sqlx::query_as("SELECT action, before FROM operator_audit").fetch_all(&app.pool).await.unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].0, "retry_webhook");
    assert_eq!((audit[0].1["status"].as_str(), audit[0].1["attempts"].as_i64()), (Some("failed"), Some(10)));
    let page = app.page(&format!("/admin/customers/{customer}?done=requeued")).await;
    assert!(page.contains("webhook msg_parked: parked → pending"), "the audit row in words: {page}");
    assert!(!page.contains("Reason for retrying msg_parked"), "nothing left to retry: {page}");
    // Another customer's page cannot reach this event.
    let foreign = [
        ("customer", other.as_str()),
        ("webhook_id", "msg_parked"),
        ("reason", "Wrong page"),
        ("form_key", form_key.as_str()),
    ];
    assert_eq!(call(&app, "/api/admin/retry-webhook", &foreign).await.status(), 404);
    assert!(ledger::problems(&app.pool, None).await.unwrap().is_empty());
}

/// A usage event Polar refused is parked; an operator sends it again from the customer's page,
/// once, with its audit row; a retry whose audit row cannot be written leaves it parked.
#[tokio::test]
async fn an_operator_sends_a_parked_usage_event_again_with_its_audit_row_or_not_at_all() {
    let app = spawn_app().await;
    let customer = app.sign_up("metered@example.com").await;
    let op = operator_of(&app, "usage-op@example.com").await;
    let now = Utc::now();
    let mut conn = app.pool.acquire().await.unwrap();
    ledger::grant_pack(&mut conn, customer, "ord_usage", 100, "prod_pack", now).await.unwrap();
    let spent = ledger::spend(&mut conn, customer, 7, "api:parked-call", &serde_json::json!({}), now).await.unwrap();
    assert!(matches!(spent, ledger::SpendOutcome::Spent { .. }), "{spent:?}");
    drop(conn);
    let id: i64 = sqlx::query_scalar("UPDATE usage_outbox SET status = 'failed', last_error = 'Event refused.' WHERE external_id = 'api:parked-call' RETURNING id")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let (page, form_key) = operator_page(&app, customer).await;
    assert!(page.contains("api:parked-call") && page.contains("Event refused."), "{page}");
    // Asked, Polar's meter has none of it: the ledger's 7 credits are parked, unexplained.
    let asked = app.page(&format!("/admin/customers/{customer}?polar=1")).await;
    assert!(
        asked.contains(
            "credits.spent: 7 credits in the ledger · 0 on Polar's meter · 0 on their way · 7 parked: 7 unexplained"
        ),
        "{asked}"
    );
    // The audit log refuses the row: the event stays parked.
    refuse_audit_rows(&app, true).await;
    let failed = admin::retry_usage_event(&app.pool, &op, customer, id, "Polar fixed the meter", &form_key).await;
    assert!(matches!(failed, Err(ActionError::Db(_))), "{failed:?}");
    let status = || async {
        sqlx::query_scalar::<_, String>("SELECT status FROM usage_outbox WHERE id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    assert_eq!(status().await, "failed", "no retry without its record");
    refuse_audit_rows(&app, false).await;
    // Over HTTP, twice at once.
    let (customer_id, event) = (customer.to_string(), id.to_string());
    let retry = [
        ("customer", customer_id.as_str()),
        ("event", event.as_str()),
        ("reason", "Polar fixed the meter"),
        ("form_key", form_key.as_str()),
    ];
    let (a, b) =
        tokio::join!(call(&app, "/api/admin/retry-usage", &retry), call(&app, "/api/admin/retry-usage", &retry));
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    assert_ne!(status().await, "failed", "queued again (or already sent)");
    usage_drained(&app).await;
    // Once Polar has recomputed the meter (it debounces), everything is accounted for.
    eventually("Polar's meter counts the event sent again", || async {
        let asked = app.page(&format!("/admin/customers/{customer}?polar=1")).await;
        let line = "credits.spent: 7 credits in the ledger · 7 on Polar's meter · 0 on their way · 0 parked: all accounted for";
        if asked.contains(line) {
            Ok(())
        } else {
            Err(asked.split("Usage: ").nth(1).unwrap_or_default().split("</ul>").next().unwrap_or_default().to_string())
        }
    })
    .await;
    let audit: Vec<(String, serde_json::Value)> =
        sqlx::query_as("SELECT action, after FROM operator_audit").fetch_all(&app.pool).await.unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(
        (audit[0].0.as_str(), audit[0].1["usage_event"].as_str()),
        ("retry_usage_event", Some("api:parked-call"))
    );
    // Not an event of this customer: 404, nothing written.
    let other = [
        ("customer", customer_id.as_str()),
        ("event", "999999"),
        ("reason", "Polar fixed the meter"),
        ("form_key", form_key.as_str()),
    ];
    assert_eq!(call(&app, "/api/admin/retry-usage", &other).await.status(), 404);
    assert_eq!(audit_rows(&app).await, 1);
}

/// `/admin/audit`: every action newest first, filtered by action, operator and customer, paged
/// by id (50 a page), and the same rows as CSV with spreadsheet formulas made inert.
#[tokio::test]
async fn the_audit_log_is_filtered_paged_and_exported_as_csv() {
    let app = spawn_app().await;
    let (a, b) = (app.sign_up("first@example.com").await, app.sign_up("second@example.com").await);
    let other_op = operator_of(&app, "other-op@example.com").await;
    let op = operator_of(&app, "audit-op@example.com").await;
    let now = Utc::now();
    for i in 0..55 {
        let form = format!("f0rmkey0faudit{i:05}");
        admin::adjust_credits(&app.pool, &op, a, 1, "Monthly goodwill", &form, now).await.unwrap();
    }
    admin::adjust_credits(&app.pool, &op, b, -5, "=HYPERLINK(\"http://evil\")", "f0rmkey0ftake00001", now)
        .await
        .unwrap();
    admin::adjust_credits(&app.pool, &other_op, b, 7, "Second opinion", "f0rmkey0fother0001", now).await.unwrap();
    let audit = |filters: Vec<(&'static str, String)>| {
        let app = &app;
        async move {
            let mut form: Vec<(&str, String)> =
                vec![("action", String::new()), ("operator", String::new()), ("customer", String::new())];
            for (k, v) in filters {
                form.retain(|(f, _)| *f != k);
                form.push((k, v));
            }
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let res = call(app, "/api/admin/audit", &form).await;
            assert_eq!(res.status(), 200);
            res.json::<tally::api::admin::AuditView>().await.unwrap()
        }
    };
    // Everything, newest first, 50 a page; the second page holds the rest.
    let first = audit(vec![]).await;
    assert_eq!(first.rows.len(), 50);
    assert_eq!(first.rows[0].reason, "Second opinion");
    let rest = audit(vec![("before", first.older.expect("an older page").to_string())]).await;
    assert_eq!((rest.rows.len(), rest.older), (7, None));
    // Filters.
    let taken = audit(vec![("action", "take_credits".into())]).await;
    assert_eq!(taken.rows.iter().map(|r| r.change.as_str()).collect::<Vec<_>>(), ["balance 1000 → 995"]);
    let by_other = audit(vec![("operator", "OTHER-OP@example.com".into())]).await;
    assert_eq!(by_other.rows.len(), 1);
    let on_b = audit(vec![("customer", b.to_string())]).await;
    assert_eq!(on_b.rows.len(), 2);
    assert!(on_b.rows.iter().all(|r| r.customer.as_deref() == Some(b.to_string().as_str())));
    let bad = [("action", "drop_table"), ("operator", ""), ("customer", "")];
    assert_eq!(call(&app, "/api/admin/audit", &bad).await.status(), 422);
    // The page, and the CSV with the same filters.
    let page = app.page("/admin/audit?action=take_credits").await;
    assert!(page.contains("balance 1000 → 995") && !page.contains("Monthly goodwill"), "{page}");
    // The filter shows what was chosen, with spaces for underscores, and "Any" unselected.
    let option = |value: &str| {
        let tag = page.split("<option").find(|o| o.contains(&format!("value=\"{value}\""))).unwrap_or_default();
        tag.split('>').next().unwrap_or_default().contains("selected")
    };
    assert!(option("take_credits") && !option("") && page.contains(">take credits<"), "{page}");
    // 943 more rows (written directly: the log only refuses changes), so the export reads
    // past its 500-row chunks.
    sqlx::query(
        "INSERT INTO operator_audit (operator_id, operator_email, action, target_user, reason, idempotency_key)
         SELECT $1, $2, 'grant_credits', $3, 'Bulk ' || g, 'bulk:' || g FROM generate_series(1, 943) g",
    )
    .bind(op.id)
    .bind(&op.email)
    .bind(a)
    .execute(&app.pool)
    .await
    .unwrap();
    let csv = |query: &str| app.client.get(format!("{}/admin/audit.csv{query}", app.address)).send();
    let res = csv("").await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/csv; charset=utf-8");
    let all = res.text().await.unwrap();
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(lines[0], "id,at,operator,action,customer,reason,before,after");
    assert_eq!(lines.len(), 1 + 1000, "every row, across the export's 500-row chunks");
    let ids: Vec<i64> = lines[1..].iter().map(|l| l.split(',').next().unwrap().parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first, none twice");
    assert!(all.contains(",\"'=HYPERLINK(\"\"http://evil\"\")\","), "a formula is inert: {all}");
    let gzipped = app.client.get(format!("{}/admin/audit.csv", app.address)).header("accept-encoding", "gzip").send();
    let gzipped = gzipped.await.unwrap();
    assert_eq!((gzipped.status().as_u16(), gzipped.headers()["content-encoding"].to_str().unwrap()), (200, "gzip"));
    assert!(gzipped.bytes().await.expect("the whole compressed body").len() > 1000, "as a browser gets it");
    let taken = csv(&format!("?customer={b}&action=take_credits")).await.unwrap().text().await.unwrap();
    assert_eq!(taken.lines().count(), 2, "{taken}");
    assert_eq!(csv("?action=drop_table").await.unwrap().status(), 422);
}

/// A rotated webhook secret: every delivery is refused. From the fifth in a row the health page
/// says in red that Polar may disable the endpoint (it does at ten), and /metrics says so for
/// an alert; one accepted delivery ends the run.
#[tokio::test]
async fn the_health_page_and_metrics_warn_before_polar_disables_the_webhook_endpoint() {
    use tally::server::polar::webhook_signature::KeyScheme;
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const TOKEN: &str = "metrics-token-for-tests";
    let app = spawn_app_with(&[("POLAR_WEBHOOK_SECRET", SECRET), ("METRICS_TOKEN", TOKEN)]).await;
    let customer = app.sign_up("health-customer@example.com").await;
    assert!(!app.page("/admin/health").await.contains("Webhook inbox"));
    assert_eq!(status_of(&app.client, format!("{}/admin/health", app.address)).await, 404, "not for customers");
    assert_eq!(call(&app, "/api/admin/health", &[]).await.status(), 404);
    app.sign_up("health-op@example.com").await;
    admin::add(&app.pool, "health-op@example.com").await.unwrap();
    let page = app.page("/admin/health").await;
    assert!(page.contains("Webhook inbox") && !page.contains("Polar may disable"), "{page}");
    assert!(page.contains("Failed in the last hour"), "{page}");
    assert!(page.contains("API quota") && page.contains("POLAR_PAGE_REQUESTS_PER_MINUTE"), "{page}");
    // Three page calls to Polar counted (by any instance): the pages' share shows them.
    let mut config = test_config(&[]);
    config.polar.api_url = url::Url::parse(&format!("{}/polar", app.address)).unwrap();
    let state = tally::server::state::AppState::new(config, app.pool.clone()).unwrap();
    let (pages, all) = tally::server::billing::pages_budget(&state.billing);
    for _ in 0..3 {
        let hit = tally::server::throttle::hit(&app.pool, pages, all, Utc::now()).await.unwrap();
        assert!(hit.is_ok());
    }
    let health: serde_json::Value = call(&app, "/api/admin/health", &[]).await.json().await.unwrap();
    let share = &health["quota"][0];
    assert_eq!(share["per_minute"], 400, "{health}");
    // Counted this minute, or the last one if a minute turned meanwhile.
    assert_eq!(share["this_minute"].as_i64().unwrap() + share["last_minute"].as_i64().unwrap(), 3, "{health}");
    assert_eq!(health["quota"][1]["per_minute"], 60, "the usage shipping share: {health}");

    let gauge = |text: &str, name: &str| -> i64 {
        text.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).and_then(|v| v.parse().ok()).unwrap_or(-1)
    };
    let now = Utc::now().timestamp();
    let body = |n: u32| {
        serde_json::json!({ "type": "customer.updated", "timestamp": "2026-12-07T10:00:00Z",
                             "data": { "id": format!("c{n}"), "external_id": customer.to_string(), "email": "x@example.com" } })
        .to_string()
    };
    for n in 1..=5 {
        // Signed with the secret Polar had before it was rotated here.
        let res = app
            .deliver_webhook(
                &format!("msg_old_{n}"),
                &body(n),
                "whsec_b2xkc2VjcmV0b2xkc2VjcmV0b2xkc2VjcmV0",
                KeyScheme::Legacy,
                now,
            )
            .await;
        assert_eq!(res.status(), 403);
        eventually("the refusal is counted", || async {
            let text = metrics(&app, TOKEN).await;
            let refused = gauge(&text, "tally_webhook_deliveries_refused_consecutive");
            if refused == i64::from(n) {
                Ok(text)
            } else {
                Err(refused)
            }
        })
        .await;
        let at_risk = gauge(&metrics(&app, TOKEN).await, "tally_webhook_endpoint_at_risk");
        assert_eq!(at_risk, i64::from(n >= 5), "after {n} refusals");
    }
    eventually("the shared row holds the run", || async {
        let stored: i32 =
            sqlx::query_scalar("SELECT refused FROM webhook_delivery_streak").fetch_one(&app.pool).await.unwrap();
        if stored == 5 {
            Ok(())
        } else {
            Err(stored)
        }
    })
    .await;
    let page = app.page("/admin/health").await;
    assert!(page.contains("Polar may disable the webhook endpoint"), "{page}");
    assert!(page.contains("5 deliveries in a row were refused") && page.contains("no matching signature"), "{page}");

    // Polar's next delivery, signed with the current secret, is accepted: the run is over.
    let res = app.deliver_webhook("msg_new_1", &body(6), SECRET, KeyScheme::Legacy, now).await;
    assert_eq!(res.status(), 202);
    let text = metrics(&app, TOKEN).await;
    assert_eq!(gauge(&text, "tally_webhook_deliveries_refused_consecutive"), 0, "{text}");
    assert_eq!(gauge(&text, "tally_webhook_endpoint_at_risk"), 0);
    let page = app.page("/admin/health").await;
    assert!(!page.contains("Polar may disable") && page.contains("0 (Polar disables at 10)"), "{page}");
}

/// "I never got the confirmation mail": the operator sees the address unconfirmed and the mails
/// sent, and sends the confirmation again, once for a double submit, with its audit row; for
/// a confirmed address there is nothing to send.
#[tokio::test]
async fn an_operator_sends_the_address_confirmation_again_once() {
    let app = spawn_app().await;
    let visitor = app.another_browser();
    let res = post_form(
        &visitor,
        "/api/signup",
        &[("email", "lost-mail@example.com"), ("password", "correct horse battery")],
    )
    .await;
    assert!(res.status().is_redirection(), "{}", res.status());
    let customer: uuid::Uuid = sqlx::query_scalar("SELECT id FROM users WHERE email = 'lost-mail@example.com'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let confirmed = app.sign_up("confirmed@example.com").await;
    app.sign_up("mail-op@example.com").await;
    admin::add(&app.pool, "mail-op@example.com").await.unwrap();
    let mails = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outgoing_mail WHERE user_id = $1")
            .bind(customer)
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    assert_eq!(mails().await, 1, "the sign-up's confirmation");
    let (page, form_key) = operator_page(&app, customer).await;
    assert!(page.contains("lost-mail@example.com: not confirmed yet"), "{page}");
    assert!(page.contains("Send the confirmation again") && page.contains("Confirm your email"), "{page}");
    let id = customer.to_string();
    let form =
        [("customer", id.as_str()), ("reason", "Customer says the mail never came"), ("form_key", form_key.as_str())];
    let (a, b) = tokio::join!(
        call(&app, "/api/admin/resend-verification", &form),
        call(&app, "/api/admin/resend-verification", &form)
    );
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    assert_eq!(mails().await, 2, "one more confirmation, however often the form was sent");
    let actions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM operator_audit").fetch_all(&app.pool).await.unwrap();
    assert_eq!(actions, ["resend_verification"]);
    // A confirmed address: refused, nothing queued or recorded.
    let (page, key) = operator_page(&app, confirmed).await;
    assert!(
        page.contains("confirmed@example.com: confirmed") && !page.contains("Send the confirmation again"),
        "{page}"
    );
    let other = confirmed.to_string();
    let form = [("customer", other.as_str()), ("reason", "Just in case"), ("form_key", key.as_str())];
    let res = call(&app, "/api/admin/resend-verification", &form).await;
    assert_eq!(res.status(), 409);
    assert_eq!(audit_rows(&app).await, 1);
}

/// "I cancelled but still have Pro" (or the other way round): Polar's webhooks about the
/// customer were lost. The operator sees Tally's copy and, on request, Polar's Customer State
/// side by side, resyncs with a reason, and the change and its audit row land together once.
#[tokio::test]
async fn an_operator_compares_with_polar_and_resyncs_once_with_its_audit_row_or_not_at_all() {
    let app = spawn_app().await;
    let customer = app.sign_up("lost-cancel@example.com").await;
    app.buy("pro").await;
    let status = || async {
        sqlx::query_as::<_, (String, String)>("SELECT id, status FROM subscriptions WHERE user_id = $1")
            .bind(customer)
            .fetch_optional(&app.pool)
            .await
            .unwrap()
    };
    let (sub, _) =
        eventually("the subscription's webhook arrives", || async { status().await.ok_or("none yet") }).await;
    // From now on Polar's webhooks about the customer are lost; then Polar revokes the plan.
    let lost = control(&app, "/webhooks/lose", serde_json::json!({ "external_customer_ids": [customer.to_string()] }));
    assert_eq!(lost.await.status(), 204);
    app.revoke_at_polar(&sub).await;
    app.sign_up("billing-op@example.com").await;
    admin::add(&app.pool, "billing-op@example.com").await.unwrap();

    let (page, form_key) = operator_page(&app, customer).await;
    assert!(page.contains("Subscriptions, as Tally last applied them") && page.contains(&sub), "{page}");
    assert!(page.contains(">active<") && page.contains("Allotment"), "Tally's copy and the period: {page}");
    assert!(page.contains("No API keys."), "the keys' empty state: {page}");
    assert!(!page.contains("asked now"), "Polar is asked only on request: {page}");
    // Asked on request (a plain link): Polar no longer grants Pro.
    let asked = app.page(&format!("/admin/customers/{customer}?polar=1")).await;
    let polar = asked.split("asked now").nth(1).expect("Polar's answer on the page");
    assert!(polar.contains("Plan: Free") && polar.contains("No active subscription."), "{asked}");
    assert_eq!(status().await.unwrap().1, "active", "asking changes nothing");

    // The audit log refuses the row: the resync is undone with it.
    refuse_audit_rows(&app, true).await;
    let id = customer.to_string();
    let form = [("customer", id.as_str()), ("reason", "Customer says they cancelled"), ("form_key", form_key.as_str())];
    assert_eq!(call(&app, "/api/admin/resync", &form).await.status(), 500);
    assert_eq!(status().await.unwrap().1, "active", "nothing applied without its audit row");
    refuse_audit_rows(&app, false).await;

    let no_reason = [("customer", id.as_str()), ("reason", " "), ("form_key", form_key.as_str())];
    assert_eq!(call(&app, "/api/admin/resync", &no_reason).await.status(), 422);
    let (a, b) = tokio::join!(call(&app, "/api/admin/resync", &form), call(&app, "/api/admin/resync", &form));
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    assert_eq!(status().await.unwrap().1, "canceled", "Polar's revocation, applied");
    let audit: Vec<(String, serde_json::Value, serde_json::Value)> =
        sqlx::query_as("SELECT action, before, after FROM operator_audit").fetch_all(&app.pool).await.unwrap();
    assert_eq!(audit.len(), 1, "once, however often the form was sent: {audit:?}");
    assert_eq!(audit[0].0, "resync");
    assert_eq!(audit[0].1["subscriptions"][0]["status"], "active");
    assert_eq!(
        (audit[0].2["plan"].as_str(), audit[0].2["subscriptions"][0]["status"].as_str()),
        (Some("Free"), Some("canceled"))
    );
    // Sent again later: said to be done already, nothing more recorded.
    let again = call(&app, "/api/admin/resync", &form).await;
    assert_eq!(again.status(), 200);
    let page = app.page(&format!("/admin/customers/{customer}?done=already")).await;
    assert!(page.contains("That was done already"), "{page}");
    assert!(page.contains(&format!("{sub}: active → canceled")), "the audit row in words: {page}");
    assert_eq!(audit_rows(&app).await, 1);
    assert!(ledger::problems(&app.pool, None).await.unwrap().is_empty());
}

/// The rows of the customer page's ledger table: (kind, credits).
fn ledger_rows(page: &str) -> Vec<String> {
    let section = page.split("id=\"ledger-title\"").nth(1).unwrap().split("</section>").next().unwrap();
    section.split("<tr>").skip(2).map(|row| row.split("</tr>").next().unwrap().to_string()).collect()
}

/// The link a page offers to its older entries.
fn older_link(page: &str) -> Option<String> {
    let before = page.split("\">Older entries</a>").next()?;
    (before.len() < page.len()).then(|| before.rsplit("href=\"").next().unwrap().replace("&amp;", "&"))
}

/// "Where did my credits go last Tuesday?": the operator filters a long ledger by kind and days
/// and pages through it; every entry shows once, in order, and filters not understood are said
/// to be left out rather than failing the page.
#[tokio::test]
async fn an_operator_filters_and_pages_a_customers_ledger() {
    let app = spawn_app().await;
    let customer = app.sign_up("long-ledger@example.com").await;
    app.sign_up("ledger-op@example.com").await;
    admin::add(&app.pool, "ledger-op@example.com").await.unwrap();
    let day = |d: u32| chrono::NaiveDate::from_ymd_opt(2026, 11, d).unwrap().and_hms_opt(12, 0, 0).unwrap().and_utc();
    let mut conn = app.pool.acquire().await.unwrap();
    ledger::grant_pack(&mut conn, customer, "ord_long", 1_000, "prod_pack", day(1)).await.unwrap();
    // 30 spends on the 2nd, 30 on the 3rd (a minute apart: each row's time tells it apart).
    for (d, n) in [(2, 30), (3, 30)] {
        for i in 0..n {
            let at = day(d) + chrono::Duration::minutes(i);
            let key = format!("api:{d}:{i}");
            let out = ledger::spend(&mut conn, customer, 1, &key, &serde_json::json!({}), at).await.unwrap();
            assert!(matches!(out, ledger::SpendOutcome::Spent { .. }), "{out:?}");
        }
    }
    drop(conn);
    let base = format!("/admin/customers/{customer}");

    // By kind: the one pack among 60 spends (and the sign-up's free credits).
    let packs = app.page(&format!("{base}?kind=purchase")).await;
    let rows = ledger_rows(&packs);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0].contains("Credit pack") && rows[0].contains("+1,000"), "{rows:?}");
    assert!(packs.contains("<option value=\"purchase\" selected"), "the filter is shown back: {packs}");

    // Spends, paged: 25, 25, 10, each once, newest first, then no older page.
    let mut seen = Vec::new();
    let mut next = Some(format!("{base}?kind=spend"));
    let mut pages = 0;
    while let Some(path) = next {
        let page = app.page(&path).await;
        let rows = ledger_rows(&page);
        assert!(rows.iter().all(|r| r.contains("API call") && r.contains(">-1<")), "{rows:?}");
        seen.extend(rows.into_iter().map(|r| r.split("<td>").nth(1).unwrap().to_string()));
        next = older_link(&page);
        pages += 1;
        assert!(pages <= 3, "a third page ends it");
        if pages > 1 {
            assert!(page.contains("Newest entries"), "a later page leads back");
        }
    }
    assert_eq!((pages, seen.len()), (3, 60), "{seen:?}");
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.reverse();
    sorted.dedup();
    assert_eq!(seen, sorted, "every spend once, newest first across pages");

    // By days: the 3rd only (both days included, in UTC).
    let third = app.page(&format!("{base}?kind=spend&from=2026-11-03&until=2026-11-03")).await;
    let rows = ledger_rows(&third);
    assert_eq!(rows.len(), 25);
    assert!(rows.iter().all(|r| r.contains("2026-11-03")), "{rows:?}");
    let everything = app.page(&format!("{base}?from=2026-11-01&until=2026-11-01")).await;
    assert_eq!(ledger_rows(&everything).len(), 1, "the pack alone on the 1st");

    // Not understood: said, left out, the page still answers.
    let odd = app.page(&format!("{base}?kind=bogus&from=yesterday&before=x.y")).await;
    assert!(odd.contains("Left out of the filter, not understood: the kind, the first day, the page"), "{odd}");
    assert_eq!(ledger_rows(&odd).len(), 25);
    let none = app.page(&format!("{base}?kind=expiry")).await;
    assert!(none.contains("No entry matches."), "{none}");
}

/// A rare kind is read from its own index, not picked out of every spend of a long history.
#[tokio::test]
async fn a_rare_kind_of_entry_is_found_through_its_own_index() {
    let app = spawn_app().await;
    let customer = app.sign_up("many-spends@example.com").await;
    let now = Utc::now();
    sqlx::query("SELECT credit_grant($1, 'purchase', 'purchase', 'order:idx', 100000, NULL, 'idx:pack', '{}', $2)")
        .bind(customer)
        .bind(now - chrono::Duration::days(1))
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("SELECT count(*) FROM generate_series(1, 3000) g, LATERAL credit_spend($1, 1, 'idx:' || g, '{}', $2, 'spend') s")
        .bind(customer)
        .bind(now)
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("ANALYZE credit_entries").execute(&app.pool).await.unwrap();
    let plan = |kind: &'static str| {
        let pool = app.pool.clone();
        async move {
            let sql = format!("EXPLAIN {}", ledger::history::filtered_sql(Some(kind)));
            let lines: Vec<String> = sqlx::query_scalar(&sql)
                .bind(customer)
                .bind(now)
                .bind(0_i64)
                .bind(None::<chrono::DateTime<Utc>>)
                .bind(kind)
                .bind(26_i64)
                .fetch_all(&pool)
                .await
                .unwrap();
            lines.join("\n")
        }
    };
    let rare = plan("purchase").await;
    assert!(rare.contains("credit_entries_user_kind_idx"), "{rare}");
    let spends = plan("spend").await;
    assert!(spends.contains("credit_entries_user_idx"), "{spends}");
}
