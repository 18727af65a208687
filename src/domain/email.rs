//! Email addresses as accounts know them: trimmed, with a case-insensitive identity.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A syntactically plausible email address. Construction is the only validation: once you
/// hold an `Email`, it is trimmed, at most 254 characters, and has one `@` with text on both
/// sides and a dot in the domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Email(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("Enter your email address.")]
    Empty,
    #[error("Enter an email address like name@example.com.")]
    Malformed,
    #[error("That email address is too long.")]
    TooLong,
}

impl Email {
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(EmailError::Empty);
        }
        if s.len() > 254 {
            return Err(EmailError::TooLong);
        }
        let (local, domain) = s.split_once('@').ok_or(EmailError::Malformed)?;
        let ok = !local.is_empty()
            && !domain.is_empty()
            && !domain.contains('@')
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !s.chars().any(|c| c.is_whitespace() || c.is_control());
        if !ok {
            return Err(EmailError::Malformed);
        }
        Ok(Self(s.to_string()))
    }

    /// The address as the user typed it (trimmed).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The identity used for uniqueness and sign-in: lower-cased. `Ann@X.io` and `ann@x.io`
    /// are the same account.
    pub fn normalized(&self) -> String {
        self.0.to_lowercase()
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The longest email address accepted anywhere (RFC 5321's path limit), in bytes.
pub const MAX_EMAIL_BYTES: usize = 254;
/// The longest password accepted anywhere, in bytes: refused before any hashing, so a
/// megabyte of "password" costs nothing but the refusal.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Bounds on what a sign-in form may send, checked before anything else happens.
pub fn check_credential_bounds(email: &str, password: &str) -> Result<(), (&'static str, &'static str)> {
    if email.len() > MAX_EMAIL_BYTES {
        return Err(("email", "That email address is too long."));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(("password", "That password is too long."));
    }
    Ok(())
}

/// Password rules for new accounts. Length is what matters (NIST SP 800-63B): at least 10
/// characters, at most 128 so hashing cost stays bounded.
pub fn check_new_password(password: &str) -> Result<(), &'static str> {
    let n = password.chars().count();
    if n < 10 {
        return Err("Use at least 10 characters.");
    }
    if n > 128 {
        return Err("Use at most 128 characters.");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_is_trimmed_and_normalized_case_insensitively() {
        let e = Email::parse("  Ann.Lee@Example.COM ").unwrap();
        assert_eq!(e.as_str(), "Ann.Lee@Example.COM");
        assert_eq!(e.normalized(), "ann.lee@example.com");
    }

    #[test]
    fn malformed_emails_are_rejected_with_a_reason() {
        assert_eq!(Email::parse(""), Err(EmailError::Empty));
        for bad in ["ann", "ann@", "@x.io", "ann@x", "a b@x.io", "a@b@x.io", "ann@.io", "ann@x."] {
            assert_eq!(Email::parse(bad), Err(EmailError::Malformed), "{bad}");
        }
        let long = format!("{}@x.io", "a".repeat(260));
        assert_eq!(Email::parse(&long), Err(EmailError::TooLong));
    }

    #[test]
    fn credentials_are_bounded_before_anything_else() {
        assert!(check_credential_bounds("a@b.io", "pw").is_ok());
        assert_eq!(check_credential_bounds(&"a".repeat(255), "pw").unwrap_err().0, "email");
        assert_eq!(check_credential_bounds("a@b.io", &"p".repeat(1025)).unwrap_err().0, "password");
        assert!(check_credential_bounds("a@b.io", &"p".repeat(1024)).is_ok());
    }

    #[test]
    fn new_passwords_need_ten_to_128_characters() {
        assert!(check_new_password("short").is_err());
        assert!(check_new_password("exactly10!").is_ok());
        assert!(check_new_password(&"x".repeat(129)).is_err());
    }
}
