//! Server functions, by area, and the DTOs they exchange with the browser. Each one is thin:
//! authenticate, call one server-side operation, map the error to an [`AppError`](crate::error::AppError).

pub mod account;
pub mod auth;
