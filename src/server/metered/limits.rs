//! Limits of the metered API, per instance: requests per API key per minute, and calls of one
//! account in flight at once (so one account cannot hold every database connection).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A fixed-window limit per API key, per instance (so N instances allow up to N× the limit).
#[derive(Clone)]
pub struct RateLimiter {
    per_minute: u32,
    windows: Arc<Mutex<HashMap<Uuid, (Instant, u32)>>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        RateLimiter { per_minute, windows: Arc::new(Mutex::new(HashMap::new())) }
    }

    /// `Ok` to proceed, or `Err(seconds to wait)`.
    pub fn check(&self, key: Uuid, now: Instant) -> Result<(), u64> {
        let mut w = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if w.len() > 100_000 {
            w.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(60));
        }
        let entry = w.entry(key).or_insert((now, 0));
        if now.duration_since(entry.0) >= Duration::from_secs(60) {
            *entry = (now, 0);
        }
        if entry.1 >= self.per_minute {
            let wait = 60u64.saturating_sub(now.duration_since(entry.0).as_secs()).max(1);
            return Err(wait);
        }
        entry.1 += 1;
        Ok(())
    }
}

/// At most `max` calls of one account at once, per instance. A call holds its [`Slot`] until
/// it has answered.
#[derive(Clone)]
pub struct InFlight {
    max: u32,
    counts: Arc<Mutex<HashMap<Uuid, u32>>>,
}

/// A place taken by one call; freed when dropped.
pub struct Slot {
    user: Uuid,
    counts: Arc<Mutex<HashMap<Uuid, u32>>>,
}

impl InFlight {
    pub fn new(max: u32) -> Self {
        InFlight { max: max.max(1), counts: Arc::default() }
    }

    pub fn max(&self) -> u32 {
        self.max
    }

    /// A slot for `user`, or `None` when the account already has `max` calls in flight.
    pub fn enter(&self, user: Uuid) -> Option<Slot> {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = c.entry(user).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot { user, counts: self.counts.clone() })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = c.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                c.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_allows_the_limit_then_says_how_long_to_wait() {
        let l = RateLimiter::new(2);
        let k = Uuid::new_v4();
        let t0 = Instant::now();
        assert!(l.check(k, t0).is_ok());
        assert!(l.check(k, t0).is_ok());
        let wait = l.check(k, t0 + Duration::from_secs(20)).unwrap_err();
        assert_eq!(wait, 40);
        assert!(l.check(Uuid::new_v4(), t0).is_ok(), "limits are per key");
        assert!(l.check(k, t0 + Duration::from_secs(61)).is_ok(), "a new window starts");
    }

    #[test]
    fn an_account_holds_at_most_max_slots_and_gets_them_back() {
        let f = InFlight::new(2);
        let u = Uuid::new_v4();
        let a = f.enter(u).unwrap();
        let _b = f.enter(u).unwrap();
        assert!(f.enter(u).is_none());
        assert!(f.enter(Uuid::new_v4()).is_some(), "per account");
        drop(a);
        assert!(f.enter(u).is_some(), "a finished call frees its slot");
    }
}
