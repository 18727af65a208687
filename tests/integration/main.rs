//! The integration tests, one binary (one link, one process): every test gets its own fresh
//! database on a real PostgreSQL and the real application on port 0 (see `helpers`).

// The whole crate is test code: a panic is how a helper reports a failure.
#![allow(clippy::unwrap_used)]
#![cfg(feature = "ssr")]

mod helpers;

mod accounts;
mod admin;
mod billing;
mod fuzz_corpus;
mod hygiene;
mod ledger;
mod metered_api;
mod overage;
mod pages;
mod polar_standin;
mod proxy;
mod usage;
mod webhooks;
