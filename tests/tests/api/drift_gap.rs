//! Drift made while the worker's Docker event stream is down: the worker
//! reopens the stream from where it stopped (`since`), so Docker replays
//! what happened in the gap and the change shows as soon as the stream is
//! back, not at the next sync.

use std::time::Duration;

use serde_json::json;
use vsfleet_tests::docker_proxy::DockerProxy;

use crate::helpers::{WAIT, spawn_app_with};

#[tokio::test]
async fn drift_made_while_the_event_stream_is_cut_shows_when_it_returns_not_at_the_next_sync() {
    let mut app = spawn_app_with(|s| {
        // Only the event stream can explain the change: no sync for five
        // minutes (and no scheduler runs at all), and no Docker ping after
        // the worker's first (a failed ping, then a good one, would make it
        // report its inventory on Docker's return).
        s.scheduler.sync_interval_ms = 300_000;
        s.worker.heartbeat_secs = 300;
    })
    .await;
    app.stop_worker().await;
    let proxy = DockerProxy::start(&app.dir().join("docker.sock"));
    let worker = app.start_worker_process(&[("DOCKER_HOST", proxy.url())]).await;
    let id = app.create_running("sprangas", json!({})).await;

    proxy.set_up(false);
    app.services[worker].wait_for_log("watch: Docker event stream", WAIT).await;
    app.docker.stop_container(&app.container_name(id), None).await.unwrap();
    assert_eq!(app.server(id).await["status"], "running", "nothing can see the stop while the stream is cut");

    proxy.set_up(true);
    let within = Duration::from_secs(10);
    tokio::time::timeout(within, app.wait_status(id, "stopped"))
        .await
        .unwrap_or_else(|_| panic!("the stop made in the gap did not show within {within:?} of Docker's return"));
    let log = app.services[worker].log();
    let seen = log.lines().any(|l| l.contains("drift observed") && l.contains("container=Stopped"));
    assert!(seen, "the replayed events reported it:\n{log}");
    assert_eq!(
        log.matches("inventory reported on (re)connection").count(),
        1,
        "only the start's inventory, not one on Docker's return:\n{log}"
    );
    app.teardown().await;
}
