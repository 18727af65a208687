//! Polar webhooks: a receiver that verifies, stores and acknowledges in milliseconds, and a
//! worker that processes the stored events idempotently in the background.
//!
//! Failure policy (also in docs/webhooks.md):
//! - bad or missing signature, stale timestamp: 401 (403 for a signature that does not match),
//!   nothing stored;
//! - body over the size limit: 413, nothing stored;
//! - verified but not JSON (or without a `type`): stored as `failed` with the raw body, and
//!   acknowledged with 202, because Polar would only retry the same bytes and, after ten
//!   failures, disable the endpoint; it is parked for a human;
//! - verified, known or unknown type: stored and acknowledged with 202; a duplicate
//!   `webhook-id` is acknowledged and changes nothing;
//! - handler errors never reach Polar: the worker retries with backoff and parks the event as
//!   `failed` with its error after `MAX_ATTEMPTS`.

pub mod deliveries;
pub mod events;
pub mod handlers;
pub mod inbox;
pub mod receiver;
pub mod worker;
