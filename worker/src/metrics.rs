//! The worker's metrics (`GET /metrics` on `worker.metrics_listen`): one
//! registry for the process, apart from the api's and the scheduler's.

use std::sync::LazyLock;

use prometheus::{HistogramVec, IntCounterVec, Registry};
use vsfleet_contract::metrics::{counter, histogram};

pub struct Metrics {
    pub registry: Registry,
    /// Jobs run to an outcome here: `succeeded`, `failed`, or `retried`
    /// (handed back after a transient failure, for a later delivery).
    pub jobs: IntCounterVec,
    pub job_seconds: HistogramVec,
    /// Tries after a transient failure within one delivery.
    pub retries: IntCounterVec,
    /// Messages copied to the dead letters, by action (`unknown` when unreadable).
    pub dead_letters: IntCounterVec,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let registry = Registry::new();
    Metrics {
        jobs: counter(
            &registry,
            "vsfleet_worker_jobs_total",
            "Jobs run, by action and outcome",
            &["action", "outcome"],
        ),
        job_seconds: histogram(
            &registry,
            "vsfleet_worker_job_duration_seconds",
            "Time from a job's start on this host to its outcome",
            &["action", "outcome"],
        ),
        retries: counter(&registry, "vsfleet_worker_retries_total", "Tries after a transient failure", &["action"]),
        dead_letters: counter(
            &registry,
            "vsfleet_worker_dead_letters_total",
            "Jobs copied to the dead-letter stream",
            &["action"],
        ),
        registry,
    }
});

pub fn get() -> &'static Metrics {
    &METRICS
}
