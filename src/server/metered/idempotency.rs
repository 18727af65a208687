//! Idempotency of the metered API: an `Idempotency-Key` is bound to its request.
//!
//! - The key is scoped to the API key that sent it, and bound to a SHA-256 of the request
//!   (method, path and the body's exact bytes).
//! - The same key with the same request replays the first answer exactly: status, body and
//!   headers, plus `Idempotent-Replayed: true`; nothing is spent again.
//! - The same key with a different request is refused with 422 `idempotency_key_reused`, and
//!   nothing is spent.
//! - Only an answer that spent credits is recorded, in the spend's own transaction. A refused
//!   request (402, 4xx, 429, 5xx) spent nothing, so its key stays free: a retry after a top-up
//!   can succeed.
//! - Answers are kept [`RETENTION_DAYS`]; after that the ledger still remembers the spend, and a
//!   request that reuses the key is refused as reused, never spent again.
//!
//! Client keys live in their own namespace: the ledger spends under
//! `api:<api key id>:<hex SHA-256 of the client key>` ([`ledger_key`]), so no client key can
//! ever equal, or take the shape of, a key the ledger writes for itself (`key#2`, `accrual:…`).

use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

/// How long a recorded answer is replayed.
pub const RETENTION_DAYS: i64 = 30;

/// SHA-256 of `METHOD\npath\nbody`.
pub fn request_hash(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(method.as_bytes());
    h.update(b"\n");
    h.update(path.as_bytes());
    h.update(b"\n");
    h.update(body);
    h.finalize().to_vec()
}

/// The ledger key a spend made with this client key uses.
pub fn ledger_key(api_key_id: Uuid, client_key: &str) -> String {
    format!("api:{api_key_id}:{}", hex::encode(Sha256::digest(client_key.as_bytes())))
}

/// An answer as it was sent, to be sent again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A keyed request's answer, recorded with its spend.
#[derive(Debug, Clone)]
pub struct Record {
    pub api_key_id: Uuid,
    pub client_key: String,
    pub hash: Vec<u8>,
    /// The endpoint's JSON, before `credits_spent` (see `spender::spent_answer`).
    pub answer: serde_json::Value,
}

/// What is known about a client key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prior {
    /// Never used (or used only by refused requests).
    Unused,
    /// Used by this very request: its answer.
    Replay(Answer),
    /// Used by a different request.
    Mismatch,
}

pub async fn lookup(
    conn: &mut PgConnection,
    api_key_id: Uuid,
    client_key: &str,
    hash: &[u8],
) -> Result<Prior, sqlx::Error> {
    let row: Option<(Vec<u8>, i16, serde_json::Value, Vec<u8>)> =
        sqlx::query_as("SELECT request_hash, status_code, headers, body FROM api_idempotency WHERE api_key_id = $1 AND client_key = $2")
            .bind(api_key_id)
            .bind(client_key)
            .fetch_optional(conn)
            .await?;
    Ok(match row {
        None => Prior::Unused,
        Some((stored, ..)) if stored != hash => Prior::Mismatch,
        Some((_, status, headers, body)) => {
            let headers = headers
                .as_array()
                .map(|pairs| {
                    pairs
                        .iter()
                        .filter_map(|p| Some((p[0].as_str()?.to_string(), p[1].as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            Prior::Replay(Answer { status: status as u16, headers, body })
        }
    })
}

/// Records the answers of requests that spent (one, or a batch's), in the spends' own
/// transaction, in one statement.
pub async fn record_many(conn: &mut PgConnection, answers: &[(&Record, Answer)]) -> Result<(), sqlx::Error> {
    if answers.is_empty() {
        return Ok(());
    }
    let headers =
        |a: &Answer| serde_json::Value::Array(a.headers.iter().map(|(k, v)| serde_json::json!([k, v])).collect());
    let ids: Vec<Uuid> = answers.iter().map(|(r, _)| r.api_key_id).collect();
    let keys: Vec<&str> = answers.iter().map(|(r, _)| r.client_key.as_str()).collect();
    let hashes: Vec<&[u8]> = answers.iter().map(|(r, _)| r.hash.as_slice()).collect();
    let statuses: Vec<i16> = answers.iter().map(|(_, a)| a.status as i16).collect();
    let header_lists: Vec<serde_json::Value> = answers.iter().map(|(_, a)| headers(a)).collect();
    let bodies: Vec<&[u8]> = answers.iter().map(|(_, a)| a.body.as_slice()).collect();
    sqlx::query(
        "INSERT INTO api_idempotency (api_key_id, client_key, request_hash, status_code, headers, body)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::bytea[], $4::smallint[], $5::jsonb[], $6::bytea[])",
    )
    .bind(&ids)
    .bind(&keys)
    .bind(&hashes)
    .bind(&statuses)
    .bind(&header_lists)
    .bind(&bodies)
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_keys_are_hashed_so_no_client_key_reaches_a_reserved_shape() {
        let id = Uuid::nil();
        let k = ledger_key(id, "k#2");
        assert!(!k.contains('#'), "{k}");
        assert_eq!(k.len(), "api:".len() + 36 + 1 + 64);
        assert_ne!(ledger_key(id, "k"), ledger_key(id, "k#2"));
        assert_ne!(ledger_key(id, "k"), ledger_key(Uuid::from_u128(1), "k"), "scoped to the API key");
    }

    #[test]
    fn the_request_hash_binds_method_path_and_exact_body() {
        let a = request_hash("POST", "/api/v1/text/stats", br#"{"text":"a"}"#);
        assert_eq!(a, request_hash("POST", "/api/v1/text/stats", br#"{"text":"a"}"#));
        assert_ne!(a, request_hash("POST", "/api/v1/text/stats", br#"{"text":"b"}"#));
        assert_ne!(a, request_hash("PUT", "/api/v1/text/stats", br#"{"text":"a"}"#));
        assert_ne!(a, request_hash("POST", "/api/v1/text/other", br#"{"text":"a"}"#));
    }
}
