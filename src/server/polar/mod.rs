//! Talking to Polar: the typed API client, wire models, and Standard Webhooks signatures under
//! both of Polar's key schemes. The local stand-in that plays Polar offline is
//! `server::standin`.

pub mod breaker;
pub mod client;
pub mod models;
pub mod webhook_signature;

pub use client::{PolarClient, PolarError};
