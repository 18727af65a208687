//! A time shown in the visitor's own timezone. The server renders it in UTC (it cannot know
//! the visitor's zone); with JavaScript on, a few lines of script in every page
//! ([`LocalTimes`]) rewrite each one in the browser's zone. Not an island: formatting a date
//! once needs no reactive runtime, and an island would cost a page ~45 KB of wasm.

use leptos::prelude::*;

#[component]
pub fn LocalTime(
    /// RFC 3339, UTC.
    iso: String,
    /// What the server shows, e.g. "Nov 23, 00:00 UTC".
    utc_text: String,
) -> impl IntoView {
    view! {
        <time datetime=iso data-local="">
            {utc_text}
        </time>
    }
}

/// Rewrites every `<time data-local>` in the visitor's zone, e.g. "Nov 23, 01:00 CET".
const LOCALIZE: &str = r#"for (const t of document.querySelectorAll("time[data-local]")) { const d = new Date(t.dateTime); if (!isNaN(d)) t.textContent = d.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", timeZoneName: "short" }); }"#;

/// The script behind [`LocalTime`], with the page's nonce; placed once, at the end of the body.
#[component]
pub fn LocalTimes() -> impl IntoView {
    view! {
        <script type="module" nonce=leptos::nonce::use_nonce()>
            {LOCALIZE}
        </script>
    }
}
