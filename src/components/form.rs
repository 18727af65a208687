//! Form pieces that show server-side validation errors next to their fields.

use crate::error::AppError;
use leptos::prelude::*;

/// A labelled input whose error (from the last submission) is announced to screen readers.
#[component]
pub fn Field(
    /// Form field name, matching the server function's argument.
    name: &'static str,
    label: &'static str,
    #[prop(default = "text")] input_type: &'static str,
    #[prop(optional)] autocomplete: Option<&'static str>,
    #[prop(optional)] hint: Option<&'static str>,
    #[prop(default = true)] required: bool,
    /// The value to show (for forms that edit saved data).
    #[prop(optional, into)]
    value: Option<String>,
    /// The last submission's error, if any.
    #[prop(into)]
    error: Signal<Option<AppError>>,
) -> impl IntoView {
    let message = move || error.get().filter(|e| e.field() == Some(name)).map(|e| e.to_string());
    let id = format!("field-{name}");
    let error_id = format!("{id}-error");
    let hint_id = format!("{id}-hint");
    let described = {
        let error_id = error_id.clone();
        let hint_id = hint_id.clone();
        move || {
            let mut ids = Vec::new();
            if hint.is_some() {
                ids.push(hint_id.clone());
            }
            if message().is_some() {
                ids.push(error_id.clone());
            }
            (!ids.is_empty()).then(|| ids.join(" "))
        }
    };
    view! {
        <div class="field" class:field--invalid=move || message().is_some()>
            <label for=id.clone()>{label}</label>
            <input
                id=id
                name=name
                type=input_type
                autocomplete=autocomplete
                required=required
                value=value
                aria-invalid=move || message().is_some().then_some("true")
                aria-describedby=described
            />
            {hint.map(|h| view! { <p class="field__hint" id=hint_id.clone()>{h}</p> })}
            {move || message().map(|m| view! { <p class="field__error" id=error_id.clone()>{m}</p> })}
        </div>
    }
}

/// A banner for errors that belong to no single field.
#[component]
pub fn FormError(#[prop(into)] error: Signal<Option<AppError>>) -> impl IntoView {
    let message = move || error.get().filter(|e| e.field().is_none()).map(|e| e.to_string());
    view! {
        {move || {
            message()
                .map(|m| {
                    view! {
                        <div class="alert alert--error" role="alert">
                            {m}
                        </div>
                    }
                })
        }}
    }
}
