//! A time shown in the visitor's own timezone: the server renders it in UTC (it cannot know
//! the visitor's zone), and once hydrated the browser rewrites it with its local time.

use leptos::prelude::*;

#[component]
pub fn LocalTime(
    /// RFC 3339, UTC.
    iso: String,
    /// What the server shows, e.g. "Nov 23, 00:00 UTC".
    utc_text: String,
) -> impl IntoView {
    let (text, set_text) = signal(utc_text);
    #[cfg(feature = "hydrate")]
    {
        let iso = iso.clone();
        Effect::new(move |_| {
            let date = js_sys::Date::new(&wasm_bindgen::JsValue::from_str(&iso));
            if !date.get_time().is_nan() {
                let options = js_sys::Object::new();
                for (k, v) in [
                    ("month", "short"),
                    ("day", "numeric"),
                    ("hour", "2-digit"),
                    ("minute", "2-digit"),
                    ("timeZoneName", "short"),
                ] {
                    let _ = js_sys::Reflect::set(&options, &k.into(), &v.into());
                }
                set_text.set(String::from(date.to_locale_string("default", &options)));
            }
        });
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = set_text;
    view! { <time datetime=iso>{text}</time> }
}
