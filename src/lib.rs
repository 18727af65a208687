#![recursion_limit = "512"]
//! Tally: billing for SaaS teams that sell through Polar.
//!
//! One crate, two builds. With `ssr` it is the axum server (everything under [`server`]);
//! with `hydrate` it is the wasm bundle that hydrates the server-rendered pages. The two
//! features are never enabled together, and nothing under `server` reaches the browser.
//!
//! Imports go one way, downward (see `ARCHITECTURE.md`): [`domain`] and [`views`] at the
//! bottom, [`server`] operations above them, the server functions of [`api`] above those, and
//! [`components`], [`pages`] and [`app`] on top.

pub mod api;
pub mod app;
pub mod components;
pub mod domain;
pub mod error;
pub mod pages;
pub mod views;

#[cfg(feature = "ssr")]
pub mod server;

/// Entry point of the wasm bundle: attaches the reactive system to the server-rendered DOM.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
}
