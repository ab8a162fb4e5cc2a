//! Outages of what vsfleet stands on, with the services as real processes:
//! the broker stopped and restarted on its store, and Docker unreachable
//! from a worker.

use std::time::Duration;

use serde_json::{Value, json};
use vsfleet_tests::docker_proxy::DockerProxy;

use crate::helpers::{TestApp, eventually, spawn_app, spawn_app_with};

async fn readyz(app: &TestApp) -> (u16, Value) {
    let response = app.http.get(format!("http://{}/readyz", app.addr)).send().await.expect("the api answers");
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn jobs_of(app: &TestApp, id: i64, action: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE server_id = $1 AND action = $2")
        .bind(id)
        .bind(action)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_broker_outage_refuses_requests_clearly_and_everything_reconnects_by_itself() {
    let mut app = spawn_app().await;
    let id = app.create_running("protrukis", json!({})).await;
    app.stop_worker().await;
    let api = app.start_api_process().await;
    let worker = app.start_worker_process(&[]).await;

    app.nats_server.kill();
    let (_, ready) = eventually("/readyz reports the broker down", || async {
        let (status, body) = readyz(&app).await;
        (status == 503 && body["broker"] == false).then_some((status, body))
    })
    .await;
    assert_eq!(ready["database"], true, "{ready}");
    let (status, body) = app.post(&format!("/v1/servers/{id}/stop"), json!({})).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "broker_unavailable", "{body}");
    assert!(!body["error"]["message"].as_str().unwrap_or_default().is_empty(), "{body}");
    assert_eq!(jobs_of(&app, id, "stop").await, 0, "a refused request leaves no job behind");

    app.nats_server.restart();
    eventually("/readyz reports everything up", || async { (readyz(&app).await.0 == 200).then_some(()) }).await;
    // Neither process was restarted: both reconnected by themselves.
    assert!(app.services[api].is_running() && app.services[worker].is_running());
    let job = eventually("a request after the outage runs to the end", || async {
        let (status, body) = app.post(&format!("/v1/servers/{id}/stop"), json!({})).await;
        (status == 202).then(|| body["job"]["id"].as_str().unwrap().to_owned())
    })
    .await;
    assert_eq!(app.wait_job(&job).await["status"], "succeeded");
    app.wait_status(id, "stopped").await;
    app.teardown().await;
}

#[tokio::test]
async fn a_docker_outage_degrades_the_worker_its_jobs_wait_and_resume() {
    let mut app = spawn_app_with(|s| {
        s.worker.retry_attempts = 2;
        s.worker.retry_max_ms = 500;
    })
    .await;
    app.stop_worker().await;
    let proxy = DockerProxy::start(&app.dir().join("docker.sock"));
    app.start_worker_process(&[("DOCKER_HOST", proxy.url())]).await;
    let id = app.create_running("ukana", json!({})).await;

    proxy.set_up(false);
    let host = eventually("the host reports itself degraded", || async {
        let (_, body) = app.get("/v1/hosts").await;
        let host = body["hosts"].as_array()?.iter().find(|h| h["host"] == app.host())?.clone();
        host["degraded"].is_string().then_some(host)
    })
    .await;
    assert!(host["degraded"].as_str().unwrap().contains("Docker"), "{host}");
    let (status, body) = app.post("/v1/servers", json!({ "name": "kitas" })).await;
    assert_eq!(status, 503, "no server is placed on a degraded host: {body}");
    assert_eq!(body["error"]["code"], "no_host_available", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("degraded"), "{body}");

    let (status, body) = app.post(&format!("/v1/servers/{id}/stop"), json!({})).await;
    assert_eq!(status, 202, "{body}");
    let job_id = body["job"]["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, body) = app.get(&format!("/v1/jobs/{job_id}")).await;
    assert_eq!(body["job"]["status"], "queued", "the job waits for Docker: {body}");

    proxy.set_up(true);
    assert_eq!(app.wait_job(&job_id).await["status"], "succeeded");
    app.wait_status(id, "stopped").await;
    eventually("the host is healthy again", || async {
        let (_, body) = app.get("/v1/hosts").await;
        let host = body["hosts"].as_array()?.iter().find(|h| h["host"] == app.host())?.clone();
        host["degraded"].is_null().then_some(())
    })
    .await;
    // The worker reopened Docker's event stream: drift is seen again.
    app.docker.start_container(&app.container_name(id), None).await.unwrap();
    app.wait_status(id, "running").await;
    app.teardown().await;
}
