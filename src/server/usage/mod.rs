//! Usage billing: the ledger is the real-time gate, Polar's meters the invoicing mirror.
//!
//! Every `spend` entry writes a row to `usage_outbox` in the spend's own statement (a trigger,
//! `migrations/20261202000008_usage_outbox.sql`), so a spend that commits is mirrored and a
//! spend that rolls back is not. The shipper (`shipper`) sends due rows to Polar's
//! `POST /v1/events/ingest` as events named [`EVENT_NAME`] with `metadata.credits` = the
//! credits spent, for the customer whose `external_id` is the user id.
//!
//! Exactly once: an event's `external_id` is the ledger entry's idempotency key (unique in
//! the ledger, and shaped by the ledger alone: client keys are hashed into their own
//! namespace). Polar never inserts two events with one `external_id`, so a batch sent again
//! after a crash between sending and marking is counted as duplicates. Transient failures
//! (Polar down, 429, 5xx, a refused token) defer the batch and never park it; a batch
//! rejected as a whole (422) is halved until the event Polar refuses is alone, which is
//! parked as `failed` with Polar's message.
//!
//! Overage (credits past the balance, opt-in, `ledger::period`) is an `overage` ledger entry
//! and goes out as its own event, [`OVERAGE_EVENT_NAME`], also keyed by its entry.
//!
//! In Polar: a meter with filter `name eq credits.spent` and aggregation `sum` of
//! `metadata.credits` counts usage; one with `name eq credits.overage` counts overage, and a
//! plan's `metered_unit` price on that meter bills it at the cycle end (docs/usage-billing.md).

pub mod alerts;
pub mod panel;
pub mod reconcile;
pub mod settings;
pub mod shipper;

/// The name of the usage events Tally sends; a Polar meter filters on it.
pub const EVENT_NAME: &str = "credits.spent";

/// The name of the overage events: credits spent past the balance, billed at the cycle end.
pub const OVERAGE_EVENT_NAME: &str = "credits.overage";

/// The metadata key holding the credits an event counts (the meter sums it).
pub const UNITS_PROPERTY: &str = "credits";

/// Sent events are kept this long (a period and its invoice, and then some, for
/// reconciliation), then the janitor deletes them. Pending and parked ones are never deleted.
pub const RETENTION_DAYS: i64 = 100;

/// Polar accepts up to 1,000 events per ingestion request.
pub const BATCH: i64 = 1000;

/// Events waiting for Polar and the age of the oldest, for `/metrics`.
pub async fn backlog(pool: &sqlx::PgPool) -> Result<(i64, Option<f64>, i64), sqlx::Error> {
    // Each part reads only its own partial index, however many sent rows the table holds.
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM usage_outbox WHERE status = 'pending'),
                (SELECT extract(epoch FROM now() - min(occurred_at))::float8 FROM usage_outbox WHERE status = 'pending'),
                (SELECT count(*) FROM usage_outbox WHERE status = 'failed')",
    )
    .fetch_one(pool)
    .await
}
