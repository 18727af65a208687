//! After a billing action succeeds, the hydrated page goes where the server said. A full
//! navigation, not the router's: the destination may be Polar's checkout or portal, which are
//! outside this app. (With JavaScript off the server answers the form post with a redirect.)

use crate::error::AppError;
use leptos::prelude::*;

/// Follows `Ok(url)` results of an action's value.
pub fn follow_redirects(value: impl Fn() -> Option<Result<String, AppError>> + Send + Sync + 'static) {
    Effect::new(move |_| {
        if let Some(Ok(url)) = value() {
            let _ = window().location().set_href(&url);
        }
    });
}
