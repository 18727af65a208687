//! Background tasks that must keep running (the webhook worker, the mail worker, the
//! janitor): each is restarted when it ends or panics, a second later, and reports a
//! heartbeat that `/readyz` checks, so a stuck or dead worker is seen from outside.

use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// When a task last said it was alive (unix milliseconds), and how often it was restarted.
#[derive(Clone, Default)]
pub struct Heartbeat {
    last_ms: Arc<AtomicI64>,
    restarts: Arc<AtomicU64>,
}

impl Heartbeat {
    pub fn beat(&self) {
        self.last_ms.store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
    }

    /// Time since the last beat; `None` before the first.
    pub fn age(&self) -> Option<Duration> {
        let last = self.last_ms.load(Ordering::Relaxed);
        (last > 0).then(|| Duration::from_millis((chrono::Utc::now().timestamp_millis() - last).max(0) as u64))
    }

    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }
}

/// Runs `task` for ever: whenever it returns or panics, logs it and starts it again.
pub fn spawn<F, Fut>(name: &'static str, heartbeat: Heartbeat, task: F)
where
    F: Fn(Heartbeat) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            heartbeat.beat();
            match tokio::spawn(task(heartbeat.clone())).await {
                Ok(()) => tracing::error!(task = name, "background task ended; restarting it"),
                Err(e) if e.is_panic() => tracing::error!(task = name, "background task panicked; restarting it"),
                Err(_) => return, // the runtime is shutting down
            }
            heartbeat.restarts.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_panics_is_started_again() {
        let hb = Heartbeat::default();
        let runs = Arc::new(AtomicU64::new(0));
        let r = runs.clone();
        spawn("test", hb.clone(), move |beat| {
            let r = r.clone();
            async move {
                beat.beat();
                if r.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("first run dies");
                }
                std::future::pending::<()>().await;
            }
        });
        for _ in 0..50 {
            if runs.load(Ordering::SeqCst) >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(runs.load(Ordering::SeqCst), 2, "restarted once after the panic");
        assert_eq!(hb.restarts(), 1);
        assert!(hb.age().unwrap() < Duration::from_secs(5));
    }
}
