//! The first of the two levels of retry: inside one delivery, an action
//! that fails transiently (Docker unreachable, a 5xx, a timeout) is tried
//! again after an exponential, jittered delay, bounded in tries and in total
//! waiting. What still fails goes back to JetStream with a delay of its own
//! (the second level, in [`crate::consumer`]). Every action converges when
//! run again, so retrying a whole action is as safe as retrying one call.
//!
//! `backon` rather than `backoff`: the latter is unmaintained
//! (RUSTSEC-2025-0012); backon is maintained, async-first, and its builder
//! bounds both the number of tries and their total delay.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use vsfleet_contract::settings::WorkerSettings;

use crate::error::OpError;

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Tries in all, the first included.
    pub attempts: usize,
    pub max_total: Duration,
    pub first_delay: Duration,
}

impl Policy {
    pub fn from_settings(settings: &WorkerSettings) -> Self {
        Self {
            attempts: settings.retry_attempts.max(1),
            max_total: Duration::from_millis(settings.retry_max_ms),
            first_delay: Duration::from_millis(200),
        }
    }

    /// Runs `action` until it succeeds, fails permanently, or the policy is
    /// spent; `what` (the job's action) labels the retries counted.
    pub async fn run<T, F, Fut>(&self, what: &str, action: F) -> Result<T, OpError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, OpError>>,
    {
        let backoff = ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(self.first_delay)
            .with_max_delay(self.max_total.max(self.first_delay))
            .with_max_times(self.attempts - 1)
            .with_total_delay(Some(self.max_total));
        action
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|e: &OpError| !e.is_permanent())
            .notify(|error: &OpError, after: Duration| {
                tracing::warn!(error = format!("{error:#}"), ?after, "transient failure; trying again");
                crate::metrics::get().retries.with_label_values(&[what]).inc();
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn policy(attempts: usize) -> Policy {
        Policy { attempts, max_total: Duration::from_secs(5), first_delay: Duration::from_millis(1) }
    }

    fn transient() -> OpError {
        OpError::Docker(bollard::errors::Error::DockerResponseServerError { status_code: 500, message: "x".into() })
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_success() {
        let calls = AtomicUsize::new(0);
        let out = policy(4)
            .run("test", || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 { Err(transient()) } else { Ok("done") }
            })
            .await;
        assert_eq!(out.unwrap(), "done");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn tries_are_bounded() {
        let calls = AtomicUsize::new(0);
        let out: Result<(), _> = policy(3)
            .run("test", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(transient())
            })
            .await;
        assert!(out.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn total_waiting_is_bounded() {
        let calls = AtomicUsize::new(0);
        let slow =
            Policy { attempts: 100, max_total: Duration::from_millis(50), first_delay: Duration::from_millis(20) };
        let started = std::time::Instant::now();
        let out: Result<(), _> = slow
            .run("test", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(transient())
            })
            .await;
        assert!(out.is_err());
        assert!(calls.load(Ordering::SeqCst) < 10, "{} tries", calls.load(Ordering::SeqCst));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn permanent_failures_are_not_retried() {
        let calls = AtomicUsize::new(0);
        let out: Result<(), _> = policy(5)
            .run("test", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(OpError::Refused("no".into()))
            })
            .await;
        assert!(out.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
