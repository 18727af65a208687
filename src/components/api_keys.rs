//! The API keys section of /settings/billing: create (shown once), list, revoke.

use crate::api::keys::{list_api_keys, take_revealed_api_key, ApiKeyView, CreateApiKey, NewApiKey, RevokeApiKey};
use crate::components::form::{Field, FormError};
use crate::error::AppError;
use leptos::prelude::*;

/// The section's data and actions. Create it at the top of the page component, never inside a
/// view that can re-render: resources are matched between server and browser by creation
/// order, and reading the revealed key clears it.
#[derive(Clone, Copy)]
pub struct ApiKeysData {
    create: ServerAction<CreateApiKey>,
    revoke: ServerAction<RevokeApiKey>,
    keys: Resource<Result<Vec<ApiKeyView>, AppError>>,
    revealed: Resource<Result<Option<NewApiKey>, AppError>>,
}

impl ApiKeysData {
    pub fn new() -> Self {
        let create = ServerAction::<CreateApiKey>::new();
        let revoke = ServerAction::<RevokeApiKey>::new();
        let keys = Resource::new(move || (create.version().get(), revoke.version().get()), |_| list_api_keys());
        let revealed = Resource::new(|| (), |_| take_revealed_api_key());
        ApiKeysData { create, revoke, keys, revealed }
    }
}

impl ApiKeysData {
    /// Reads both resources, so the surrounding `Suspense` waits for them.
    pub fn track(&self) {
        let _ = (self.keys.get(), self.revealed.get());
    }
}

impl Default for ApiKeysData {
    fn default() -> Self {
        Self::new()
    }
}

#[component]
pub fn ApiKeysSection(data: ApiKeysData) -> impl IntoView {
    let ApiKeysData { create, revoke, keys, revealed } = data;
    let revealed = move || revealed.get().and_then(|r| r.ok()).flatten();
    let create_error = Signal::derive(move || create.value().get().and_then(|r| r.err()));
    let revoke_error = Signal::derive(move || revoke.value().get().and_then(|r| r.err()));
    let just_created = move || create.value().get().and_then(|r| r.ok()).flatten();

    view! {
        <section class="panel" aria-labelledby="keys-title">
            <h2 id="keys-title">"API keys"</h2>
            <p class="muted">
                "Call " <code>"POST /api/v1/text/stats"</code> " with " <code>"Authorization: Bearer <key>"</code>
                ". Each call spends 1 credit per started 1,000 characters."
            </p>
            <FormError error=revoke_error />
            <Transition fallback=|| {
                view! {
                    <p class="loading" role="status">
                        "Loading keys…"
                    </p>
                }
            }>
                {move || {
                    keys.get()
                        .map(|res| match res {
                            Err(e) => {
                                view! {
                                    <div class="alert alert--error" role="alert">
                                        {e.to_string()}
                                    </div>
                                }
                                    .into_any()
                            }
                            Ok(keys) => {
                                let revealed = just_created().or_else(revealed);
                                view! {
                                    {revealed
                                        .map(|k| {
                                            view! {
                                                <div class="alert alert--success" role="status">
                                                    <p>
                                                        <strong>
                                                            {format!("Key \u{201c}{}\u{201d} created.", k.name)}
                                                        </strong>
                                                        " Copy it now: it won't be shown again."
                                                    </p>
                                                    <code class="secret" data-testid="new-api-key">
                                                        {k.key}
                                                    </code>
                                                </div>
                                            }
                                        })}
                                    {if keys.is_empty() {
                                        view! { <p class="empty">"No API keys yet. Create one to call the API."</p> }
                                            .into_any()
                                    } else {
                                        view! {
                                            <div class="table-wrap">
                                                <table class="table">
                                                    <caption class="visually-hidden">"Your API keys"</caption>
                                                    <thead>
                                                        <tr>
                                                            <th scope="col">"Name"</th>
                                                            <th scope="col">"Key"</th>
                                                            <th scope="col">"Created"</th>
                                                            <th scope="col">"Last used"</th>
                                                            <th scope="col">
                                                                <span class="visually-hidden">"Actions"</span>
                                                            </th>
                                                        </tr>
                                                    </thead>
                                                    <tbody>
                                                        {keys
                                                            .into_iter()
                                                            .map(|k| {
                                                                let label = format!("Revoke key {}", k.name);
                                                                view! {
                                                                    <tr>
                                                                        <td>{k.name.clone()}</td>
                                                                        <td>
                                                                            <code>{format!("{}…", k.prefix)}</code>
                                                                        </td>
                                                                        <td>{k.created}</td>
                                                                        <td>{k.last_used.unwrap_or_else(|| "Never".into())}</td>
                                                                        <td>
                                                                            <ActionForm action=revoke attr:class="inline-form">
                                                                                <input type="hidden" name="id" value=k.id />
                                                                                <button
                                                                                    type="submit"
                                                                                    class="btn btn--danger btn--sm"
                                                                                    aria-label=label
                                                                                >
                                                                                    "Revoke"
                                                                                </button>
                                                                            </ActionForm>
                                                                        </td>
                                                                    </tr>
                                                                }
                                                            })
                                                            .collect_view()}
                                                    </tbody>
                                                </table>
                                            </div>
                                        }
                                            .into_any()
                                    }}
                                }
                                    .into_any()
                            }
                        })
                }}
            </Transition>
            <ActionForm action=create attr:class="form form--inline" attr:aria-label="Create an API key">
                <FormError error=create_error />
                <Field
                    name="name"
                    label="New key name"
                    hint="For example the app or server that will use it."
                    error=create_error
                />
                <button type="submit" class="btn btn--primary">
                    "Create key"
                </button>
            </ActionForm>
        </section>
    }
}
