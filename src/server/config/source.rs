//! Where configuration comes from and how values are read: [`Secret`], [`ConfigError`] (which
//! names the variable and never carries a secret's value), the [`Source`] trait, and the
//! parsers every setting shares.

use std::collections::HashMap;
use std::fmt;
use url::Url;

/// A secret string. Its `Debug`/`Display` print `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A configuration problem, naming the variable and what it expects. Never carries a
/// secret's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "configuration error: {}: {}", self.var, self.problem)
    }
}

impl std::error::Error for ConfigError {}

pub(super) fn err(var: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError { var, problem: problem.into() }
}

/// Where configuration values come from. Tests pass a map; the binary the process env.
pub trait Source {
    fn get(&self, key: &str) -> Option<String>;
}

impl Source for HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).cloned()
    }
}

/// The process environment (after `.env` was loaded into it).
pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

/// Reads a variable, treating an empty value as unset (as `.env` files often leave them).
pub(super) fn var(src: &dyn Source, key: &str) -> Option<String> {
    src.get(key).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

pub(super) fn parse_url(var_name: &'static str, value: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value)
        .map_err(|e| err(var_name, format!("expected an absolute http(s) URL such as https://app.example.com, got a value that does not parse ({e})")))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(err(var_name, "expected an http:// or https:// URL"));
    }
    Ok(url)
}

pub(super) fn parse_int<T: std::str::FromStr>(
    var_name: &'static str,
    value: &str,
    expected: &str,
) -> Result<T, ConfigError> {
    value.parse::<T>().map_err(|_| err(var_name, format!("expected {expected}, got `{value}`")))
}

pub(super) fn is_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok()
}

pub fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost") || d.to_ascii_lowercase().ends_with(".localhost")
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// `true`/`false`, or the default when unset.
pub(super) fn parse_bool(src: &dyn Source, key: &'static str, default: bool) -> Result<bool, ConfigError> {
    match var(src, key).as_deref() {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(err(key, format!("expected true or false, got `{other}`"))),
    }
}

/// A whole number of at least `min`, or the default when unset.
pub(super) fn int_at_least<T: std::str::FromStr + PartialOrd + Copy + fmt::Display>(
    src: &dyn Source,
    key: &'static str,
    min: T,
    default: T,
    expected: &str,
) -> Result<T, ConfigError> {
    match var(src, key) {
        None => Ok(default),
        Some(v) => {
            let n: T = parse_int(key, &v, expected)?;
            if n < min {
                return Err(err(key, format!("expected {expected} (at least {min}), got `{v}`")));
            }
            Ok(n)
        }
    }
}

/// A secret derived from the session secret for one purpose: a `whsec_` webhook secret
/// (32 bytes, base64) or a `polar_oat_local_` token.
pub(super) fn derive_secret(session_secret: &Secret, purpose: &str, webhook: bool) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(session_secret.expose().as_bytes()).expect("any key length");
    m.update(purpose.as_bytes());
    let bytes = m.finalize().into_bytes();
    if webhook {
        format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes))
    } else {
        format!("polar_oat_local_{}", hex::encode(&bytes[..20]))
    }
}
