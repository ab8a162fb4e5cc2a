//! `GET /metrics` and the middleware that times every routed request.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use crate::metrics;

/// Serves the request in a span with its trace id: the caller's
/// `traceparent`, if it sent a valid one, else a new one. The jobs it
/// publishes carry it (`vsfleet_contract::trace`), so the worker's lines
/// for them share it.
/// The span also names the request's `x-request-id` (the caller's, or one
/// made for it by the layer outside this one; it is sent back).
pub async fn trace(request: Request, next: Next) -> Response {
    use tracing::Instrument as _;
    use vsfleet_contract::trace::{CURRENT, HEADER, TraceId};
    let given = request.headers().get(HEADER).and_then(|v| v.to_str().ok()).and_then(TraceId::parse);
    let id = given.unwrap_or_else(TraceId::random);
    let request_id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let span = tracing::info_span!(
        "request",
        trace_id = %id,
        request_id,
        method = %request.method(),
        path = request.uri().path()
    );
    CURRENT.scope(id, next.run(request).instrument(span)).await
}

/// The request id header, set when the caller sent none and echoed back.
pub const REQUEST_ID: &str = "x-request-id";

/// Counts and times a request under its route's pattern (`/v1/servers/{id}`),
/// so the labels stay few whatever the ids.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status();
    let labels = [route.as_str(), method.as_str(), status.as_str()];
    let m = metrics::get();
    m.requests.with_label_values(&labels).inc();
    m.request_seconds.with_label_values(&labels).observe(started.elapsed().as_secs_f64());
    response
}

/// The registry, with the gauges read now. Unauthenticated, like the
/// probes: it names hosts and counts, never a tenant's data.
#[utoipa::path(get, path = "/metrics", tag = "health", security(()),
    responses((status = 200, body = String, content_type = "text/plain; version=0.0.4")))]
pub async fn scrape(State(state): State<AppState>) -> Response {
    let m = metrics::get();
    let settings = &state.settings;
    if let Some(alive) = state.lifecycle.registry.alive_known(3 * settings.worker.heartbeat_secs as i64) {
        m.hosts_alive.set(alive.len() as i64);
    }
    match state.db.jobs_in_flight().await {
        Ok(jobs) => {
            let mut per_host: HashMap<String, i64> = HashMap::new();
            for job in jobs {
                *per_host.entry(job.host).or_default() += 1;
            }
            m.jobs_waiting.reset();
            for (host, n) in per_host {
                m.jobs_waiting.with_label_values(&[host.as_str()]).set(n);
            }
        }
        Err(error) => tracing::warn!(%error, "metrics: cannot count the jobs in flight"),
    }
    let js = async_nats::jetstream::new(state.lifecycle.nats.clone());
    let dead = async {
        let mut stream = js.get_stream(settings.subjects().dead_stream()).await.ok()?;
        stream.info().await.ok().map(|info| info.state.messages)
    };
    match tokio::time::timeout(Duration::from_secs(2), dead).await {
        Ok(Some(messages)) => m.dead_letters.set(messages as i64),
        _ => tracing::warn!("metrics: cannot read the dead-letter stream"),
    }
    vsfleet_contract::metrics::render(&m.registry)
}
