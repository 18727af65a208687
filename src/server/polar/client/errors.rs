//! What can go wrong talking to Polar, read from Polar's error bodies.

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// One item of a 422's `detail`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationIssue {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub loc: Vec<Value>,
    #[serde(default)]
    pub msg: String,
}

impl ValidationIssue {
    /// The last named element of `loc` (`["body", "tax_id"]` → `tax_id`).
    pub fn field(&self) -> Option<&str> {
        self.loc.iter().rev().find_map(Value::as_str)
    }
}

/// What can go wrong talking to Polar.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolarError {
    /// 401: no token, or Polar does not accept it (`invalid_token`).
    #[error("Polar refused the access token ({code})")]
    Unauthorized { code: String },
    /// 403: the token lacks a scope (`insufficient_scope`), or the action is not permitted
    /// (`NotPermitted`, `AlreadyCanceledSubscription`, …).
    #[error("Polar refused the request: {code}: {detail}")]
    Forbidden { code: String, detail: String },
    /// 404 (`ResourceNotFound`, `InvoiceDoesNotExist`, or an unknown route).
    #[error("not found at Polar: {code}")]
    NotFound { code: String, detail: String },
    /// 409 (`SubscriptionLocked`, `OrderNotEligibleForInvoice`, …).
    #[error("conflict at Polar: {code}: {detail}")]
    Conflict { code: String, detail: String },
    /// 422 with pydantic-style issues (or a business rule named in `code`).
    #[error("Polar rejected the input: {}", .issues.iter().map(|i| format!("{}: {}", i.field().unwrap_or("body"), i.msg)).collect::<Vec<_>>().join("; "))]
    Invalid { code: Option<String>, issues: Vec<ValidationIssue> },
    /// 402 (`PaymentFailed`).
    #[error("payment failed: {detail}")]
    PaymentFailed { detail: String },
    /// 429 after retries; `retry_after` in seconds when Polar said.
    #[error("rate limited by Polar")]
    RateLimited { retry_after: Option<u64> },
    /// 5xx after retries.
    #[error("Polar is having trouble (HTTP {status})")]
    Server { status: u16 },
    /// No answer: connection refused, DNS, TLS, timeout.
    #[error("could not reach Polar: {0}")]
    Unreachable(String),
    /// An answer Tally cannot read (a contract break).
    #[error("unexpected answer from Polar: {0}")]
    Decode(String),
    #[error("unexpected HTTP {status} from Polar")]
    Other { status: u16 },
}

impl PolarError {
    /// Whether Polar could not be asked or answered (pages then show the last known state).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, PolarError::Unreachable(_) | PolarError::Server { .. } | PolarError::RateLimited { .. })
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    detail: Option<Value>,
}

/// Reads Polar's error bodies (docs/polar-contract.md §1.3).
pub(super) fn error_from(status: StatusCode, retry_after: Option<u64>, body: &[u8]) -> PolarError {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let raw: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let code = parsed.as_ref().and_then(|b| b.error.clone()).unwrap_or_default();
    let detail = match parsed.as_ref().and_then(|b| b.detail.clone()) {
        Some(Value::String(s)) => s,
        _ => raw.get("error_description").and_then(Value::as_str).unwrap_or_default().to_string(),
    };
    match status.as_u16() {
        401 => PolarError::Unauthorized { code: if code.is_empty() { "Unauthorized".into() } else { code } },
        402 => PolarError::PaymentFailed { detail },
        403 => PolarError::Forbidden { code, detail },
        404 => PolarError::NotFound { code: if code.is_empty() { "NotFound".into() } else { code }, detail },
        409 => PolarError::Conflict { code, detail },
        422 => {
            let issues = match raw.get("detail") {
                Some(Value::Array(items)) => {
                    items.iter().filter_map(|i| serde_json::from_value(i.clone()).ok()).collect()
                }
                Some(Value::String(msg)) => {
                    vec![ValidationIssue { kind: "value_error".into(), loc: vec![json!("body")], msg: msg.clone() }]
                }
                _ => vec![],
            };
            PolarError::Invalid { code: Some(code).filter(|c| !c.is_empty()), issues }
        }
        429 => PolarError::RateLimited { retry_after },
        s if s >= 500 => PolarError::Server { status: s },
        s => PolarError::Other { status: s },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polar_error_bodies_become_typed_errors() {
        let e = error_from(StatusCode::UNAUTHORIZED, None, br#"{"error":"invalid_token","error_description":"The access token provided is expired, revoked, malformed, or invalid for other reasons."}"#);
        assert_eq!(e, PolarError::Unauthorized { code: "invalid_token".into() });
        let e = error_from(StatusCode::FORBIDDEN, None, br#"{"error":"insufficient_scope","error_description":"The request requires higher privileges than provided by the access token."}"#);
        assert!(
            matches!(e, PolarError::Forbidden { ref code, ref detail } if code == "insufficient_scope" && detail.contains("higher privileges"))
        );
        let e = error_from(StatusCode::NOT_FOUND, None, br#"{"error":"ResourceNotFound","detail":"Not found"}"#);
        assert_eq!(e, PolarError::NotFound { code: "ResourceNotFound".into(), detail: "Not found".into() });
        let e = error_from(StatusCode::NOT_FOUND, None, br#"{"detail":"Not Found"}"#);
        assert!(matches!(e, PolarError::NotFound { ref code, .. } if code == "NotFound"));
        let e = error_from(
            StatusCode::CONFLICT,
            None,
            br#"{"error":"SubscriptionLocked","detail":"Subscription is pending an update."}"#,
        );
        assert!(matches!(e, PolarError::Conflict { ref code, .. } if code == "SubscriptionLocked"));
        let e = error_from(
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
            br#"{"error":"PolarRequestValidationError","detail":[{"type":"value_error","loc":["body","tax_id"],"msg":"Invalid tax ID.","input":"x"}]}"#,
        );
        match &e {
            PolarError::Invalid { issues, .. } => {
                assert_eq!(issues[0].field(), Some("tax_id"));
                assert_eq!(issues[0].msg, "Invalid tax ID.");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(e.to_string(), "Polar rejected the input: tax_id: Invalid tax ID.");
        assert_eq!(
            error_from(StatusCode::TOO_MANY_REQUESTS, Some(7), b""),
            PolarError::RateLimited { retry_after: Some(7) }
        );
        assert_eq!(error_from(StatusCode::BAD_GATEWAY, None, b"<html>"), PolarError::Server { status: 502 });
        assert!(PolarError::Server { status: 502 }.is_unavailable());
        assert!(!PolarError::NotFound { code: "x".into(), detail: String::new() }.is_unavailable());
    }
}
