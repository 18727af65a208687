//! The optional Redis layer of the Customer State cache, on when `REDIS_URL` is set.
//!
//! Reads go Redis → PostgreSQL (`polar_customers`) → Polar; whatever is found fresh below is
//! written back above. An entry lives in Redis for at most the cache's TTL, and is deleted
//! once a webhook that changes the customer has committed (so a change is seen at once, not
//! after the TTL), and after changes Tally makes itself. Redis is never required: an error or
//! an unreachable Redis is a cache miss (logged), and the request goes on to PostgreSQL.
//! Reads that must be fresh (the success page, plan changes) skip every cache.

use crate::server::config::Secret;
use chrono::{DateTime, Utc};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;
use uuid::Uuid;

/// Reads of one customer's state that share one Polar call: while one read asks Polar, the
/// others for the same customer wait for it and take its answer (per instance; across
/// instances the stored state does the same within its TTL).
#[derive(Clone, Default)]
pub struct SingleFlight(
    Arc<std::sync::Mutex<std::collections::HashMap<Uuid, std::sync::Weak<tokio::sync::Mutex<()>>>>>,
);

impl SingleFlight {
    /// The turn of `user`'s reads: held while one of them asks Polar.
    pub fn slot(&self, user: Uuid) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = map.get(&user).and_then(std::sync::Weak::upgrade) {
            return slot;
        }
        let slot = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(user, Arc::downgrade(&slot));
        if map.len() > 4096 {
            map.retain(|_, w| w.strong_count() > 0);
        }
        slot
    }
}

/// One cached Customer State: Polar's JSON (`None`: no customer yet) and when it was read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedState {
    pub state: Option<Value>,
    pub fetched_at: DateTime<Utc>,
}

#[derive(Clone)]
pub struct RedisCache {
    client: redis::Client,
    conn: Arc<OnceCell<ConnectionManager>>,
}

impl RedisCache {
    pub fn new(url: &Secret) -> Result<RedisCache, redis::RedisError> {
        Ok(RedisCache { client: redis::Client::open(url.expose())?, conn: Arc::new(OnceCell::new()) })
    }

    fn key(user: Uuid) -> String {
        format!("tally:customer_state:{user}")
    }

    /// The shared connection, made on first use (so the app starts while Redis is down) and
    /// re-established by the manager after a disconnect.
    async fn conn(&self) -> Result<ConnectionManager, redis::RedisError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_millis(500))
            .set_response_timeout(Duration::from_millis(500))
            .set_number_of_retries(1);
        self.conn.get_or_try_init(|| ConnectionManager::new_with_config(self.client.clone(), config)).await.cloned()
    }

    pub async fn get(&self, user: Uuid) -> Option<CachedState> {
        let got: Result<Option<String>, _> = async { self.conn().await?.get(Self::key(user)).await }.await;
        match got {
            Ok(v) => v.and_then(|s| serde_json::from_str(&s).ok()),
            Err(e) => {
                tracing::warn!(error = %e, "Redis read failed; using PostgreSQL");
                None
            }
        }
    }

    /// Stores `entry` for `ttl` (nothing when `ttl` is under a second).
    pub async fn put(&self, user: Uuid, entry: &CachedState, ttl: chrono::Duration) {
        let secs = ttl.num_seconds();
        if secs < 1 {
            return;
        }
        let value = serde_json::to_string(entry).expect("serializable");
        let done: Result<(), _> = async { self.conn().await?.set_ex(Self::key(user), value, secs as u64).await }.await;
        if let Err(e) = done {
            tracing::warn!(error = %e, "Redis write failed");
        }
    }

    /// Drops the user's entry (after a committed change).
    pub async fn forget(&self, user: Uuid) {
        let done: Result<(), _> = async { self.conn().await?.del(Self::key(user)).await }.await;
        if let Err(e) = done {
            tracing::warn!(error = %e, %user, "Redis delete failed; the entry expires with its TTL");
        }
    }
}
