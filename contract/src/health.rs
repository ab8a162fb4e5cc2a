//! The worker's and the scheduler's own HTTP: `GET /healthz` and
//! `GET /readyz` on `health_listen`, for an orchestrator's probes, and
//! `GET /metrics` ([`crate::metrics`]) on `metrics_listen`. Each answers on
//! its own listener, or on one when both keys name the same address.
//!
//! - `/healthz`: 200 `ok` while the process runs.
//! - `/readyz`: 200 when everything the service needs to do its work is up,
//!   else 503; either way a JSON object with one boolean a need
//!   (`{"docker": false, "broker": true}`), as the api's `/readyz` answers.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Whether one thing the service needs is up, read at each `/readyz`.
pub type Check = Box<dyn Fn() -> bool + Send + Sync>;

/// `/healthz` and `/readyz`, the latter reading `checks` (name, check).
pub fn router(checks: Vec<(&'static str, Check)>) -> Router {
    Router::new().route("/healthz", get(|| async { "ok" })).route("/readyz", get(readyz)).with_state(Arc::new(checks))
}

async fn readyz(State(checks): State<Arc<Vec<(&'static str, Check)>>>) -> Response {
    let seen: Vec<(&str, bool)> = checks.iter().map(|(name, up)| (*name, up())).collect();
    let status = if seen.iter().all(|(_, up)| *up) { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body: serde_json::Map<String, serde_json::Value> =
        seen.into_iter().map(|(name, up)| (name.to_owned(), up.into())).collect();
    (status, Json(body)).into_response()
}

/// A service's own listeners, bound at start, so a taken address stops the
/// service with its reason instead of leaving it unwatched.
pub struct Listeners(Vec<Bound>);

struct Bound {
    listener: TcpListener,
    routes: Router,
    /// The keys that named its address, for the log.
    keys: Vec<String>,
}

impl Listeners {
    /// Binds each configured `(address, key, routes)`; routes whose keys
    /// name the same address share one listener. Unset addresses are skipped.
    pub async fn bind(routes: impl IntoIterator<Item = (Option<SocketAddr>, &str, Router)>) -> anyhow::Result<Self> {
        let mut bound: Vec<(SocketAddr, Bound)> = Vec::new();
        for (listen, key, router) in routes {
            let Some(listen) = listen else { continue };
            // Port 0 asks for a fresh port each time: never shared.
            if let Some((_, shared)) = bound.iter_mut().find(|(at, _)| *at == listen && listen.port() != 0) {
                shared.routes = std::mem::take(&mut shared.routes).merge(router);
                shared.keys.push(key.to_owned());
            } else {
                let listener = TcpListener::bind(listen).await.with_context(|| format!("binding {key} {listen}"))?;
                bound.push((listen, Bound { listener, routes: router, keys: vec![key.to_owned()] }));
            }
        }
        Ok(Self(bound.into_iter().map(|(_, bound)| bound).collect()))
    }

    /// Serves every listener until shut down.
    pub fn serve(self, shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        self.0
            .into_iter()
            .map(|Bound { listener, routes, keys }| {
                let (bound, keys) = (listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), keys.join(", "));
                tracing::info!(%bound, keys, "listening");
                let stopped = shutdown.clone().cancelled_owned();
                tokio::spawn(async move {
                    if let Err(error) = axum::serve(listener, routes).with_graceful_shutdown(stopped).await {
                        tracing::warn!(%error, %bound, keys, "a listener stopped");
                    }
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// The raw HTTP/1.1 answer to `GET path` at `addr`.
    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn readyz_names_what_is_down_and_healthz_only_says_the_process_runs() {
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let docker = up.clone();
        let checks: Vec<(&'static str, Check)> = vec![
            ("docker", Box::new(move || docker.load(std::sync::atomic::Ordering::SeqCst))),
            ("broker", Box::new(|| true)),
        ];
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let listeners =
            Listeners::bind([(Some(any), "test.health_listen", router(checks)), (None, "unset", Router::new())])
                .await
                .unwrap();
        assert_eq!(listeners.0.len(), 1, "an unset address binds nothing");
        let addr = listeners.0[0].listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let tasks = listeners.serve(shutdown.clone());

        let ready = get(addr, "/readyz").await;
        assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
        assert!(ready.ends_with(r#"{"broker":true,"docker":true}"#), "{ready}");
        up.store(false, std::sync::atomic::Ordering::SeqCst);
        let unready = get(addr, "/readyz").await;
        assert!(unready.starts_with("HTTP/1.1 503"), "{unready}");
        assert!(unready.ends_with(r#"{"broker":true,"docker":false}"#), "{unready}");
        let alive = get(addr, "/healthz").await;
        assert!(alive.starts_with("HTTP/1.1 200") && alive.ends_with("\r\n\r\nok"), "{alive}");

        shutdown.cancel();
        for task in tasks {
            task.await.unwrap();
        }
    }
}
