//! The one place a server layer's error becomes what the browser sees ([`AppError`]): each
//! layer has its own error (`billing::Error`, `auth::Error`, …) with its sources; here each is
//! translated once, and a failure of ours is logged once, with a reference the user sees and
//! the whole source chain.

use crate::error::AppError;
use crate::server::billing;

/// `error: cause: cause of the cause …`
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// Logs a failure of ours with a fresh reference; the user-safe error that carries it.
pub fn internal(e: &(dyn std::error::Error + 'static)) -> AppError {
    let reference = crate::server::util::short_reference();
    tracing::error!(%reference, error = %chain(e), "internal error");
    AppError::Internal { reference }
}

/// [`internal`] for a failure known only by its message (a missing context, a broken
/// invariant).
pub fn internal_msg(cause: impl std::fmt::Display) -> AppError {
    let reference = crate::server::util::short_reference();
    tracing::error!(%reference, error = %cause, "internal error");
    AppError::Internal { reference }
}

const POLAR_DOWN: &str = "Our billing provider is not answering right now. Please try again in a minute.";

impl From<billing::Error> for AppError {
    fn from(e: billing::Error) -> AppError {
        use billing::Error as E;
        match e {
            E::NotConfigured => AppError::Unavailable { message: "Billing is not configured on this server.".into() },
            E::Unavailable(ref source) => {
                tracing::warn!(error = %chain(source), "Polar unavailable");
                AppError::Unavailable { message: POLAR_DOWN.into() }
            }
            E::CannotConfirm => AppError::Unavailable {
                message: "We can't confirm your plan with our billing provider right now. Please try again shortly."
                    .into(),
            },
            E::NotFound => AppError::NotFound,
            E::Invalid { field, message } => AppError::Validation { field, message },
            E::Conflict(message) => AppError::Conflict { field: None, message },
            E::NotEntitled(message) => AppError::NotEntitled { message },
            E::RateLimited(secs) => AppError::RateLimited { retry_after_secs: secs },
            E::Polar(_) | E::Db(_) => internal(&e),
        }
    }
}

impl From<crate::server::auth::Error> for AppError {
    fn from(e: crate::server::auth::Error) -> AppError {
        use crate::server::auth::Error as E;
        match e {
            E::Invalid { field, message } => AppError::Validation { field: field.to_string(), message },
            E::Taken => AppError::Conflict {
                field: Some("email".into()),
                message: "An account with this email already exists. Sign in instead.".into(),
            },
            E::InvalidCredentials => AppError::InvalidCredentials,
            E::RateLimited(secs) => AppError::RateLimited { retry_after_secs: secs },
            E::Busy => AppError::Unavailable {
                message: "We're handling a lot of sign-ins right now. Please try again in a moment.".into(),
            },
            E::Unauthorized => AppError::Unauthorized,
            E::AlreadyConfirmed => {
                AppError::Conflict { field: None, message: "Your email address is already confirmed.".into() }
            }
            E::Hashing(_) | E::Db(_) => internal(&e),
        }
    }
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> AppError {
        internal(&e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn business_outcomes_keep_their_meaning_and_failures_show_only_a_reference() {
        assert_eq!(AppError::from(billing::Error::NotFound), AppError::NotFound);
        assert_eq!(AppError::from(billing::Error::RateLimited(7)), AppError::RateLimited { retry_after_secs: 7 });
        assert!(matches!(AppError::from(billing::Error::Db(sqlx::Error::PoolTimedOut)), AppError::Internal { .. }));
        let down =
            AppError::from(billing::Error::Unavailable(crate::server::polar::PolarError::Unreachable("dns".into())));
        assert!(
            matches!(down, AppError::Unavailable { ref message } if !message.contains("dns")),
            "no cause reaches the browser"
        );
    }

    #[test]
    fn the_chain_names_every_cause() {
        let e = billing::Error::Unavailable(crate::server::polar::PolarError::Unreachable("connection refused".into()));
        assert_eq!(chain(&e), "Polar is not answering: could not reach Polar: connection refused");
    }
}
