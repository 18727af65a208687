//! Everything that runs only on the server: configuration, database, accounts, Polar.
//! Compiled only with the `ssr` feature, so none of it can reach the wasm bundle.

pub mod account;
pub mod admin;
pub mod api_keys;
pub mod assets;
pub mod auth;
pub mod billing;
pub mod catalog;
pub mod cli;
pub mod client_ip;
pub mod config;
pub mod csrf;
pub mod db;
pub mod embedded_pg;
pub mod errors;
pub mod fuzzing;
pub mod health;
pub mod janitor;
pub mod ledger;
pub mod mail;
pub mod metered;
pub mod metrics;
pub mod polar;
pub mod routes;
pub mod security_headers;
pub mod standin;
pub mod startup;
pub mod state;
pub mod state_cache;
pub mod supervisor;
pub mod throttle;
pub mod usage;
pub mod util;
pub mod webhooks;
