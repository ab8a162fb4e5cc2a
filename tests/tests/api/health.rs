//! `GET /healthz` and `GET /readyz` of the worker (`worker.health_listen`)
//! and the scheduler (`scheduler.health_listen`): alive while they run,
//! ready while what they need is up, and saying which is down when not.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use serde_json::{Value, json};
use vsfleet_tests::docker_proxy::DockerProxy;

use crate::helpers::{TestApp, eventually, spawn_app_with};

fn free_addr() -> SocketAddr {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap()
}

async fn probe(app: &TestApp, addr: SocketAddr, path: &str) -> (u16, String) {
    let response = app.http.get(format!("http://{addr}{path}")).send().await.expect("the probe answers");
    (response.status().as_u16(), response.text().await.unwrap())
}

/// `/readyz` at `addr` until it answers `status` with `body`.
async fn ready_becomes(app: &TestApp, addr: SocketAddr, status: u16, body: Value) {
    eventually(&format!("{addr}/readyz answers {status} {body}"), || async {
        let (seen, text) = probe(app, addr, "/readyz").await;
        (seen == status && serde_json::from_str::<Value>(&text).ok() == Some(body.clone())).then_some(())
    })
    .await
}

#[tokio::test]
async fn the_worker_and_the_scheduler_answer_probes_and_say_what_is_down() {
    let (worker_addr, scheduler_addr) = (free_addr(), free_addr());
    let mut app = spawn_app_with(|s| {
        s.worker.health_listen = Some(worker_addr);
        s.scheduler.health_listen = Some(scheduler_addr);
        // The same address as the health probes: one listener serves both.
        s.scheduler.metrics_listen = Some(scheduler_addr);
    })
    .await;
    app.start_scheduler().await;
    for addr in [worker_addr, scheduler_addr] {
        assert_eq!(probe(&app, addr, "/healthz").await, (200, "ok".to_owned()));
    }
    ready_becomes(&app, worker_addr, 200, json!({ "docker": true, "broker": true })).await;
    ready_becomes(&app, scheduler_addr, 200, json!({ "broker": true })).await;
    let (status, metrics) = probe(&app, scheduler_addr, "/metrics").await;
    assert_eq!(status, 200, "{metrics}");

    // A worker process whose Docker goes away: alive, not ready, and back.
    app.stop_worker().await;
    let worker_addr = free_addr();
    app.settings.worker.health_listen = Some(worker_addr);
    let proxy = DockerProxy::start(&app.dir().join("docker.sock"));
    app.start_worker_process(&[("DOCKER_HOST", proxy.url())]).await;
    ready_becomes(&app, worker_addr, 200, json!({ "docker": true, "broker": true })).await;
    proxy.set_up(false);
    ready_becomes(&app, worker_addr, 503, json!({ "docker": false, "broker": true })).await;
    assert_eq!(probe(&app, worker_addr, "/healthz").await, (200, "ok".to_owned()));
    proxy.set_up(true);
    ready_becomes(&app, worker_addr, 200, json!({ "docker": true, "broker": true })).await;

    // The broker goes away: neither is ready; both recover by themselves.
    app.nats_server.kill();
    ready_becomes(&app, worker_addr, 503, json!({ "docker": true, "broker": false })).await;
    ready_becomes(&app, scheduler_addr, 503, json!({ "broker": false })).await;
    app.nats_server.restart();
    ready_becomes(&app, worker_addr, 200, json!({ "docker": true, "broker": true })).await;
    ready_becomes(&app, scheduler_addr, 200, json!({ "broker": true })).await;
    app.teardown().await;
}
