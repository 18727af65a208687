//! Server-side sessions. The browser holds `tally_session=<random token>` (HttpOnly,
//! SameSite=Lax; on https `__Host-tally_session`, Secure, so no subdomain or plain-http page
//! can plant or read it); PostgreSQL holds HMAC-SHA256(SESSION_SECRET, token). Expired
//! sessions are pruned by the janitor.

use crate::error::AppError;
use crate::server::config::Config;
use crate::server::state::AppState;
use crate::server::util::random_token;
use chrono::{Duration, Utc};
use hmac::{Hmac, Mac};
use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sqlx::PgPool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use uuid::Uuid;

pub const COOKIE_NAME: &str = "tally_session";
/// The session cookie's name on https: the `__Host-` prefix makes browsers insist on
/// `Secure`, `Path=/` and no `Domain`.
pub const SECURE_COOKIE_NAME: &str = "__Host-tally_session";

/// The session cookie's name under this configuration.
pub fn cookie_name(config: &Config) -> &'static str {
    if config.secure_cookies() {
        SECURE_COOKIE_NAME
    } else {
        COOKIE_NAME
    }
}
pub const SESSION_DAYS: i64 = 30;

/// The signed-in user, as server code sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionUser {
    pub id: Uuid,
    pub email: String,
    /// Whether the session held a flash when it was looked up: without one, taking a flash is
    /// no query at all.
    pub has_flash: bool,
}

fn token_hash(secret: &str, token: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(token.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The value of cookie `name` in a request's `Cookie` headers, if any (at most 128 bytes).
pub fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.to_string())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// The session token in a request's `Cookie` headers, if any.
pub fn token_from_headers(config: &Config, headers: &HeaderMap) -> Option<String> {
    cookie_value(headers, cookie_name(config))
}

/// Creates a session for `user_id` and returns the `Set-Cookie` value that carries it.
pub async fn create(pool: &PgPool, config: &Config, user_id: Uuid) -> Result<HeaderValue, sqlx::Error> {
    let token = random_token(32);
    let expires_at = Utc::now() + Duration::days(SESSION_DAYS);
    sqlx::query("INSERT INTO sessions (token_hash, user_id, expires_at) VALUES ($1, $2, $3)")
        .bind(token_hash(config.session_secret.expose(), &token))
        .bind(user_id)
        .bind(expires_at)
        .execute(pool)
        .await?;
    Ok(cookie(config, &token, SESSION_DAYS * 24 * 3600))
}

/// Deletes the session a request carries (sign-out, or rotation at sign-in).
pub async fn destroy(pool: &PgPool, config: &Config, headers: &HeaderMap) -> Result<(), sqlx::Error> {
    if let Some(token) = token_from_headers(config, headers) {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash(config.session_secret.expose(), &token))
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// Ends every session of `user` except the one `headers` carry (after a password change).
pub async fn destroy_others(
    conn: &mut sqlx::PgConnection,
    config: &Config,
    user: Uuid,
    headers: &HeaderMap,
) -> Result<(), sqlx::Error> {
    let keep =
        token_from_headers(config, headers).map(|t| token_hash(config.session_secret.expose(), &t)).unwrap_or_default();
    sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND token_hash <> $2")
        .bind(user)
        .bind(keep)
        .execute(conn)
        .await?;
    Ok(())
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clearing_cookie(config: &Config) -> HeaderValue {
    cookie(config, "", 0)
}

fn cookie(config: &Config, token: &str, max_age_secs: i64) -> HeaderValue {
    let secure = if config.secure_cookies() { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}",
        cookie_name(config)
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("tally_session=; Path=/; Max-Age=0"))
}

/// The cookie that shows a new API key once after a JavaScript-off form post: the key stays
/// in the browser that created it (never in the database, not even briefly), only for the
/// settings page, for at most five minutes, and is cleared by the page that shows it.
pub const NEW_KEY_COOKIE: &str = "tally_new_key";

pub fn new_key_cookie(config: &Config, value: &str, max_age_secs: i64) -> HeaderValue {
    let secure = if config.secure_cookies() { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{NEW_KEY_COOKIE}={value}; Path=/settings; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("tally_new_key=; Path=/settings; Max-Age=0"))
}

/// When the request's live session was signed in (an operator acts only on a recent sign-in).
pub async fn signed_in_at(
    pool: &PgPool,
    config: &Config,
    headers: &HeaderMap,
) -> Result<Option<chrono::DateTime<Utc>>, sqlx::Error> {
    let Some(token) = token_from_headers(config, headers) else { return Ok(None) };
    sqlx::query_scalar("SELECT created_at FROM sessions WHERE token_hash = $1 AND expires_at > now()")
        .bind(token_hash(config.session_secret.expose(), &token))
        .fetch_optional(pool)
        .await
}

/// The user a request's session cookie belongs to, if the session exists and has not expired.
pub async fn user_from_headers(
    pool: &PgPool,
    config: &Config,
    headers: &HeaderMap,
) -> Result<Option<SessionUser>, sqlx::Error> {
    let Some(token) = token_from_headers(config, headers) else { return Ok(None) };
    let row: Option<(Uuid, String, bool)> = sqlx::query_as(
        "SELECT u.id, u.email, s.flash IS NOT NULL FROM sessions s JOIN users u ON u.id = s.user_id
          WHERE s.token_hash = $1 AND s.expires_at > now()",
    )
    .bind(token_hash(config.session_secret.expose(), &token))
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(id, email, has_flash)| SessionUser { id, email, has_flash }))
}

/// The guard every billing server function starts with: the signed-in user, or
/// `AppError::Unauthorized`. Reads the request from Leptos' context, so it works in server
/// functions and during server-side rendering alike.
pub async fn require_user() -> Result<SessionUser, AppError> {
    current_user().await?.ok_or(AppError::Unauthorized)
}

