//! How the console words what it shows: times, ages, audit rows and what they changed.

use super::AuditLine;

/// A time as the console shows it, in UTC.
pub(super) fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// An age in seconds in words: "—" for nothing waiting, else seconds, minutes or hours.
pub(super) fn age(seconds: Option<f64>) -> String {
    match seconds {
        None => "—".into(),
        Some(s) if s < 120.0 => format!("{} s", s.max(0.0).round()),
        Some(s) if s < 7_200.0 => format!("{} min", (s / 60.0).round()),
        Some(s) => format!("{} h", (s / 3_600.0).round()),
    }
}

/// An audit row as the console shows it.
pub(super) fn audit_line(a: crate::server::admin::AuditRow) -> AuditLine {
    AuditLine {
        when: when(a.at),
        operator: a.operator_email,
        action: a.action.replace('_', " "),
        customer: a.target_user.map(|u| u.to_string()),
        change: change(a.before.as_ref(), a.after.as_ref()),
        reason: a.reason,
    }
}

/// An audit row's change in words: a balance, or what the action's target went from and to.
pub(super) fn change(before: Option<&serde_json::Value>, after: Option<&serde_json::Value>) -> String {
    let (Some(before), Some(after)) = (before, after) else { return String::new() };
    if let (Some(x), Some(y)) = (before["balance"].as_i64(), after["balance"].as_i64()) {
        return format!("balance {x} → {y}");
    }
    if after.get("subscriptions").is_some() {
        return resynced(before, after);
    }
    let target = ["webhook", "usage_event", "key"]
        .iter()
        .find_map(|k| after[*k].as_str().map(|v| format!("{} {v}", k.replace('_', " "))))
        .unwrap_or_default();
    match (before["status"].as_str(), after["status"].as_str(), after["revoked"].as_bool()) {
        (Some(x), Some(y), _) => format!("{target}: {} → {}", parked(x), parked(y)),
        (_, _, Some(true)) => format!("{target}: revoked"),
        _ => target,
    }
}

/// A resync's change: the plan, then each subscription whose status moved (or that is new).
fn resynced(before: &serde_json::Value, after: &serde_json::Value) -> String {
    let plan = |v: &serde_json::Value| v["plan"].as_str().unwrap_or("unknown").to_string();
    let status = |v: &serde_json::Value, id: &str| {
        v["subscriptions"].as_array().and_then(|subs| {
            subs.iter().find(|s| s["id"] == id).map(|s| {
                let cancelling = if s["cancel_at_period_end"] == true { ", cancelling" } else { "" };
                format!("{}{cancelling}", s["status"].as_str().unwrap_or("?"))
            })
        })
    };
    let mut words = vec![format!("plan {} → {}", plan(before), plan(after))];
    for sub in after["subscriptions"].as_array().into_iter().flatten() {
        let id = sub["id"].as_str().unwrap_or_default();
        let (was, now) = (status(before, id), status(after, id));
        if was != now {
            words.push(format!("{id}: {} → {}", was.as_deref().unwrap_or("unknown"), now.unwrap_or_default()));
        }
    }
    words.join("; ")
}

/// A stored status as the console words it.
fn parked(status: &str) -> &str {
    if status == "failed" {
        "parked"
    } else {
        status
    }
}

#[cfg(test)]
mod tests {
    use super::change;
    use serde_json::json;

    #[test]
    fn a_waiting_age_reads_in_the_unit_that_fits() {
        use super::age;
        assert_eq!(age(None), "—");
        assert_eq!(age(Some(-0.2)), "0 s");
        assert_eq!(age(Some(42.4)), "42 s");
        assert_eq!(age(Some(600.0)), "10 min");
        assert_eq!(age(Some(36_000.0)), "10 h");
    }

    #[test]
    fn an_audit_rows_change_reads_as_what_moved() {
        let row = |b: serde_json::Value, a: serde_json::Value| change(Some(&b), Some(&a));
        assert_eq!(row(json!({ "balance": 50 }), json!({ "balance": 150, "delta": 100 })), "balance 50 → 150");
        assert_eq!(
            row(
                json!({ "webhook": "msg_1", "status": "failed", "attempts": 10 }),
                json!({ "webhook": "msg_1", "status": "pending" })
            ),
            "webhook msg_1: parked → pending"
        );
        assert_eq!(
            row(
                json!({ "usage_event": "api:k:1", "status": "failed" }),
                json!({ "usage_event": "api:k:1", "status": "pending" })
            ),
            "usage event api:k:1: parked → pending"
        );
        assert_eq!(
            row(json!({ "key": "tly_ab12", "revoked": false }), json!({ "key": "tly_ab12", "revoked": true })),
            "key tly_ab12: revoked"
        );
        assert_eq!(
            row(
                json!({ "plan": "Pro", "subscriptions": [{ "id": "sub_1", "status": "active", "cancel_at_period_end": false }] }),
                json!({ "plan": "Free", "subscriptions": [
                    { "id": "sub_1", "status": "canceled", "cancel_at_period_end": false },
                    { "id": "sub_2", "status": "active", "cancel_at_period_end": true },
                ] })
            ),
            "plan Pro → Free; sub_1: active → canceled; sub_2: unknown → active, cancelling"
        );
        assert_eq!(
            row(json!({ "plan": null, "subscriptions": [] }), json!({ "plan": "Free", "subscriptions": [] })),
            "plan unknown → Free"
        );
        assert_eq!(change(None, Some(&json!({ "balance": 1 }))), "");
        assert_eq!(row(json!({}), json!({})), "");
    }
}
