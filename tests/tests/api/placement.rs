//! Where servers go and what happens to them when their host is away:
//! capacity, an admin's pin, `host_alive`, jobs that wait for their host,
//! and a returning worker's inventory.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

async fn wait_hosts_alive(app: &TestApp, want: usize) {
    eventually(&format!("{want} hosts alive"), || async {
        let (_, body) = app.get("/v1/hosts").await;
        let alive = body["hosts"].as_array()?.iter().filter(|h| h["alive"] == true).count();
        (alive == want).then_some(())
    })
    .await
}

#[tokio::test]
async fn creates_fill_hosts_up_to_their_capacity_and_an_admin_may_pin_a_host() {
    let mut app = spawn_app_with(|s| s.worker.capacity = 1).await;
    app.start_other_worker().await;
    wait_hosts_alive(&app, 2).await;
    let (a, b) = (app.host().to_owned(), app.other_host.clone());
    let user = app.create_user("pin@example.test").await;

    let (status, body) =
        app.call(Method::POST, "/v1/servers", Some(&user), Some(json!({"name": "mine", "host": a}))).await;
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "host_not_allowed"), "{body}");
    let (status, body) = app.post("/v1/servers", json!({"name": "nowhere", "host": "host-gone"})).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "host_not_alive"), "{body}");
    let (status, body) = app.post("/v1/servers", json!({"name": "bad", "host": "a.b"})).await;
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_host"), "{body}");

    // Pinned to A: it goes there, whatever the load.
    let (status, body) = app.post("/v1/servers", json!({"name": "pinned", "host": a})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["server"]["host"], a.as_str());
    assert_eq!(body["server"]["host_alive"], true);
    let first = body["server"]["id"].as_i64().unwrap();
    assert_eq!(app.wait_job(body["job"]["id"].as_str().unwrap()).await["status"], "succeeded");

    // A is full: a pin there is refused, an unpinned create goes to B.
    let (status, body) = app.post("/v1/servers", json!({"name": "full", "host": a})).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "host_full"), "{body}");
    let second = app.create_running("second", json!({})).await;
    assert_eq!(app.server(second).await["host"], b.as_str());

    // Both full: refused, and nothing was written for it.
    let (status, body) = app.post("/v1/servers", json!({"name": "third"})).await;
    assert_eq!((status, code(&body)), (StatusCode::SERVICE_UNAVAILABLE, "no_host_available"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("capacity"), "{body}");
    let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM servers").fetch_one(&app.db).await.unwrap();
    assert_eq!(rows, 2);
    let (_, hosts) = app.get("/v1/hosts").await;
    assert!(hosts["hosts"].as_array().unwrap().iter().all(|h| h["capacity"] == 1), "{hosts}");

    // A deleted server no longer counts: A takes a new one.
    assert_eq!(app.act(first, "delete").await["status"], "succeeded");
    let (status, body) = app.post("/v1/servers", json!({"name": "again", "host": a})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    app.wait_job(body["job"]["id"].as_str().unwrap()).await;
    app.teardown().await;
}

#[tokio::test]
async fn a_lost_hosts_servers_say_so_and_their_jobs_wait_for_it_with_a_warning() {
    let mut app = spawn_app().await;
    app.start_other_worker().await;
    wait_hosts_alive(&app, 2).await;
    let b = app.other_host.clone();
    let id = app.create_running("away", json!({"host": b})).await;
    assert_eq!(app.server(id).await["host_alive"], true);

    app.stop_other_workers().await;
    eventually("the server shows its host is not alive", || async {
        (app.server(id).await["host_alive"] == false).then_some(())
    })
    .await;
    let (status, body) = app.post(&format!("/v1/servers/{id}/stop"), json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let warning = body["warning"].as_str().unwrap_or_default();
    assert!(warning.contains(&b) && warning.contains("not alive"), "{body}");
    let job = body["job"]["id"].as_str().unwrap().to_owned();
    // No other host touches it: it waits.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let (_, waiting) = app.get(&format!("/v1/jobs/{job}")).await;
    assert_eq!(waiting["job"]["status"], "queued", "{waiting}");
    assert!(app.inspect(id).await.unwrap().state.unwrap().running.unwrap());

    // The host is back: the job runs there.
    app.start_other_worker().await;
    assert_eq!(app.wait_job(&job).await["status"], "succeeded");
    let server = app.wait_status(id, "stopped").await;
    assert_eq!(server["host_alive"], true, "{server}");
    assert_eq!(server["host"], b.as_str());
    app.teardown().await;
}

#[tokio::test]
async fn a_worker_that_comes_back_reports_its_host_at_once_without_waiting_for_a_sync() {
    // No scheduler runs: only the returning worker's own report can tell.
    let mut app = spawn_app().await;
    let id = app.create_running("gone meanwhile", json!({})).await;
    app.stop_worker().await;
    app.docker
        .remove_container(
            &app.container_name(id),
            Some(bollard::query_parameters::RemoveContainerOptions { force: true, ..Default::default() }),
        )
        .await
        .unwrap();
    app.start_worker().await;
    let server = app.wait_status(id, "missing").await;
    assert_eq!(server["data_exists"], true, "{server}");
    app.teardown().await;
}
