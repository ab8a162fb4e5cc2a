//! Drift behind vsfleet's back: Docker's event stream reports it at once,
//! the periodic sync is the backstop, and orphans are reported (and, when
//! configured, removed if stopped, never their data).

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};
use reqwest::StatusCode;
use serde_json::json;
use vsfleet_contract::labels;

use crate::helpers::{TEST_IMAGE, TestApp, eventually, spawn_app, spawn_app_with};

fn force() -> Option<RemoveContainerOptions> {
    Some(RemoveContainerOptions { force: true, ..Default::default() })
}

#[tokio::test]
async fn drift_behind_vsfleets_back_shows_in_the_api_through_docker_events() {
    // No scheduler runs here: only the Docker events path can notice.
    let app = spawn_app().await;
    let id = app.create_running("dreifas", json!({})).await;
    let name = app.container_name(id);

    app.docker.stop_container(&name, None).await.unwrap();
    app.wait_status(id, "stopped").await;
    app.docker.start_container(&name, None).await.unwrap();
    app.wait_status(id, "running").await;
    app.docker.remove_container(&name, force()).await.unwrap();
    let server = app.wait_status(id, "missing").await;
    assert!(server["container_id"].is_null(), "{server}");
    assert_eq!(server["data_exists"], true);

    // Missing is recoverable: start recreates the container.
    assert_eq!(app.act(id, "start").await["status"], "succeeded");
    app.wait_status(id, "running").await;
    app.teardown().await;
}

#[tokio::test]
async fn with_docker_events_off_the_periodic_sync_catches_drift() {
    let mut app = spawn_app_with(|s| s.worker.follow_docker_events = false).await;
    let id = app.create_running("sinchronas", json!({})).await;
    let name = app.container_name(id);
    app.docker.stop_container(&name, None).await.unwrap();
    assert_eq!(app.server(id).await["status"], "running", "nothing but a sync should notice");

    app.start_scheduler().await;
    app.wait_status(id, "stopped").await;
    app.docker.remove_container(&name, force()).await.unwrap();
    app.wait_status(id, "missing").await;

    let (status, hosts) = app.get("/v1/hosts").await;
    assert_eq!(status, StatusCode::OK, "{hosts}");
    let host = hosts["hosts"].as_array().unwrap().iter().find(|h| h["host"] == app.host()).cloned().unwrap();
    assert_eq!(host["alive"], true);
    assert!(host["last_sync"]["at"].is_string(), "{host}");
    app.teardown().await;
}

/// A container made by hand with vsfleet's labels.
async fn labelled(app: &TestApp, name: &str, server_id: u64, host: &str, running: bool) -> String {
    labelled_by(app, app.prefix(), name, server_id, host, running).await
}

/// A container labelled as `deployment` (a NATS prefix) made it.
async fn labelled_by(app: &TestApp, deployment: &str, name: &str, server_id: u64, host: &str, running: bool) -> String {
    let labels = HashMap::from([
        (labels::MANAGED.to_owned(), "true".to_owned()),
        (labels::SERVER_ID.to_owned(), server_id.to_string()),
        (labels::HOST.to_owned(), host.to_owned()),
        (labels::DEPLOYMENT.to_owned(), deployment.to_owned()),
    ]);
    let body = ContainerCreateBody {
        image: Some(TEST_IMAGE.into()),
        labels: Some(labels),
        host_config: Some(HostConfig { network_mode: Some("none".into()), ..Default::default() }),
        ..Default::default()
    };
    let options = CreateContainerOptions { name: Some(name.to_owned()), ..Default::default() };
    let id = app.docker.create_container(Some(options), body).await.unwrap().id;
    if running {
        app.docker.start_container(&id, None).await.unwrap();
    }
    id
}

#[tokio::test]
async fn orphans_are_reported_and_only_stopped_ones_of_this_host_are_removed() {
    let mut app = spawn_app_with(|s| s.api.remove_orphans = true).await;
    let live = app.create_running("gyvas", json!({})).await;
    let prefix = app.settings.worker.container_prefix.clone();
    let stopped_orphan = labelled(&app, &format!("{prefix}orphan-a"), 777, app.host(), false).await;
    let running_orphan = labelled(&app, &format!("{prefix}orphan-b"), 778, app.host(), true).await;
    let other_host = format!("{}-other", app.host());
    let foreign = labelled(&app, &format!("{prefix}foreign"), 779, &other_host, false).await;
    // Another deployment (another NATS prefix) on this engine, with the same host id.
    let neighbour = labelled_by(&app, "neighbour", &format!("{prefix}neighbour"), 780, app.host(), false).await;

    app.start_scheduler().await;
    eventually("the stopped orphan is removed", || async {
        app.docker.inspect_container(&stopped_orphan, None).await.is_err().then_some(())
    })
    .await;
    let (_, hosts) = app.get("/v1/hosts").await;
    let host = hosts["hosts"].as_array().unwrap().iter().find(|h| h["host"] == app.host()).cloned().unwrap();
    let orphans: Vec<u64> =
        host["last_sync"]["orphans"].as_array().unwrap().iter().map(|o| o["server_id"].as_u64().unwrap()).collect();
    assert!(orphans.contains(&778), "the running orphan is reported: {host}");
    assert!(![779, 780, live as u64].iter().any(|id| orphans.contains(id)), "{host}");

    let running = app.docker.inspect_container(&running_orphan, None).await.unwrap();
    assert_eq!(running.state.unwrap().running, Some(true), "a running orphan was stopped");
    assert!(app.docker.inspect_container(&foreign, None).await.is_ok(), "another host's container was touched");
    assert!(app.docker.inspect_container(&neighbour, None).await.is_ok(), "another deployment's container was touched");
    // The container goes before the worker's report of it is recorded.
    let (action, origin, status): (String, String, String) = eventually("the reap job is recorded", || async {
        sqlx::query_as(
            "SELECT action, origin, status FROM jobs WHERE server_id = 777 AND status IN ('succeeded', 'failed')",
        )
        .fetch_optional(&app.db)
        .await
        .unwrap()
    })
    .await;
    assert_eq!((action.as_str(), origin.as_str(), status.as_str()), ("reap", "scheduler", "succeeded"));
    assert_eq!(app.server(live).await["status"], "running");

    app.docker.remove_container(&foreign, force()).await.unwrap();
    app.docker.remove_container(&neighbour, force()).await.unwrap();
    app.teardown().await;
}
