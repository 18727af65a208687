//! `AppError`: the one error type server functions return. Every variant is safe to show to
//! the person using the page; the real cause of an internal failure is logged on the server
//! (with the reference shown here) and never serialized to the browser.

use serde::{Deserialize, Serialize};
use server_fn_error::*;

mod server_fn_error {
    pub use leptos::server_fn::codec::JsonEncoding;
    pub use leptos::server_fn::error::{FromServerFnError, ServerFnErrorErr};
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AppError {
    /// No signed-in user where one is required.
    #[error("Please sign in to continue.")]
    Unauthorized,
    /// Unknown email or wrong password: deliberately the same message for both.
    #[error("That email and password don't match an account.")]
    InvalidCredentials,
    /// Input that failed validation, with the form field it belongs to.
    #[error("{message}")]
    Validation { field: String, message: String },
    /// Something that already exists (for example an account for this email).
    #[error("{message}")]
    Conflict { field: Option<String>, message: String },
    #[error("Too many attempts. Try again in {} minute{}.", minutes(*retry_after_secs), if minutes(*retry_after_secs) == 1 { "" } else { "s" })]
    RateLimited { retry_after_secs: u64 },
    #[error("Not found.")]
    NotFound,
    /// The request came from another site (cross-site request forgery protection).
    #[error("This request was blocked because it came from another site.")]
    Forbidden,
    /// The billing provider (Polar) could not be reached or answered with an outage.
    #[error("{message}")]
    Unavailable { message: String },
    /// The signed-in user's plan does not include this (access follows granted benefits).
    #[error("{message}")]
    NotEntitled { message: String },
    /// A failure on our side. `reference` lets support find the logged cause.
    #[error("Something went wrong on our side. Please try again. (reference {reference})")]
    Internal { reference: String },
    /// Transport-level failures reported by the server-function machinery (network down,
    /// undecodable response). Their text comes from the framework, not from our server.
    #[error("We couldn't reach the server. Check your connection and try again.")]
    Transport { detail: String },
}

fn minutes(secs: u64) -> u64 {
    secs.div_ceil(60).max(1)
}

impl AppError {
    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        AppError::Validation { field: field.to_string(), message: message.into() }
    }

    /// The form field this error belongs to, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            AppError::Validation { field, .. } => Some(field),
            AppError::Conflict { field, .. } => field.as_deref(),
            _ => None,
        }
    }

    /// The HTTP status this error maps to in JSON APIs.
    pub fn status_code(&self) -> u16 {
        match self {
            AppError::Unauthorized | AppError::InvalidCredentials => 401,
            AppError::Validation { .. } => 422,
            AppError::Conflict { .. } => 409,
            AppError::RateLimited { .. } => 429,
            AppError::NotFound => 404,
            AppError::Forbidden | AppError::NotEntitled { .. } => 403,
            AppError::Unavailable { .. } => 503,
            AppError::Internal { .. } | AppError::Transport { .. } => 500,
        }
    }
}

impl FromServerFnError for AppError {
    type Encoder = JsonEncoding;

    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        AppError::Transport { detail: value.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_message_rounds_up_to_whole_minutes() {
        assert_eq!(
            AppError::RateLimited { retry_after_secs: 30 }.to_string(),
            "Too many attempts. Try again in 1 minute."
        );
        assert_eq!(
            AppError::RateLimited { retry_after_secs: 601 }.to_string(),
            "Too many attempts. Try again in 11 minutes."
        );
    }

    #[test]
    fn internal_errors_show_only_a_reference() {
        let e = AppError::Internal { reference: "ab12cd".into() };
        assert!(e.to_string().contains("ab12cd"));
        assert_eq!(e.status_code(), 500);
    }

    #[test]
    fn errors_round_trip_through_json() {
        let e = AppError::validation("email", "Enter your email address.");
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<AppError>(&json).unwrap(), e);
        assert_eq!(e.field(), Some("email"));
    }
}
