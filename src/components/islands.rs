//! What makes a page's islands come alive: the wasm loader. A page that renders an
//! `#[island]` renders [`IslandScripts`] too; every other page is plain HTML and downloads no
//! wasm at all. (An integration test checks that the two always go together.)

use leptos::prelude::*;

/// Leptos's islands loader (a module script and preload links, with the page's nonce).
#[component]
pub fn IslandScripts() -> impl IntoView {
    // The document shell provides the options; without them (never in the app) nothing loads.
    use_context::<LeptosOptions>().map(|options| view! { <HydrationScripts options islands=true /> })
}
