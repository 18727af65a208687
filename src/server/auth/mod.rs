//! Accounts: sign-up, sign-in, sign-out, sessions, and the `require_user` guard.

pub mod gate;
pub mod password;
pub mod rate_limit;
pub mod recovery;
pub mod session;
pub mod tokens;
pub mod users;

pub use session::{require_user, SessionUser};

/// What can go wrong with accounts. Business outcomes are variants of their own; `Db` and
/// `Hashing` are failures of ours, logged once where they are translated (`server::errors`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input refused, with the form field it belongs to.
    #[error("{message}")]
    Invalid { field: &'static str, message: String },
    /// An account with this address exists already.
    #[error("an account with this email already exists")]
    Taken,
    /// Unknown email or wrong password: deliberately one outcome.
    #[error("that email and password don't match an account")]
    InvalidCredentials,
    /// Too many attempts; retry in this many seconds.
    #[error("too many attempts; retry in {0} s")]
    RateLimited(u64),
    /// Too many password hashes waited too long for their turn.
    #[error("password hashing is busy")]
    Busy,
    #[error("not signed in")]
    Unauthorized,
    #[error("the address is confirmed already")]
    AlreadyConfirmed,
    #[error("password hashing failed: {0}")]
    Hashing(String),
    #[error("database error")]
    Db(#[from] sqlx::Error),
}

impl Error {
    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Error::Invalid { field, message: message.into() }
    }
}

impl From<password::HashError> for Error {
    fn from(e: password::HashError) -> Self {
        match e {
            password::HashError::Busy => Error::Busy,
            password::HashError::Failed(m) => Error::Hashing(m),
        }
    }
}

/// What account operations need from the app, and nothing more: the pool, the bounded
/// password hasher, the configuration and the mail outbox (the server functions build it).
#[derive(Clone, Copy)]
pub struct Accounts<'a> {
    pub pool: &'a sqlx::PgPool,
    pub passwords: &'a password::Passwords,
    pub config: &'a crate::server::config::Config,
    pub mailer: &'a crate::server::mail::Mailer,
}
