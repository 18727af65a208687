//! `GET /dev/mailbox`: in local mode without `SMTP_URL`, the mail the app "sent", newest
//! first, so sign-up, verification and password reset work offline. It is served only in that
//! mode, and only with the stand-in's controls token (`Authorization: Bearer …` or
//! `?token=…`), because its mails carry one-time links. `?format=json` (or
//! `Accept: application/json`) answers JSON; `?to=address` filters.

use crate::server::state::AppState;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
pub struct MailboxQuery {
    token: Option<String>,
    format: Option<String>,
    to: Option<String>,
}

/// One mail in the dev mailbox.
#[derive(sqlx::FromRow)]
struct Mail {
    id: i64,
    to_address: String,
    from_address: String,
    subject: String,
    body_text: String,
    created_at: chrono::DateTime<chrono::Utc>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Makes the `http(s)://…` words of a text into links.
fn linkify(text: &str) -> String {
    text.split('\n')
        .map(|line| {
            line.split(' ')
                .map(|w| {
                    if w.starts_with("http://") || w.starts_with("https://") {
                        format!(r#"<a href="{0}">{0}</a>"#, esc(w))
                    } else {
                        esc(w)
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("<br>")
}

pub async fn mailbox(State(state): State<AppState>, headers: HeaderMap, Query(q): Query<MailboxQuery>) -> Response {
    let Some(expected) = state
        .config
        .polar
        .standin
        .as_ref()
        .filter(|_| state.mailer.uses_dev_mailbox())
        .map(|s| s.controls_token.expose().to_string())
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let given = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
        .or(q.token.clone())
        .unwrap_or_default();
    if !crate::server::util::constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        return (
            StatusCode::UNAUTHORIZED,
            "The dev mailbox needs the stand-in's controls token (printed at start-up).",
        )
            .into_response();
    }
    let rows: Vec<Mail> = match sqlx::query_as(
        "SELECT id, to_address, from_address, subject, body_text, created_at FROM dev_mailbox
          WHERE ($1::text IS NULL OR lower(to_address) = lower($1)) ORDER BY id DESC LIMIT 200",
    )
    .bind(&q.to)
    .fetch_all(&state.pool)
    .await
    {
        Ok(r) => r,
        Err(e) => return crate::server::util::internal_response(e),
    };
    let wants_json = q.format.as_deref() == Some("json")
        || headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("application/json"));
    if wants_json {
        let mails: Vec<_> = rows.iter().map(|m| json!({ "id": m.id, "to": m.to_address, "from": m.from_address, "subject": m.subject, "text": m.body_text, "created_at": m.created_at })).collect();
        return Json(json!({ "mails": mails })).into_response();
    }
    let items: String = if rows.is_empty() {
        "<p>No mail yet.</p>".into()
    } else {
        rows.iter()
            .map(|Mail { to_address: to, from_address: from, subject, body_text: text, created_at: at, .. }| {
                format!(
                    r#"<article><h2>{}</h2><p class="meta">To {} · from {} · {}</p><p>{}</p></article>"#,
                    esc(subject),
                    esc(to),
                    esc(from),
                    at.format("%Y-%m-%d %H:%M:%S UTC"),
                    linkify(text)
                )
            })
            .collect()
    };
    let mut res = Html(format!(
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>Dev mailbox · Tally</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#1d2433}}article{{border:1px solid #d9dee8;border-radius:8px;padding:1rem;margin:1rem 0}}h2{{margin:0;font-size:1.1rem}}.meta{{color:#56607a;font-size:.9rem;margin:.25rem 0 .75rem}}a{{color:#2445c8;word-break:break-all}}</style></head>
<body><main><h1>Dev mailbox</h1><p>Mail Tally sent in local mode (no <code>SMTP_URL</code>), newest first.</p>{items}</main></body></html>"#
    ))
    .into_response();
    res.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    res
}
