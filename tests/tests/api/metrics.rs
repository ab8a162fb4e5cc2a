//! `GET /metrics` on the api, the worker (`worker.metrics_listen`) and the
//! scheduler (`scheduler.metrics_listen`), read after a few jobs, one of
//! them failing on every try and buried.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use serde_json::json;

use crate::helpers::{TestApp, eventually, spawn_app_with};

fn free_addr() -> SocketAddr {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap()
}

/// The value of the sample `name{labels…}` (labels in any order), if present.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
        let matches = metric == name
            && labels.iter().all(|(k, v)| rest.trim_end_matches('}').split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
        matches.then(|| value.parse().ok()).flatten()
    })
}

async fn scrape(app: &TestApp, addr: SocketAddr) -> String {
    let response = app.http.get(format!("http://{addr}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let kind = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.starts_with("text/plain"), "{kind}");
    response.text().await.unwrap()
}

#[tokio::test]
async fn every_service_serves_metrics_that_move_with_the_jobs() {
    let (worker_addr, scheduler_addr) = (free_addr(), free_addr());
    let mut app = spawn_app_with(|s| {
        s.worker.metrics_listen = Some(worker_addr);
        s.scheduler.metrics_listen = Some(scheduler_addr);
        s.scheduler.sync_interval_ms = 300;
        s.nats.max_deliver = 2;
        s.worker.retry_attempts = 2;
        s.worker.retry_max_ms = 500;
    })
    .await;
    app.start_scheduler().await;
    let api = app.addr;
    let id = app.create_running("metrikos", json!({})).await;
    assert_eq!(app.act(id, "stop").await["status"], "succeeded");
    assert_eq!(app.act(id, "start").await["status"], "succeeded");
    // No inner Docker in the stand-in: the prune fails on every try and is buried.
    assert_eq!(app.act(id, "cleanup").await["status"], "failed");
    app.wait_jobs_drained().await;

    let text = scrape(&app, api).await;
    let api_jobs =
        |action, outcome| sample(&text, "vsfleet_api_jobs_total", &[("action", action), ("outcome", outcome)]);
    assert_eq!(api_jobs("create", "succeeded"), Some(1.0), "{text}");
    assert_eq!(api_jobs("start", "succeeded"), Some(1.0));
    assert_eq!(api_jobs("cleanup", "failed"), Some(1.0));
    let duration = |name, labels: &[(&str, &str)]| sample(&text, name, labels);
    assert_eq!(
        duration("vsfleet_api_job_duration_seconds_count", &[("action", "stop"), ("outcome", "succeeded")]),
        Some(1.0)
    );
    assert!(duration("vsfleet_api_job_duration_seconds_sum", &[("action", "create")]).unwrap() > 0.0);
    let accepted = [("route", "/v1/servers/{id}/{action}"), ("method", "POST"), ("status", "202")];
    assert_eq!(sample(&text, "vsfleet_api_http_requests_total", &accepted), Some(3.0), "{text}");
    assert!(
        sample(&text, "vsfleet_api_http_request_duration_seconds_count", &[("route", "/v1/jobs/{id}")]).unwrap() >= 4.0
    );
    assert_eq!(sample(&text, "vsfleet_api_hosts_alive", &[]), Some(1.0));
    assert_eq!(sample(&text, "vsfleet_api_dead_letters", &[]), Some(1.0));

    let text = scrape(&app, worker_addr).await;
    let worker_jobs =
        |action, outcome| sample(&text, "vsfleet_worker_jobs_total", &[("action", action), ("outcome", outcome)]);
    assert_eq!(worker_jobs("create", "succeeded"), Some(1.0), "{text}");
    assert_eq!(worker_jobs("cleanup", "retried"), Some(1.0), "the first delivery is handed back");
    assert_eq!(worker_jobs("cleanup", "failed"), Some(1.0));
    assert_eq!(sample(&text, "vsfleet_worker_retries_total", &[("action", "cleanup")]), Some(2.0), "one a delivery");
    assert_eq!(sample(&text, "vsfleet_worker_dead_letters_total", &[("action", "cleanup")]), Some(1.0));
    assert_eq!(
        sample(&text, "vsfleet_worker_job_duration_seconds_count", &[("action", "start"), ("outcome", "succeeded")]),
        Some(1.0)
    );

    let text = eventually("the scheduler has emitted a sync", || async {
        let text = scrape(&app, scheduler_addr).await;
        let emitted = sample(&text, "vsfleet_scheduler_ticks_total", &[("kind", "sync"), ("outcome", "emitted")]);
        (emitted.unwrap_or(0.0) >= 1.0).then_some(text)
    })
    .await;
    assert!(text.contains("# TYPE vsfleet_scheduler_ticks_total counter"));
    app.teardown().await;
}
