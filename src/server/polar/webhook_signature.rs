//! Standard Webhooks signatures as Polar makes them (docs/polar-contract.md §3.3).
//!
//! The signed message is `"{webhook-id}.{webhook-timestamp}.{raw body}"`, signed with
//! HMAC-SHA256 and sent as `webhook-signature: v1,<base64>` (possibly several, space-separated).
//! Polar has two ways of turning the endpoint secret into the HMAC key, and an endpoint keeps
//! the one it was created with:
//! - **legacy** (secrets made before 2026-09-08): the UTF-8 bytes of the whole secret, prefix
//!   included;
//! - **standard** (from 2026-09-08): base64-decode the part after `whsec_`.
//!
//! A receiver cannot tell which one its endpoint uses, so [`verify`] accepts a match under
//! either key, as Polar's own current SDKs do. Comparison is constant-time with a length check
//! (`Mac::verify_slice`), and the timestamp must be within ±5 minutes of the injected `now`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Allowed distance between the signed timestamp and now, in seconds.
pub const TOLERANCE_SECS: i64 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing required header {0}")]
    MissingHeader(&'static str),
    #[error("webhook-timestamp is not a number of seconds")]
    BadTimestamp,
    #[error("message timestamp too old")]
    TooOld,
    #[error("message timestamp too new")]
    TooNew,
    #[error("no matching signature found")]
    NoMatchingSignature,
}

/// The key schemes Polar signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyScheme {
    Legacy,
    Standard,
}

/// The HMAC key a secret stands for under `scheme`; `None` when the secret has no valid
/// standard form (not `whsec_` + non-empty base64).
pub fn key_for(secret: &str, scheme: KeyScheme) -> Option<Vec<u8>> {
    match scheme {
        KeyScheme::Legacy => Some(secret.as_bytes().to_vec()),
        KeyScheme::Standard => {
            let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
            STANDARD.decode(b64).ok().filter(|k| !k.is_empty())
        }
    }
}

