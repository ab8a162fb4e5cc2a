//! The container monitor and cleanup, on a real Docker daemon inside the
//! server (`vsfleet-dind-test`, built by `scripts/build-dind-image`, run
//! unconfined under runc as the stand-in for Sysbox).

use serde_json::{Value, json};
use tokio::process::Command;

use crate::helpers::{TestApp, eventually, spawn_app_with};

const DIND_IMAGE: &str = "vsfleet-dind-test:latest";

async fn sh(script: &str) -> bool {
    Command::new("sh").args(["-c", script]).status().await.map(|s| s.success()).unwrap_or(false)
}

async fn inner(app: &TestApp, id: i64) -> Vec<Value> {
    let (_, body) = app.get(&format!("/v1/servers/{id}/containers")).await;
    body["containers"].as_array().cloned().unwrap_or_default()
}

async fn with_inner_docker() -> TestApp {
    spawn_app_with(|s| {
        s.worker.image = DIND_IMAGE.into();
        s.worker.unconfined = true;
        s.worker.monitor_interval_ms = 300;
        s.worker.monitor_timeout_ms = 1000;
        s.worker.stop_timeout_secs = 10;
        s.api.container_rows_ttl_secs = 2;
    })
    .await
}

async fn inner_docker_ready(name: &str) {
    eventually("the inner Docker answers", || async {
        sh(&format!("docker exec {name} docker info >/dev/null 2>&1")).await.then_some(())
    })
    .await;
}

#[tokio::test]
async fn inner_containers_are_monitored_cleaned_up_and_dropped_when_stale() {
    let mut app = with_inner_docker().await;
    let id = app.create_running("vidinis", json!({})).await;
    let name = app.container_name(id);
    inner_docker_ready(&name).await;
    // No registry inside either: the inner image comes from the host.
    assert!(sh(&format!("docker save vsfleet-busybox:latest | docker exec -i {name} docker load -q")).await);
    assert!(
        sh(&format!("docker exec {name} docker run -d --name inner1 vsfleet-busybox:latest sleep 1000 >/dev/null"))
            .await
    );

    let list = eventually("inner1 shows in the API", || async {
        let list = inner(&app, id).await;
        list.iter().any(|c| c["names"] == "inner1" && c["state"] == "running").then_some(list)
    })
    .await;
    let row = list.iter().find(|c| c["names"] == "inner1").unwrap();
    assert_eq!(row["image"], "vsfleet-busybox:latest");
    assert!(row["status"].as_str().unwrap().starts_with("Up"), "{row}");
    assert_eq!(row["docker_id"].as_str().unwrap().len(), 64, "{row}");

    assert!(sh(&format!("docker exec {name} docker rm -f inner1 >/dev/null")).await);
    eventually("inner1 disappears from the API", || async { inner(&app, id).await.is_empty().then_some(()) }).await;

    // The loaded image is now unused: prune reclaims it.
    let job = app.act(id, "cleanup").await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert!(job["result"]["reclaimed_bytes"].as_u64().unwrap() > 0, "{job}");
    assert!(job["result"]["reclaimed"].is_string(), "{job}");

    // A stopped server is no longer polled; its rows go stale and the
    // scheduler's cleanup drops them.
    assert!(sh(&format!("docker save vsfleet-busybox:latest | docker exec -i {name} docker load -q")).await);
    assert!(
        sh(&format!("docker exec {name} docker run -d --name inner2 vsfleet-busybox:latest sleep 1000 >/dev/null"))
            .await
    );
    eventually("inner2 shows in the API", || async { (!inner(&app, id).await.is_empty()).then_some(()) }).await;
    app.act(id, "stop").await;
    assert!(!inner(&app, id).await.is_empty(), "rows stay until they are stale");
    app.start_scheduler().await;
    eventually("stale rows are dropped", || async { inner(&app, id).await.is_empty().then_some(()) }).await;
    app.teardown().await;
}

#[tokio::test]
async fn one_server_that_does_not_answer_does_not_hold_up_the_others() {
    let mut app = with_inner_docker().await;
    // A long timeout: a server polled after the frozen one would wait 5 s.
    app.settings.worker.monitor_timeout_ms = 5000;
    app.stop_worker().await;
    app.start_worker().await;
    let slow = app.create_running("lėtas", json!({})).await;
    let fast = app.create_running("greitas", json!({})).await;
    let (slow_name, fast_name) = (app.container_name(slow), app.container_name(fast));
    inner_docker_ready(&slow_name).await;
    inner_docker_ready(&fast_name).await;
    // Freeze the slow server's inner Docker: its `docker ps` now hangs.
    assert!(sh(&format!("docker exec {slow_name} sh -c 'kill -STOP $(pidof dockerd)'")).await);

    for round in 0..3 {
        let inner_name = format!("inner{round}");
        assert!(
            sh(&format!("docker save vsfleet-busybox:latest | docker exec -i {fast_name} docker load -q >/dev/null"))
                .await
        );
        assert!(
            sh(&format!(
                "docker exec {fast_name} docker run -d --name {inner_name} vsfleet-busybox:latest sleep 1000 >/dev/null"
            ))
            .await
        );
        let started = std::time::Instant::now();
        eventually("the fast server's new container shows", || async {
            inner(&app, fast).await.iter().any(|c| c["names"] == inner_name.as_str()).then_some(())
        })
        .await;
        // The monitor polls every 300 ms; a server blocked behind the frozen
        // one would wait for its 5 s timeout each round.
        assert!(started.elapsed() < std::time::Duration::from_secs(3), "round {round} took {:?}", started.elapsed());
    }
    assert!(sh(&format!("docker exec {slow_name} sh -c 'kill -CONT $(pidof dockerd)'")).await);
    app.teardown().await;
}

#[tokio::test]
async fn a_forced_stop_kills_at_once_while_a_stuck_job_is_in_flight() {
    let app = with_inner_docker().await;
    let id = app.create_running("užstrigęs", json!({})).await;
    let name = app.container_name(id);
    inner_docker_ready(&name).await;
    // With the inner daemon frozen, a cleanup (prune inside) hangs for good.
    assert!(sh(&format!("docker exec {name} sh -c 'kill -STOP $(pidof dockerd)'")).await);
    let (status, body) = app.post(&format!("/v1/servers/{id}/cleanup"), json!({})).await;
    assert_eq!(status, 202, "{body}");
    let stuck = body["job"]["id"].as_str().unwrap().to_owned();
    eventually("the cleanup job is running", || async {
        let (_, job) = app.get(&format!("/v1/jobs/{stuck}")).await;
        (job["job"]["status"] == "running").then_some(())
    })
    .await;
    // A normal stop waits behind it.
    let (status, body) = app.post(&format!("/v1/servers/{id}/stop"), json!({})).await;
    assert_eq!((status.as_u16(), body["error"]["code"].as_str()), (409, Some("job_in_flight")), "{body}");

    let started = std::time::Instant::now();
    let (status, body) = app.post(&format!("/v1/servers/{id}/stop?force=true"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "the forced stop waited {:?}", started.elapsed());
    assert_eq!(app.inspect(id).await.unwrap().state.unwrap().running, Some(false), "still running after a forced stop");

    // The stuck job then ends (its server is no longer running), the
    // server settles as stopped, and the next request is possible.
    assert_eq!(app.wait_job(&stuck).await["status"], "failed");
    app.wait_status(id, "stopped").await;
    assert_eq!(app.act(id, "start").await["status"], "succeeded");
    app.teardown().await;
}
