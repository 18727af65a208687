//! Account mail (verification, password reset, password changed, usage alerts) through an
//! outbox: [`enqueue`] writes the mail in the caller's transaction, so it exists exactly when
//! what it announces committed; a worker ([`run`]) sends due mail, claiming rows with
//! `FOR UPDATE SKIP LOCKED` like the webhook inbox (any number of instances), retrying with
//! doubling backoff (2 s … 1 h) and parking a mail as `failed` after [`MAX_ATTEMPTS`]. A sent
//! mail's body is erased at once: it may carry a one-time link.
//!
//! Transport: SMTP through lettre when `SMTP_URL` is set (`smtps://user:pass@host:465` for
//! TLS, `smtp://user:pass@host:587?tls=required` for STARTTLS, plain `smtp://host:25` only for
//! a local relay); in local mode without it, the dev mailbox ([`dev_mailbox`]).

pub mod dev_mailbox;
pub mod templates;

use crate::server::config::Config;
use chrono::{DateTime, Duration, Utc};
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sqlx::{PgConnection, PgPool};
use std::sync::Arc;
use tokio::sync::Notify;
use uuid::Uuid;

/// Attempts before a mail is parked as `failed`.
pub const MAX_ATTEMPTS: i32 = 10;

/// One mail to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// What it is (`verify_email`, `reset_password`, …), for logs and tests.
    pub kind: &'static str,
    pub to: String,
    pub subject: String,
    pub text: String,
}

/// A mail as an operator sees it: never its body (it may carry a one-time link).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SentMail {
    pub kind: String,
    pub subject: String,
    /// `pending`, `sent` or `failed`.
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub sent_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The newest `limit` mails to `user`, newest first.
pub async fn of_customer(pool: &sqlx::PgPool, user: Uuid, limit: i64) -> Result<Vec<SentMail>, sqlx::Error> {
    sqlx::query_as(
        "SELECT kind, subject, status, attempts, last_error, created_at, sent_at FROM outgoing_mail
          WHERE user_id = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(user)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Queues `mail` in the caller's transaction.
pub async fn enqueue(conn: &mut PgConnection, user: Option<Uuid>, mail: &Mail) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("INSERT INTO outgoing_mail (user_id, kind, to_address, subject, body_text) VALUES ($1, $2, $3, $4, $5) RETURNING id")
        .bind(user)
        .bind(mail.kind)
        .bind(&mail.to)
        .bind(&mail.subject)
        .bind(&mail.text)
        .fetch_one(conn)
        .await
}

#[derive(Clone)]
enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    DevMailbox,
}

/// Sends what the outbox holds. Cheap to clone.
#[derive(Clone)]
pub struct Mailer {
    transport: Transport,
    from: Mailbox,
    wakeup: Arc<Notify>,
}

impl Mailer {
    pub fn from_config(config: &Config) -> Result<Mailer, String> {
        let from: Mailbox = config.mail_from.parse().map_err(|e| format!("MAIL_FROM: {e}"))?;
        let transport = match &config.smtp_url {
            Some(url) => Transport::Smtp(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
                    .map_err(|e| format!("SMTP_URL: {e}"))?
                    .timeout(Some(std::time::Duration::from_secs(15)))
                    .build(),
            ),
            None => Transport::DevMailbox,
        };
        Ok(Mailer { transport, from, wakeup: Arc::default() })
    }

    /// A mailer that delivers to the dev mailbox, from `from` (benchmarks and tools).
    pub fn dev_mailbox(from: &str) -> Result<Mailer, String> {
        let from: Mailbox = from.parse().map_err(|e| format!("from: {e}"))?;
        Ok(Mailer { transport: Transport::DevMailbox, from, wakeup: Arc::default() })
    }

    /// Whether mail goes to the dev mailbox (local mode without `SMTP_URL`).
    pub fn uses_dev_mailbox(&self) -> bool {
        matches!(self.transport, Transport::DevMailbox)
    }

    /// Tells the worker a mail is waiting (after the enqueuing transaction committed).
    pub fn wake(&self) {
        self.wakeup.notify_one();
    }