/// Like [`require_user`], but `None` for anonymous visitors.
pub async fn current_user() -> Result<Option<SessionUser>, AppError> {
    let state = leptos::prelude::use_context::<AppState>()
        .ok_or_else(|| crate::server::errors::internal_msg("AppState missing from context"))?;
    let Some(parts) = leptos::prelude::use_context::<http::request::Parts>() else { return Ok(None) };
    let lookup = Lookup::of(&state);
    match parts.extensions.get::<RequestSession>() {
        Some(memo) => Ok(memo.user(lookup, &parts.headers).await?),
        None => Ok(lookup.user(&parts.headers).await?),
    }
}

/// What looking a session up touches: the pool, the configuration (the cookie's name and
/// key) and the count `/metrics` reports (`tally_session_lookups_total`).
#[derive(Clone, Copy)]
pub struct Lookup<'a> {
    pub pool: &'a PgPool,
    pub config: &'a Config,
    pub counter: &'a AtomicU64,
}

impl<'a> Lookup<'a> {
    /// The app's: its pool, configuration and `AppState::session_lookups`.
    pub fn of(state: &'a AppState) -> Lookup<'a> {
        Lookup { pool: &state.pool, config: &state.config, counter: &state.session_lookups }
    }

    /// Looks the session up in the database (when the request carries a cookie), counted.
    async fn user(self, headers: &HeaderMap) -> Result<Option<SessionUser>, sqlx::Error> {
        if token_from_headers(self.config, headers).is_some() {
            self.counter.fetch_add(1, Ordering::Relaxed);
        }
        user_from_headers(self.pool, self.config, headers).await
    }
}

/// The session a request arrived with, looked up once however many parts of the page ask
/// (the sign-in gate, the header, each server function a render calls). Put on every request
/// by [`crate::server::auth::gate::require_account`]; a sign-in or sign-out during the request
/// shows from the next request on, as the cookie does.
#[derive(Clone, Default)]
pub struct RequestSession(Arc<tokio::sync::OnceCell<Option<SessionUser>>>);

impl RequestSession {
    pub async fn user(&self, lookup: Lookup<'_>, headers: &HeaderMap) -> Result<Option<SessionUser>, sqlx::Error> {
        self.0.get_or_try_init(|| lookup.user(headers)).await.cloned()
    }

    /// The session as already looked up in this request (`None`: not yet).
    pub fn known(&self) -> Option<Option<&SessionUser>> {
        self.0.get().map(Option::as_ref)
    }
}

/// Adds a `Set-Cookie` header to the response being built by Leptos.
pub fn set_cookie(value: HeaderValue) {
    if let Some(res) = leptos::prelude::use_context::<leptos_axum::ResponseOptions>() {
        res.append_header(SET_COOKIE, value);
    }
}

/// Stores a one-time value on the request's session under `slot` (e.g. `api_key`), for the
/// next page it renders. Slots are independent: one page may read several.
pub async fn set_flash(
    pool: &PgPool,
    config: &Config,
    headers: &HeaderMap,
    slot: &str,
    value: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    if let Some(token) = token_from_headers(config, headers) {
        sqlx::query("UPDATE sessions SET flash = coalesce(flash, '{}'::jsonb) || jsonb_build_object($2::text, $3::jsonb) WHERE token_hash = $1")
            .bind(token_hash(config.session_secret.expose(), &token))
            .bind(slot)
            .bind(value)
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// Reads and clears the session's one-time value in `slot`. Without one, nothing is locked or
/// written (only a session that holds the slot is locked, to take it exactly once).
pub async fn take_flash(
    pool: &PgPool,
    config: &Config,
    headers: &HeaderMap,
    slot: &str,
) -> Result<Option<serde_json::Value>, sqlx::Error> {
    let Some(token) = token_from_headers(config, headers) else { return Ok(None) };
    // The request's session, when it was already looked up without a flash: nothing to take
    // (a flash is for the next page rendered, never the request that set it).
    let known_without = leptos::prelude::use_context::<http::request::Parts>().is_some_and(|p| {
        p.extensions
            .get::<RequestSession>()
            .and_then(RequestSession::known)
            .is_some_and(|u| !u.is_some_and(|u| u.has_flash))
    });
    if known_without {
        return Ok(None);
    }
    let flash: Option<Option<serde_json::Value>> = sqlx::query_scalar(
        "UPDATE sessions s SET flash = nullif(old.flash - $2::text, '{}'::jsonb)
           FROM (SELECT token_hash, flash FROM sessions WHERE token_hash = $1 AND (flash -> $2::text) IS NOT NULL FOR UPDATE) old
          WHERE s.token_hash = old.token_hash RETURNING old.flash -> $2::text",
    )
    .bind(token_hash(config.session_secret.expose(), &token))
    .bind(slot)
    .fetch_optional(pool)
    .await?;
    Ok(flash.flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_session_cookie_among_others() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("theme=dark; tally_session=abc123; other=1"));
        assert_eq!(cookie_value(&h, COOKIE_NAME).as_deref(), Some("abc123"));
        let mut none = HeaderMap::new();
        none.append(COOKIE, HeaderValue::from_static("tally_sessionx=abc; x=tally_session"));
        assert_eq!(cookie_value(&none, COOKIE_NAME), None);
    }

    #[test]
    fn stored_hash_depends_on_the_secret() {
        assert_ne!(token_hash("secret-a", "t"), token_hash("secret-b", "t"));
        assert_eq!(token_hash("secret-a", "t"), token_hash("secret-a", "t"));
    }
}
