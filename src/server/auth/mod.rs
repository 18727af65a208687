//! Accounts: sign-up, sign-in, sign-out, sessions, and the `require_user` guard.

pub mod gate;
pub mod password;
pub mod rate_limit;
pub mod recovery;
pub mod session;
pub mod tokens;
pub mod users;

pub use session::{require_user, SessionUser};
