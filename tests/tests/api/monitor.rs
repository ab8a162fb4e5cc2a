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

#[tokio::test]
async fn inner_containers_are_monitored_cleaned_up_and_dropped_when_stale() {
    let mut app = spawn_app_with(|s| {
        s.worker.image = DIND_IMAGE.into();
        s.worker.unconfined = true;
        s.worker.monitor_interval_ms = 300;
        s.worker.stop_timeout_secs = 10;
        s.api.container_rows_ttl_secs = 2;
    })
    .await;
    let id = app.create_running("vidinis", json!({})).await;
    let name = app.container_name(id);
    eventually("the inner Docker answers", || async {
        sh(&format!("docker exec {name} docker info >/dev/null 2>&1")).await.then_some(())
    })
    .await;
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
