//! Buying and managing, end to end over HTTP: the app in local mode with its built-in Polar
//! stand-in (real HTTP both ways: the app calls the stand-in's API, the stand-in delivers
//! signed webhooks to the app's receiver), against a fresh real PostgreSQL per test.
//!
//! By what is tested: `purchase`, `plan_changes`, `account`, `convergence` (any delivery order),
//! `polar_outages` (Polar slow, down or rationed).

mod account;
mod convergence;
mod plan_changes;
mod polar_outages;
mod purchase;

use crate::helpers::*;
use serde_json::Value;
use std::time::Duration;
use uuid::Uuid;

/// Polls until the period's allotment (accrued and still to come) is `expected`.
async fn allotment_reaches(app: &TestApp, user: Uuid, expected: i64) {
    eventually(&format!("the allotment reaches {expected}"), || async {
        let b = app.balance(user).await;
        let total = b.allotment + b.pending_allotment;
        if total == expected {
            Ok(())
        } else {
            Err(total)
        }
    })
    .await
}

/// Polls `path` until its HTML contains `needle`.
pub(crate) async fn page_until(app: &TestApp, path: &str, needle: &str) -> String {
    eventually(&format!("{path} shows {needle:?}"), || async {
        let html = app.page(path).await;
        if html.contains(needle) {
            Ok(html)
        } else {
            Err(html)
        }
    })
    .await
}

/// Waits until the stand-in's webhooks have stopped arriving and all are processed.
async fn settle(app: &TestApp) {
    let mut last = -1;
    for _ in 0..100 {
        let (count, pending): (i64, i64) =
            sqlx::query_as("SELECT count(*), count(*) FILTER (WHERE status = 'pending') FROM webhook_events")
                .fetch_one(&app.pool)
                .await
                .unwrap();
        if pending == 0 && count == last {
            return;
        }
        last = count;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!("webhooks never settled");
}

/// The stand-in's API requests so far, `(method, path)`.
async fn standin_requests(app: &TestApp) -> Vec<(String, String)> {
    reqwest::Client::new()
        .get(format!("{}/polar/_standin/requests", app.address))
        .bearer_auth(controls_token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `$29.99` → 2999.
fn cents(s: &str) -> i64 {
    let digits: String = s.chars().filter(|c| c.is_ascii_digit()).collect();
    digits.parse().unwrap()
}
