//! The api's metrics, served at `GET /metrics` (Prometheus' text format):
//! counters and histograms recorded where things happen, and gauges read
//! at each scrape (hosts alive, jobs waiting per host, dead letters).

use std::sync::LazyLock;

use prometheus::{HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use vsfleet_contract::metrics::{counter, histogram};

pub struct Metrics {
    pub registry: Registry,
    /// HTTP requests by route (the pattern, not the path), method and status.
    pub requests: IntCounterVec,
    pub request_seconds: HistogramVec,
    /// Jobs whose outcome the api recorded, by action and outcome.
    pub jobs: IntCounterVec,
    /// From a job's acceptance to its recorded outcome.
    pub job_seconds: HistogramVec,
    /// Messages the api's checks refused, by kind.
    pub rejected: IntCounterVec,
    /// Servers brought in line with their host, by source (`sync`, `docker`).
    pub drift: IntCounterVec,
    /// Read at each scrape.
    pub hosts_alive: IntGauge,
    pub jobs_waiting: IntGaugeVec,
    pub dead_letters: IntGauge,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let registry = Registry::new();
    let gauge = |name: &str, help: &str| {
        let gauge = IntGauge::new(name, help).expect("a valid metric");
        registry.register(Box::new(gauge.clone())).expect("each metric is registered once");
        gauge
    };
    let jobs_waiting =
        IntGaugeVec::new(Opts::new("vsfleet_api_jobs_waiting", "Jobs accepted and not finished, by host"), &["host"])
            .expect("a valid metric");
    registry.register(Box::new(jobs_waiting.clone())).expect("each metric is registered once");
    Metrics {
        requests: counter(
            &registry,
            "vsfleet_api_http_requests_total",
            "HTTP requests, by route, method and status",
            &["route", "method", "status"],
        ),
        request_seconds: histogram(
            &registry,
            "vsfleet_api_http_request_duration_seconds",
            "HTTP request latency, by route, method and status",
            &["route", "method", "status"],
        ),
        jobs: counter(
            &registry,
            "vsfleet_api_jobs_total",
            "Jobs finished, by action and outcome",
            &["action", "outcome"],
        ),
        job_seconds: histogram(
            &registry,
            "vsfleet_api_job_duration_seconds",
            "Time from a job's acceptance to its outcome, by action and outcome",
            &["action", "outcome"],
        ),
        rejected: counter(
            &registry,
            "vsfleet_api_rejected_messages_total",
            "NATS messages the api's checks refused, by kind",
            &["kind"],
        ),
        drift: counter(
            &registry,
            "vsfleet_api_drift_total",
            "Servers brought in line with what their host shows, by source",
            &["source"],
        ),
        hosts_alive: gauge("vsfleet_api_hosts_alive", "Worker hosts with a recent heartbeat"),
        dead_letters: gauge("vsfleet_api_dead_letters", "Messages in the dead-letter stream"),
        jobs_waiting,
        registry,
    }
});

pub fn get() -> &'static Metrics {
    &METRICS
}
