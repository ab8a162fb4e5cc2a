//! Prometheus metrics: each service keeps its own registry (so a test that
//! runs several services in one process reads each one's alone) and serves
//! it as text at `GET /metrics` — the api on its own listener, the worker
//! and the scheduler on `metrics_listen`.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{Encoder as _, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};

/// Buckets for jobs and requests, in seconds: from a fast request to a
/// slow create.
pub const SECONDS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// A counter with `labels`, registered in `registry`.
pub fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let counter = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric");
    registry.register(Box::new(counter.clone())).expect("each metric is registered once");
    counter
}

/// A histogram in seconds with `labels`, registered in `registry`.
pub fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let histogram =
        HistogramVec::new(HistogramOpts::new(name, help).buckets(SECONDS.to_vec()), labels).expect("a valid metric");
    registry.register(Box::new(histogram.clone())).expect("each metric is registered once");
    histogram
}

/// The registry in Prometheus' text format.
pub fn render(registry: &Registry) -> Response {
    let mut body = Vec::new();
    match TextEncoder::new().encode(&registry.gather(), &mut body) {
        Ok(()) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

/// `GET /metrics` of `registry`, for the worker's and the scheduler's
/// `metrics_listen` ([`crate::health::Listeners`]).
pub fn router(registry: Registry) -> Router {
    Router::new()
        .route("/metrics", get(|State(registry): State<Registry>| async move { render(&registry) }))
        .with_state(registry)
}
