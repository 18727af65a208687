//! Talking to Polar. So far: wire models and Standard Webhooks signatures under both of Polar's
//! key schemes.
//! (The typed API client and the local stand-in come next; see the issues.)

pub mod models;
pub mod webhook_signature;