fn mac(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(id.as_bytes());
    m.update(b".");
    m.update(timestamp.as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The `webhook-signature` value for a message (`v1,<base64>`), as Polar would send it.
pub fn sign(secret: &str, scheme: KeyScheme, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key = key_for(secret, scheme)?;
    let sig = mac(&key, id, &timestamp.to_string(), body).finalize().into_bytes();
    Some(format!("v1,{}", STANDARD.encode(sig)))
}

/// The three Standard Webhooks headers, as received (any may be missing).
#[derive(Debug, Clone, Copy, Default)]
pub struct SignedHeaders<'a> {
    pub id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// Verifies a delivery against `secret` at time `now` (unix seconds). On success returns the
/// scheme that matched.
pub fn verify(secret: &str, headers: SignedHeaders<'_>, body: &[u8], now: i64) -> Result<KeyScheme, VerifyError> {
    let id = headers.id.filter(|v| !v.is_empty()).ok_or(VerifyError::MissingHeader("webhook-id"))?;
    let ts_raw = headers.timestamp.filter(|v| !v.is_empty()).ok_or(VerifyError::MissingHeader("webhook-timestamp"))?;
    let signature =
        headers.signature.filter(|v| !v.is_empty()).ok_or(VerifyError::MissingHeader("webhook-signature"))?;
    let ts: i64 = ts_raw.trim().parse().map_err(|_| VerifyError::BadTimestamp)?;
    if now - ts > TOLERANCE_SECS {
        return Err(VerifyError::TooOld);
    }
    if ts - now > TOLERANCE_SECS {
        return Err(VerifyError::TooNew);
    }
    let candidates: Vec<Vec<u8>> = signature
        .split_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .collect();
    for scheme in [KeyScheme::Legacy, KeyScheme::Standard] {
        let Some(key) = key_for(secret, scheme) else { continue };
        if scheme == KeyScheme::Standard && key == secret.as_bytes() {
            continue;
        }
        let expected = mac(&key, id, ts_raw, body);
        if candidates.iter().any(|c| expected.clone().verify_slice(c).is_ok()) {
            return Ok(scheme);
        }
    }
    Err(VerifyError::NoMatchingSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The Standard Webhooks specification's test vector, and the legacy signature Polar's
    // server and 0.x SDKs compute for the same inputs (docs/polar-contract.md §3.3, worked example).
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const LEGACY_SIG: &str = "v1,TcxlhK9b6UD6iVI1ZU2tTqp8PEVfYRseNNfa6b+LcUg=";
    const STANDARD_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn headers<'a>(sig: &'a str, ts: &'a str) -> SignedHeaders<'a> {
        SignedHeaders { id: Some(ID), timestamp: Some(ts), signature: Some(sig) }
    }

    #[test]
    fn signs_the_published_vectors_under_both_schemes() {
        assert_eq!(sign(SECRET, KeyScheme::Legacy, ID, TS, BODY).unwrap(), LEGACY_SIG);
        assert_eq!(sign(SECRET, KeyScheme::Standard, ID, TS, BODY).unwrap(), STANDARD_SIG);
        assert_eq!(
            hex::encode(key_for(SECRET, KeyScheme::Standard).unwrap()),
            "31f290f6bf06298aab4f08d43c3f082cf648a362da2da4b0"
        );
    }

    #[test]
    fn accepts_either_scheme() {
        let ts = TS.to_string();
        assert_eq!(verify(SECRET, headers(LEGACY_SIG, &ts), BODY, TS), Ok(KeyScheme::Legacy));
        assert_eq!(verify(SECRET, headers(STANDARD_SIG, &ts), BODY, TS), Ok(KeyScheme::Standard));
    }

    #[test]
    fn accepts_any_of_several_signatures() {
        let ts = TS.to_string();
        let several = format!("v1,AAAA v2,whatever v1,not-base64!! {STANDARD_SIG}");
        assert_eq!(verify(SECRET, headers(&several, &ts), BODY, TS), Ok(KeyScheme::Standard));
    }

    #[test]
    fn legacy_polar_secrets_without_the_whsec_prefix_verify() {
        let secret = "polar_whs_abc123";
        let sig = sign(secret, KeyScheme::Legacy, ID, TS, BODY).unwrap();
        assert_eq!(verify(secret, headers(&sig, &TS.to_string()), BODY, TS), Ok(KeyScheme::Legacy));
    }

    #[test]
    fn tampering_is_rejected() {
        let ts = TS.to_string();
        assert_eq!(
            verify(SECRET, headers(LEGACY_SIG, &ts), br#"{"test": 2432232315}"#, TS),
            Err(VerifyError::NoMatchingSignature)
        );
        let other_id = SignedHeaders { id: Some("msg_other"), timestamp: Some(&ts), signature: Some(LEGACY_SIG) };
        assert_eq!(verify(SECRET, other_id, BODY, TS), Err(VerifyError::NoMatchingSignature));
        let shifted = (TS + 1).to_string();
        assert_eq!(verify(SECRET, headers(LEGACY_SIG, &shifted), BODY, TS), Err(VerifyError::NoMatchingSignature));
        assert_eq!(
            verify("whsec_wrongsecretwrongsecret", headers(LEGACY_SIG, &ts), BODY, TS),
            Err(VerifyError::NoMatchingSignature)
        );
        // A truncated signature fails the length check.
        assert_eq!(
            verify(SECRET, headers("v1,TcxlhK9b6UD6iVI1ZU2tTqp8PEVf", &ts), BODY, TS),
            Err(VerifyError::NoMatchingSignature)
        );
        // Only v1 counts.
        let v2 = LEGACY_SIG.replace("v1,", "v2,");
        assert_eq!(verify(SECRET, headers(&v2, &ts), BODY, TS), Err(VerifyError::NoMatchingSignature));
    }

    #[test]
    fn timestamps_must_be_within_five_minutes() {
        let ts = TS.to_string();
        assert!(verify(SECRET, headers(LEGACY_SIG, &ts), BODY, TS + 300).is_ok());
        assert!(verify(SECRET, headers(LEGACY_SIG, &ts), BODY, TS - 300).is_ok());
        assert_eq!(verify(SECRET, headers(LEGACY_SIG, &ts), BODY, TS + 301), Err(VerifyError::TooOld));
        assert_eq!(verify(SECRET, headers(LEGACY_SIG, &ts), BODY, TS - 301), Err(VerifyError::TooNew));
        assert_eq!(verify(SECRET, headers(LEGACY_SIG, "soon"), BODY, TS), Err(VerifyError::BadTimestamp));
    }

    #[test]
    fn missing_headers_are_named() {
        let ts = TS.to_string();
        let mut h = headers(LEGACY_SIG, &ts);
        h.id = None;
        assert_eq!(verify(SECRET, h, BODY, TS), Err(VerifyError::MissingHeader("webhook-id")));
        let mut h = headers(LEGACY_SIG, &ts);
        h.timestamp = Some("");
        assert_eq!(verify(SECRET, h, BODY, TS), Err(VerifyError::MissingHeader("webhook-timestamp")));
        let mut h = headers(LEGACY_SIG, &ts);
        h.signature = None;
        assert_eq!(verify(SECRET, h, BODY, TS), Err(VerifyError::MissingHeader("webhook-signature")));
    }
}
