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

/// Entry point of the wasm bundle, on a page with islands: prepares the reactive system, then
/// Leptos's loader hydrates each `<leptos-island>` of the page. Once that is done the body is
/// marked `data-hydrated` (end-to-end tests wait for it before they use an island).
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_islands();
    // The loader hydrates the islands right after this returns, in promise callbacks only; a
    // timer runs after all of them.
    leptos::prelude::set_timeout(
        || {
            if let Some(body) = leptos::prelude::document().body() {
                let _ = body.set_attribute("data-hydrated", "true");
            }
        },
        std::time::Duration::ZERO,
    );
}
