//! API keys for the metered API, managed from /settings/billing.

use crate::error::AppError;
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub created: String,
    pub last_used: Option<String>,
}

/// A key just created: the only time its full value is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewApiKey {
    pub name: String,
    pub key: String,
}

#[cfg(feature = "ssr")]
use super::state;

/// A key created by a JavaScript-off form post, to show once: reading it clears it. Call it
/// once per page render (a page-level resource), never from a view that may re-render.
#[server(prefix = "/api", endpoint = "keys/revealed")]
pub async fn take_revealed_api_key() -> Result<Option<NewApiKey>, AppError> {
    super::with_status(
        async {
            crate::server::auth::require_user().await?;
            let state = state()?;
            use crate::server::auth::session;
            let Some(value) = session::cookie_value(&super::request_headers(), session::NEW_KEY_COOKIE) else {
                return Ok(None);
            };
            session::set_cookie(session::new_key_cookie(&state.config, "", 0));
            Ok(decode_revealed(&value))
        }
        .await,
    )
}

/// `<key>.<base64url(name)>`: what the one-time cookie carries.
#[cfg(feature = "ssr")]
fn encode_revealed(new: &NewApiKey) -> String {
    use base64::Engine;
    format!("{}.{}", new.key, base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(new.name.as_bytes()))
}

#[cfg(feature = "ssr")]
fn decode_revealed(value: &str) -> Option<NewApiKey> {
    use base64::Engine;
    let (key, name) = value.split_once('.')?;
    let name = String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(name).ok()?).ok()?;
    key.starts_with(crate::server::api_keys::PREFIX).then(|| NewApiKey { name, key: key.to_string() })
}

/// The signed-in user's live keys, newest first.
#[server(prefix = "/api", endpoint = "keys/list")]
pub async fn list_api_keys() -> Result<Vec<ApiKeyView>, AppError> {
    super::with_status(list_api_keys_inner().await)
}

#[cfg(feature = "ssr")]
async fn list_api_keys_inner() -> Result<Vec<ApiKeyView>, AppError> {
    let user = crate::server::auth::require_user().await?;
    let state = state()?;
    let keys = crate::server::api_keys::list(&state.pool, user.id).await?;
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%b %-d, %Y %H:%M UTC").to_string();
    Ok(keys
        .into_iter()
        .map(|k| ApiKeyView {
            id: k.id.to_string(),
            name: k.name,
            prefix: k.prefix,
            created: fmt(k.created_at),
            last_used: k.last_used_at.map(fmt),
        })
        .collect())
}

/// Creates a key. With JavaScript the key comes back in the response; a plain form post
/// stores it as a one-time flash for the page the browser is redirected to.
#[server(prefix = "/api", endpoint = "keys/create")]
pub async fn create_api_key(name: String) -> Result<Option<NewApiKey>, AppError> {
    super::with_status(
        async {
            let user = crate::server::auth::require_user().await?;
            let state = state()?;
            let name = name.trim().to_string();
            if name.is_empty() {
                return Err(AppError::validation("name", "Give the key a name, such as the app that will use it."));
            }
            if name.chars().count() > 60 {
                return Err(AppError::validation("name", "Use at most 60 characters."));
            }
            // Free accounts get FREE_MAX_API_KEYS; more is a paid feature, checked by benefit only
            // once the free places are taken (so a first key never waits for Polar).
            use crate::domain::plans::FREE_MAX_API_KEYS;
            let mut limit = FREE_MAX_API_KEYS;
            let mut created = crate::server::api_keys::create(&state.pool, user.id, &name, limit).await?;
            if created.is_none() {
                limit = paid_key_limit(&state, user.id).await?;
                created = crate::server::api_keys::create(&state.pool, user.id, &name, limit).await?;
            }
            let Some((id, key)) = created else {
                return Err(AppError::Conflict {
                    field: Some("name".into()),
                    message: format!(
                        "You have {limit} API keys, the most your plan includes. Revoke one to create another."
                    ),
                });
            };
            tracing::info!(user_id = %user.id, key_id = %id, "API key created");
            let new = NewApiKey { name, key };
            if super::is_plain_form_post() {
                // Never stored: the browser that asked keeps it for the page it is sent back to.
                crate::server::auth::session::set_cookie(crate::server::auth::session::new_key_cookie(
                    &state.config,
                    &encode_revealed(&new),
                    300,
                ));
                Ok(None)
            } else {
                Ok(Some(new))
            }
        }
        .await,
    )
}

/// The key limit of a paid benefit, or the refusal for an account without one.
#[cfg(feature = "ssr")]
async fn paid_key_limit(state: &crate::server::state::AppState, user: uuid::Uuid) -> Result<i64, AppError> {
    use crate::domain::plans::{FREE_MAX_API_KEYS, PAID_BENEFITS, PAID_MAX_API_KEYS};
    match crate::server::billing::require_any_benefit(&state.billing, user, &PAID_BENEFITS).await {
        Ok(()) => Ok(PAID_MAX_API_KEYS),
        Err(crate::server::billing::Error::NotEntitled(_)) => Err(AppError::NotEntitled {
            message: format!("The Free plan includes {FREE_MAX_API_KEYS} API keys. Revoke one, or upgrade to Pro or Business for up to {PAID_MAX_API_KEYS}."),
        }),
        Err(e) => Err(e.into()),
    }
}

/// Revokes one of the signed-in user's keys; requests with it fail at once.
#[server(prefix = "/api", endpoint = "keys/revoke")]
pub async fn revoke_api_key(id: String) -> Result<(), AppError> {
    super::with_status(
        async {
            let user = crate::server::auth::require_user().await?;
            let state = state()?;
            let id = uuid::Uuid::parse_str(&id).map_err(|_| AppError::NotFound)?;
            if crate::server::api_keys::revoke(&state.pool, user.id, id).await? {
                tracing::info!(user_id = %user.id, key_id = %id, "API key revoked");
                Ok(())
            } else {
                Err(AppError::NotFound)
            }
        }
        .await,
    )
}
