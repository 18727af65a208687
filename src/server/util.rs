//! Small helpers with no better home.

use base64::Engine;
use rand::RngCore;

/// `n` bytes from the OS CSPRNG, base64url without padding (cookie- and URL-safe).
pub fn random_token(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether two secrets are equal, in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// A plain 500 for a failure of ours: the cause is logged with a reference, which is all the
/// response shows.
pub fn internal_response(cause: impl std::fmt::Display) -> axum::response::Response {
    use axum::response::IntoResponse;
    let reference = short_reference();
    tracing::error!(%reference, error = %cause, "internal error");
    (http::StatusCode::INTERNAL_SERVER_ERROR, format!("Something went wrong on our side (reference {reference})."))
        .into_response()
}

/// A short random reference that ties an error shown to a user to its log line.
pub fn short_reference() -> String {
    let mut bytes = [0u8; 4];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Whether `next` is a same-site path we may redirect to after sign-in. Browsers drop tabs and
/// newlines from a URL and read a backslash as a slash, so `/\t/evil.example` and
/// `/\\evil.example` both become `//evil.example`, another host. Only a path that starts with
/// one `/` and holds no control character and no backslash at all is safe; anything else falls
/// back to the caller's default.
pub fn is_safe_local_path(next: &str) -> bool {
    next.len() <= 512
        && next.starts_with('/')
        && !next[1..].starts_with('/')
        && !next.chars().any(|c| c.is_control() || c == '\\')
}

/// `past_due` → `Past_due`; `pro` → `Pro`: the first letter upper-cased.
pub fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_url_safe() {
        let a = random_token(32);
        let b = random_token(32);
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }

    #[test]
    fn only_local_paths_are_safe_redirects() {
        assert!(is_safe_local_path("/billing"));
        assert!(is_safe_local_path("/billing/success?checkout_id=abc"));
        for bad in [
            "https://evil.example",
            "//evil.example",
            "/\\evil.example",
            "billing",
            "",
            "/a\r\nSet-Cookie: x=y",
            // What browsers turn into `//evil.example`: tabs and newlines dropped, `\` read as `/`.
            "/\t/evil.example",
            "/\t\\evil.example",
            "/\n/evil.example",
            "/\r/evil.example",
            "\t//evil.example",
            "/billing\\..\\..\\evil",
            "/\u{0}/evil.example",
            "/\u{7f}/evil.example",
        ] {
            assert!(!is_safe_local_path(bad), "{bad:?}");
        }
        assert!(is_safe_local_path("/billing?after=1.2#history-title"));
    }
}
