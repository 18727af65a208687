//! Webhook deliveries as Polar makes them (docs/polar-contract.md §3.1): `POST` with `user-agent: polar.sh
//! webhooks`, Standard Webhooks headers, the same `webhook-id` on every retry of an event and
//! a fresh `webhook-timestamp` per attempt, signed under the endpoint's key scheme; any 2xx
//! within 10 s is success, everything else (redirects included) a failure retried with doubling
//! backoff and jitter, up to `max_attempts`. A batch goes out in order, one event after another.

use super::ops::Event;
use super::world::ts;
use crate::server::polar::webhook_signature::{self, KeyScheme};
use rand::Rng;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A registered endpoint. `standard: false` is Polar's legacy scheme (HMAC key = the secret's
/// UTF-8 bytes); `true` the Standard Webhooks scheme (key = base64-decoded part after `whsec_`).
#[derive(Debug, Clone)]
pub struct WebhookEndpoint {
    pub url: String,
    pub secret: String,
    pub standard: bool,
}

/// One delivery attempt, as the controls report it.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryRecord {
    pub webhook_id: String,
    pub event_type: String,
    pub url: String,
    pub attempt: u32,
    /// HTTP status, when there was a response.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub at: String,
}

struct Message {
    webhook_id: String,
    event_type: String,
    body: Arc<String>,
}

#[derive(Clone)]
pub struct Sender {
    endpoints: Arc<Mutex<Vec<WebhookEndpoint>>>,
    log: Arc<Mutex<Vec<DeliveryRecord>>>,
    client: reqwest::Client,
    retry_base: Duration,
    max_attempts: u32,
}

impl Sender {
    pub fn new(endpoints: Vec<WebhookEndpoint>, retry_base: Duration, max_attempts: u32) -> Sender {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("polar.sh webhooks")
            .build()
            .expect("HTTP client");
        Sender {
            endpoints: Arc::new(Mutex::new(endpoints)),
            log: Default::default(),
            client,
            retry_base,
            max_attempts: max_attempts.max(1),
        }
    }

    pub fn add_endpoint(&self, e: WebhookEndpoint) {
        self.endpoints.lock().unwrap_or_else(|p| p.into_inner()).push(e);
    }

    pub fn log(&self) -> Vec<DeliveryRecord> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sends `events` to every endpoint, each event under its own `webhook-id` per endpoint.
    /// `duplicate`: every event is delivered that many extra times (same id); `shuffle`: the
    /// batch goes out in random order.
    pub fn send_batch(&self, events: Vec<Event>, duplicate: u32, shuffle: bool) {
        let endpoints = self.endpoints.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for endpoint in endpoints {
            let mut messages: Vec<Message> = vec![];
            for e in &events {
                let body = serde_json::json!({ "type": e.event_type, "timestamp": ts(e.timestamp), "data": e.data, "api_version": "2026-04" });
                let m = Message {
                    webhook_id: uuid::Uuid::new_v4().to_string(),
                    event_type: e.event_type.clone(),
                    body: Arc::new(body.to_string()),
                };
                for _ in 0..duplicate {
                    messages.push(Message {
                        webhook_id: m.webhook_id.clone(),
                        event_type: m.event_type.clone(),
                        body: m.body.clone(),
                    });
                }
                messages.push(m);
            }
            if shuffle {
                use rand::seq::SliceRandom;
                messages.shuffle(&mut rand::thread_rng());
            }
            let this = self.clone();
            tokio::spawn(async move {
                for m in messages {
                    if !this.attempt(&endpoint, &m, 1).await {
                        let this = this.clone();
                        let endpoint = endpoint.clone();
                        tokio::spawn(async move { this.retry(endpoint, m).await });
                    }
                }
            });
        }
    }

    async fn retry(&self, endpoint: WebhookEndpoint, m: Message) {
        for attempt in 2..=self.max_attempts {
            let factor = 2u32.saturating_pow(attempt - 2);
            let jitter: f64 = rand::thread_rng().gen_range(1.0..2.0);
            tokio::time::sleep(
                self.retry_base.saturating_mul(factor).mul_f64(jitter).min(Duration::from_secs(20 * 60)),
            )
            .await;
            if self.attempt(&endpoint, &m, attempt).await {
                return;
            }
        }
        tracing::warn!(webhook_id = %m.webhook_id, url = %endpoint.url, "webhook delivery failed for good");
    }

    /// One attempt; true on a 2xx.
    async fn attempt(&self, endpoint: &WebhookEndpoint, m: &Message, attempt: u32) -> bool {
        let now = chrono::Utc::now();
        let timestamp = now.timestamp();
        let scheme = if endpoint.standard { KeyScheme::Standard } else { KeyScheme::Legacy };
        let Some(signature) =
            webhook_signature::sign(&endpoint.secret, scheme, &m.webhook_id, timestamp, m.body.as_bytes())
        else {
            self.record(
                m,
                endpoint,
                attempt,
                None,
                Some("the endpoint secret has no standard form (expected whsec_ + base64)".into()),
                now,
            );
            return false;
        };
        let result = self
            .client
            .post(&endpoint.url)
            .header("content-type", "application/json")
            .header("webhook-id", &m.webhook_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(m.body.as_str().to_string())
            .send()
            .await;
        match result {
            Ok(resp) => {
                let status = resp.status();
                self.record(m, endpoint, attempt, Some(status.as_u16()), None, now);
                status.is_success()
            }
            Err(e) => {
                let what =
                    if e.is_timeout() { "timed out after 10 s".to_string() } else { format!("could not connect: {e}") };
                self.record(m, endpoint, attempt, None, Some(what), now);
                false
            }
        }
    }

    fn record(
        &self,
        m: &Message,
        endpoint: &WebhookEndpoint,
        attempt: u32,
        status: Option<u16>,
        error: Option<String>,
        at: chrono::DateTime<chrono::Utc>,
    ) {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).push(DeliveryRecord {
            webhook_id: m.webhook_id.clone(),
            event_type: m.event_type.clone(),
            url: endpoint.url.clone(),
            attempt,
            status,
            error,
            at: ts(at),
        });
    }
}
