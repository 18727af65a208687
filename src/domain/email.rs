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

/// Characters allowed in the local part (RFC 5322 `atext`, plus dots between them). Quoted
/// local parts, comments and display names (`Name <a@b.c>`) are refused: a mailer would read
/// `x<me@evil.example>` as a name and an address, so many distinct "emails" would reach one
/// inbox.
fn local_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~-.".contains(c)
}

fn domain_ok(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && labels.last().is_some_and(|tld| {
            tld.len() >= 2
                && tld.chars().all(|c| c.is_ascii_alphabetic() || c == '-' || c.is_ascii_digit())
                && !tld.chars().all(|c| c.is_ascii_digit())
        })
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
        let (local, domain) = s.rsplit_once('@').ok_or(EmailError::Malformed)?;
        let ok = !local.is_empty()
            && local.len() <= 64
            && local.chars().all(local_char)
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && domain_ok(domain);
        if !ok {
            return Err(EmailError::Malformed);
        }
        Ok(Self(s.to_string()))
    }

    /// The inbox the address delivers to, as far as it can be told: lower-cased, without a
    /// `+tag`, and for Gmail without dots (`A.nn+x@GoogleMail.com` → `ann@gmail.com`). One
    /// inbox gets the free credits once, however many addresses lead to it.
    pub fn inbox(&self) -> String {
        let lower = self.0.to_lowercase();
        let (local, domain) = lower.rsplit_once('@').unwrap_or((&lower, ""));
        let local = local.split('+').next().unwrap_or(local);
        let domain = if domain == "googlemail.com" { "gmail.com" } else { domain };
        let local = if domain == "gmail.com" { local.replace('.', "") } else { local.to_string() };
        format!("{local}@{domain}")
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
        for bad in [
            "ann",
            "ann@",
            "@x.io",
            "ann@x",
            "a b@x.io",
            "a@b@x.io",
            "ann@.io",
            "ann@x.",
            "x<me@evil.example>",
            "<me@evil.example>",
            "\"q\"@x.io",
            "a(c)@x.io",
            "ann@x..io",
            ".ann@x.io",
            "ann.@x.io",
            "an..n@x.io",
            "ann@-x.io",
            "ann@x.123",
            "ann@exämple.io",
            "ä@x.io",
        ] {
            assert_eq!(Email::parse(bad), Err(EmailError::Malformed), "{bad}");
        }
        let long = format!("{}@x.io", "a".repeat(260));
        assert_eq!(Email::parse(&long), Err(EmailError::TooLong));
    }

    #[test]
    fn addresses_that_reach_one_inbox_share_it() {
        let inbox = |s: &str| Email::parse(s).unwrap().inbox();
        assert_eq!(inbox("Ann+promo@Example.com"), "ann@example.com");
        assert_eq!(inbox("a.n.n+1@googlemail.com"), inbox("ann@gmail.com"));
        assert_eq!(inbox("a.n.n@example.com"), "a.n.n@example.com", "dots matter outside Gmail");
        assert!(Email::parse("o'brien+x@sub.example.co.uk").is_ok());
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
