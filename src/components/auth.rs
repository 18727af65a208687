//! What the sign-in and sign-up pages share (the credential fields, the link between them
//! that keeps `next`), and the prompt a page shows when it needs a signed-in user.

use crate::components::form::Field;
use crate::error::AppError;
use leptos::prelude::*;

/// Percent-encodes a query value (for carrying `next` between pages).
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `page`, carrying `next` when there is one.
pub fn with_next(page: &str, next: &str) -> String {
    if next.is_empty() {
        page.to_string()
    } else {
        format!("{page}?next={}", urlencode(next))
    }
}

/// The email and password fields, and the hidden `next` the form carries.
#[component]
pub fn CredentialFields(
    /// `current-password` to sign in, `new-password` to sign up.
    password_autocomplete: &'static str,
    #[prop(optional)] password_hint: Option<&'static str>,
    #[prop(into)] error: Signal<Option<AppError>>,
    #[prop(into)] next: Signal<String>,
) -> impl IntoView {
    view! {
        <Field name="email" label="Email" input_type="email" autocomplete="email" error=error />
        {match password_hint {
            Some(hint) => {
                view! {
                    <Field
                        name="password"
                        label="Password"
                        input_type="password"
                        autocomplete=password_autocomplete
                        hint=hint
                        error=error
                    />
                }
                    .into_any()
            }
            None => {
                view! {
                    <Field
                        name="password"
                        label="Password"
                        input_type="password"
                        autocomplete=password_autocomplete
                        error=error
                    />
                }
                    .into_any()
            }
        }}
        <input type="hidden" name="next" value=next />
    }
}

/// Shown when a page needs a signed-in user (with JavaScript on, the server also redirects).
#[component]
pub fn SignInPrompt(message: String, #[prop(into)] next: String) -> impl IntoView {
    view! {
        <section class="panel narrow center" role="alert">
            <p>{message}</p>
            <p>
                <a class="btn btn--primary" href=with_next("/login", &next)>
                    "Sign in"
                </a>
            </p>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_survives_the_trip_between_pages() {
        assert_eq!(with_next("/signup", ""), "/signup");
        assert_eq!(
            with_next("/login", "/billing/success?checkout_id=a b"),
            "/login?next=/billing/success%3Fcheckout_id%3Da%20b"
        );
        assert_eq!(urlencode("é&"), "%C3%A9%26");
    }
}