    async fn deliver(&self, pool: &PgPool, to: &str, subject: &str, text: &str) -> Result<(), String> {
        match &self.transport {
            Transport::DevMailbox => {
                sqlx::query(
                    "INSERT INTO dev_mailbox (to_address, from_address, subject, body_text) VALUES ($1, $2, $3, $4)",
                )
                .bind(to)
                .bind(self.from.to_string())
                .bind(subject)
                .bind(text)
                .execute(pool)
                .await
                .map_err(|e| e.to_string())?;
                Ok(())
            }
            Transport::Smtp(smtp) => {
                let to: Mailbox = to.parse().map_err(|e| format!("recipient: {e}"))?;
                // 7-bit when the text allows it (ASCII, short lines: ours are), so a link is never
                // broken across quoted-printable soft line breaks; else lettre chooses.
                let body = Body::new_with_encoding(text.to_string(), ContentTransferEncoding::SevenBit)
                    .unwrap_or_else(|_| Body::new(text.to_string()));
                let message = Message::builder()
                    .from(self.from.clone())
                    .to(to)
                    .subject(subject)
                    .header(ContentType::TEXT_PLAIN)
                    .body(body)
                    .map_err(|e| e.to_string())?;
                smtp.send(message).await.map(|_| ()).map_err(|e| e.to_string())
            }
        }
    }
}

/// Delay before attempt `attempts + 1`: 2, 4, 8 … seconds, at most an hour.
pub fn backoff(attempts: i32) -> Duration {
    Duration::seconds(2i64.saturating_pow(attempts.clamp(1, 30) as u32).min(3600))
}

/// The oldest mail that is due, as the sender claims it.
#[derive(sqlx::FromRow)]
struct DueMail {
    id: i64,
    to_address: String,
    subject: String,
    body_text: Option<String>,
    attempts: i32,
    kind: String,
}

/// Sends one due mail, if any; whether there was one. Account mail (verification, reset,
/// changes) goes before usage alerts, whenever they were queued. One mail per transaction: a row is
/// locked only while its own mail is sent, and a crash between sending and committing sends
/// at most that one again.
pub async fn send_due(pool: &PgPool, mailer: &Mailer, now: DateTime<Utc>) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let due: Option<DueMail> = sqlx::query_as(
        "SELECT id, to_address, subject, body_text, attempts, kind FROM outgoing_mail
          WHERE status = 'pending' AND next_attempt_at <= $1 ORDER BY priority, id LIMIT 1 FOR UPDATE SKIP LOCKED",
    )
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(DueMail { id, to_address: to, subject, body_text: body, attempts, kind }) = due else { return Ok(false) };
    match mailer.deliver(pool, &to, &subject, body.as_deref().unwrap_or_default()).await {
        Ok(()) => {
            sqlx::query("UPDATE outgoing_mail SET status = 'sent', sent_at = $2, body_text = NULL, attempts = attempts + 1, last_error = NULL WHERE id = $1")
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tracing::info!(mail_id = id, kind, "mail sent");
        }
        Err(e) => {
            let attempts = attempts + 1;
            let parked = attempts >= MAX_ATTEMPTS;
            // A parked mail keeps no body: its one-time link must not outlive it.
            sqlx::query(
                "UPDATE outgoing_mail SET attempts = $2, last_error = $3, status = $4, next_attempt_at = $5,
                        body_text = CASE WHEN $4 = 'failed' THEN NULL ELSE body_text END WHERE id = $1",
            )
            .bind(id)
            .bind(attempts)
            .bind(&e)
            .bind(if parked { "failed" } else { "pending" })
            .bind(now + backoff(attempts))
            .execute(&mut *tx)
            .await?;
            if parked {
                tracing::error!(mail_id = id, kind, attempts, error = %e, "mail parked as failed");
            } else {
                tracing::warn!(mail_id = id, kind, attempts, error = %e, "mail not sent; will retry");
            }
        }
    }
    tx.commit().await?;
    Ok(true)
}

/// Runs forever: sends due mail, then waits for a wake-up or a second.
pub async fn run(pool: PgPool, mailer: Mailer, heartbeat: crate::server::supervisor::Heartbeat) {
    loop {
        heartbeat.beat();
        loop {
            match send_due(&pool, &mailer, Utc::now()).await {
                Ok(false) => break,
                Ok(true) => {
                    heartbeat.beat();
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "mail worker: database error");
                    break;
                }
            }
        }
        tokio::select! {
            _ = mailer.wakeup.notified() => {}
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
    }
}
