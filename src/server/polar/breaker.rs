//! A circuit breaker in front of Polar. After [`THRESHOLD`] consecutive calls that found Polar
//! unavailable (no answer, 5xx, 429 after retries) it opens: calls fail at once, for
//! [`OPEN_FOR`], without waiting on a Polar that is down (and without spending its rate limit).
//! Then it lets one call through (half-open): success closes it, failure opens it again.
//! Answers that are Polar refusing something (4xx) mean Polar is up, and count as successes.
//! Shared by every clone of the client, so one instance has one breaker.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const THRESHOLD: u32 = 5;
pub const OPEN_FOR: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    /// One probe is in flight.
    HalfOpen,
}

/// What the breaker says of a call about to be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    Go,
    /// Open: fail fast.
    Refused,
}

#[derive(Clone)]
pub struct Breaker {
    state: Arc<Mutex<State>>,
    threshold: u32,
    open_for: Duration,
    opened: Arc<AtomicU64>,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker::new(THRESHOLD, OPEN_FOR)
    }
}

impl Breaker {
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Breaker { state: Arc::new(Mutex::new(State::Closed { failures: 0 })), threshold: threshold.max(1), open_for, opened: Arc::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn permit(&self, now: Instant) -> Permit {
        let mut s = self.lock();
        match *s {
            State::Closed { .. } => Permit::Go,
            State::Open { until } if now >= until => {
                *s = State::HalfOpen;
                Permit::Go
            }
            State::Open { .. } | State::HalfOpen => Permit::Refused,
        }
    }

    /// The outcome of a permitted call: `available` false when Polar could not be reached.
    pub fn record(&self, available: bool, now: Instant) {
        let mut s = self.lock();
        *s = match (*s, available) {
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 < self.threshold => State::Closed { failures: failures + 1 },
            (_, false) => {
                self.opened.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(open_for_secs = self.open_for.as_secs(), "Polar circuit breaker opened: calls fail fast until a probe succeeds");
                State::Open { until: now + self.open_for }
            }
        };
    }

    /// `closed`, `open` or `half_open` (for `/metrics` and `/readyz`).
    pub fn state_name(&self) -> &'static str {
        match *self.lock() {
            State::Closed { .. } => "closed",
            State::Open { .. } => "open",
            State::HalfOpen => "half_open",
        }
    }

    /// How many times it has opened since the process started.
    pub fn opened_total(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_fails_fast_then_probes_once() {
        let b = Breaker::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        for _ in 0..2 {
            assert_eq!(b.permit(t0), Permit::Go);
            b.record(false, t0);
        }
        assert_eq!(b.state_name(), "closed");
        b.record(false, t0);
        assert_eq!(b.state_name(), "open");
        assert_eq!(b.permit(t0 + Duration::from_secs(5)), Permit::Refused);
        // After the pause, one probe goes; others still fail fast while it is out.
        assert_eq!(b.permit(t0 + Duration::from_secs(11)), Permit::Go);
        assert_eq!(b.permit(t0 + Duration::from_secs(11)), Permit::Refused);
        b.record(false, t0 + Duration::from_secs(11));
        assert_eq!(b.state_name(), "open", "a failed probe opens it again");
        assert_eq!(b.permit(t0 + Duration::from_secs(22)), Permit::Go);
        b.record(true, t0 + Duration::from_secs(22));
        assert_eq!(b.state_name(), "closed");
        assert_eq!(b.opened_total(), 2);
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = Breaker::new(2, Duration::from_secs(10));
        let t = Instant::now();
        b.record(false, t);
        b.record(true, t);
        b.record(false, t);
        assert_eq!(b.state_name(), "closed");
    }
}
