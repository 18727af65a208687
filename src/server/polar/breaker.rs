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
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is in flight since then. A probe that never reports (its caller went away)
    /// does not hold the breaker for good: after `open_for` another probe may go.
    HalfOpen {
        since: Instant,
    },
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
        Breaker {
            state: Arc::new(Mutex::new(State::Closed { failures: 0 })),
            threshold: threshold.max(1),
            open_for,
            opened: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn permit(&self, now: Instant) -> Permit {
        let mut s = self.lock();
        match *s {
            State::Closed { .. } => Permit::Go,
            State::Open { until } if now >= until => {
                *s = State::HalfOpen { since: now };
                Permit::Go
            }
            State::HalfOpen { since } if now.duration_since(since) >= self.open_for => {
                *s = State::HalfOpen { since: now };
                Permit::Go
            }
            State::Open { .. } | State::HalfOpen { .. } => Permit::Refused,
        }
    }

    /// The outcome of a permitted call: `available` false when Polar could not be reached.
    pub fn record(&self, available: bool, now: Instant) {
        let mut s = self.lock();
        *s = match (*s, available) {
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 < self.threshold => {
                State::Closed { failures: failures + 1 }
            }
            (_, false) => {
                self.opened.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    open_for_secs = self.open_for.as_secs(),
                    "Polar circuit breaker opened: calls fail fast until a probe succeeds"
                );
                State::Open { until: now + self.open_for }
            }
        };
    }

    /// A permitted call ended without an outcome (its caller went away). Nothing is known of
    /// Polar, so a closed breaker stays as it is; an abandoned probe opens it again, for the
    /// next probe to decide.
    fn abandoned(&self, now: Instant) {
        let mut s = self.lock();
        if let State::HalfOpen { .. } = *s {
            *s = State::Open { until: now + self.open_for };
        }
    }

    /// Watches one permitted call: [`Outcome::report`] records how it went; dropped without a
    /// report (the caller went away mid-call), an abandoned probe opens the breaker again, so
    /// it can never be left half-open.
    pub fn watch(&self) -> Outcome<'_> {
        Outcome::new(self)
    }

    /// `closed`, `open` or `half_open` (for `/metrics` and `/readyz`).
    pub fn state_name(&self) -> &'static str {
        match *self.lock() {
            State::Closed { .. } => "closed",
            State::Open { .. } => "open",
            State::HalfOpen { .. } => "half_open",
        }
    }

    /// How many times it has opened since the process started.
    pub fn opened_total(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }
}

/// See [`Breaker::watch`].
pub struct Outcome<'a> {
    breaker: &'a Breaker,
    reported: bool,
}

impl<'a> Outcome<'a> {
    fn new(breaker: &'a Breaker) -> Self {
        Outcome { breaker, reported: false }
    }

    pub fn report(mut self, available: bool) {
        self.reported = true;
        self.breaker.record(available, Instant::now());
    }
}

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        if !self.reported {
            self.breaker.abandoned(Instant::now());
        }
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
    fn a_probe_that_never_reports_does_not_hold_the_breaker_half_open() {
        let b = Breaker::new(1, Duration::from_secs(10));
        let t0 = Instant::now();
        b.record(false, t0);
        assert_eq!(b.permit(t0 + Duration::from_secs(10)), Permit::Go, "the probe");
        // Its caller went away: no record. Others fail fast for a while, then may probe again.
        assert_eq!(b.permit(t0 + Duration::from_secs(15)), Permit::Refused);
        assert_eq!(b.permit(t0 + Duration::from_secs(21)), Permit::Go);
    }

    #[test]
    fn an_abandoned_probe_opens_the_breaker_again_and_an_abandoned_call_changes_nothing() {
        let b = Breaker::new(1, Duration::from_millis(0));
        drop(b.watch());
        assert_eq!(b.state_name(), "closed", "a closed breaker learns nothing from a dropped call");
        b.record(false, Instant::now());
        assert_eq!(b.permit(Instant::now()), Permit::Go);
        assert_eq!(b.state_name(), "half_open");
        drop(b.watch());
        assert_eq!(b.state_name(), "open");
        b.watch().report(true);
        assert_eq!(b.state_name(), "closed");
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
