//! Crash safety and graceful shutdown, with the services as real processes:
//! a worker killed half way through a job, the api killed between commit
//! and publish, and both told to stop while they hold work.

use std::time::Duration;

use bollard::models::ContainerStateStatusEnum;
use serde_json::json;
use vsfleet_tests::docker_proxy::DockerProxy;

use crate::helpers::{TestApp, WAIT, eventually, spawn_app, spawn_app_with};

/// A worker process whose Docker calls go through `proxy`.
async fn worker_behind(app: &mut TestApp, proxy: &DockerProxy) -> usize {
    app.start_worker_process(&[("DOCKER_HOST", proxy.url())]).await
}

/// Freezes the broker, then requests a stop of `id`: the api commits the
/// job and waits for a publish acknowledgement that does not come. Returns
/// the request in flight and the committed (unpublished) job's id.
async fn stop_held_in_publish(
    app: &TestApp,
    id: i64,
) -> (tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>, String) {
    app.nats_server.freeze();
    let url = format!("http://{}/v1/servers/{id}/stop", app.addr);
    let pending = tokio::spawn(app.http.post(url).bearer_auth(&app.admin_token).json(&json!({})).send());
    let (job_id, published): (String, String) = eventually("the stop job is committed", || async {
        sqlx::query_as(
            "SELECT id, CASE WHEN published_at IS NULL THEN 'no' ELSE 'yes' END FROM jobs
             WHERE server_id = $1 AND action = 'stop'",
        )
        .bind(id)
        .fetch_optional(&app.db)
        .await
        .unwrap()
    })
    .await;
    assert_eq!(published, "no", "JetStream cannot have acknowledged it");
    (pending, job_id)
}

async fn container_status(app: &TestApp, id: i64) -> Option<ContainerStateStatusEnum> {
    app.inspect(id).await?.state?.status
}

#[tokio::test]
async fn a_worker_killed_half_way_is_replaced_and_the_job_converges() {
    // A short ack wait, so the killed worker's job is redelivered quickly.
    let mut app = spawn_app_with(|s| s.nats.ack_wait_secs = 3).await;
    app.stop_worker().await;
    let proxy = DockerProxy::start(&app.dir().join("docker.sock"));

    // Create: worker A has made the container and is killed before it starts it.
    proxy.hold("/start HTTP");
    let a = worker_behind(&mut app, &proxy).await;
    let (status, body) = app.post("/v1/servers", json!({ "name": "pusiaukele" })).await;
    assert_eq!(status, 202, "{body}");
    let id = body["server"]["id"].as_i64().unwrap();
    let job_id = body["job"]["id"].as_str().unwrap().to_owned();
    proxy.wait_held().await;
    let created = app.inspect(id).await.expect("worker A created the container");
    assert_eq!(container_status(&app, id).await, Some(ContainerStateStatusEnum::CREATED));
    app.services[a].kill();
    let b = app.start_worker_process(&[]).await;
    let job = app.wait_job(&job_id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 2, "redelivered once: {job}");
    assert_eq!(app.our_containers().await, vec![created.id.clone().unwrap()], "no second container");
    assert_eq!(container_status(&app, id).await, Some(ContainerStateStatusEnum::RUNNING));
    app.wait_status(id, "running").await;

    // Delete: worker C has stopped the container and is killed before it removes it.
    app.services[b].stop(WAIT);
    proxy.hold("DELETE /");
    let c = worker_behind(&mut app, &proxy).await;
    let (status, body) =
        app.call(reqwest::Method::DELETE, &format!("/v1/servers/{id}"), Some(&app.admin_token.clone()), None).await;
    assert_eq!(status, 202, "{body}");
    let job_id = body["job"]["id"].as_str().unwrap().to_owned();
    proxy.wait_held().await;
    assert_eq!(container_status(&app, id).await, Some(ContainerStateStatusEnum::EXITED));
    assert!(app.data_root().join(id.to_string()).join("apps").is_dir(), "data untouched so far");
    app.services[c].kill();
    app.start_worker_process(&[]).await;
    let job = app.wait_job(&job_id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 2, "{job}");
    assert!(app.our_containers().await.is_empty(), "the container is gone");
    let entries: Vec<String> = std::fs::read_dir(app.data_root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(entries.len(), 1, "exactly one archive, no live directory: {entries:?}");
    assert!(entries[0].starts_with(&format!("{id}-deleted-")), "{entries:?}");
    assert!(app.data_root().join(&entries[0]).join("apps").is_dir(), "apps/ kept in the archive");
    app.wait_status(id, "deleted").await;
    app.teardown().await;
}

#[tokio::test]
async fn the_api_killed_between_commit_and_publish_publishes_the_job_after_restart() {
    let mut app = spawn_app().await;
    let id = app.create_running("isjungta", json!({})).await;
    let api = app.start_api_process().await;

    // Killed while it waits for JetStream to acknowledge the publish.
    let (pending, job_id) = stop_held_in_publish(&app, id).await;
    app.services[api].kill();
    assert!(pending.await.unwrap().is_err(), "the request died with the api");

    // Whatever the api wrote to its socket dies with the frozen broker; it
    // comes back from its store.
    app.nats_server.kill();
    app.nats_server.restart();
    let stream =
        eventually("JetStream is back", || async { app.js.get_stream(format!("{}_jobs", app.prefix())).await.ok() })
            .await;
    let info = stream.get_info().await.unwrap();
    for seq in info.state.first_sequence..=info.state.last_sequence {
        if let Ok(message) = stream.get_raw_message(seq).await {
            let msg_id = message.headers.get(async_nats::header::NATS_MESSAGE_ID).map(|v| v.as_str().to_owned());
            assert_ne!(msg_id.as_deref(), Some(job_id.as_str()), "the job reached JetStream before the restart");
        }
    }

    // The restarted api finds the committed job unpublished and publishes it.
    app.spawn_service("vsfleet-api", &[]);
    app.wait_api_answers().await;
    let job = app.wait_job(&job_id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    app.wait_status(id, "stopped").await;
    app.teardown().await;
}

#[tokio::test]
async fn a_worker_told_to_stop_finishes_its_job_and_takes_no_more() {
    let mut app = spawn_app().await;
    let first = app.create_running("pirmas", json!({})).await;
    let second = app.create_running("antras", json!({})).await;
    app.stop_worker().await;
    let proxy = DockerProxy::start(&app.dir().join("docker.sock"));
    let a = worker_behind(&mut app, &proxy).await;

    proxy.hold("/stop?");
    let (status, body) = app.post(&format!("/v1/servers/{first}/stop"), json!({})).await;
    assert_eq!(status, 202, "{body}");
    let held_job = body["job"]["id"].as_str().unwrap().to_owned();
    proxy.wait_held().await;
    app.services[a].terminate();
    app.services[a].wait_for_log("stopped fetching jobs", WAIT).await;
    let (status, body) = app.post(&format!("/v1/servers/{second}/restart"), json!({})).await;
    assert_eq!(status, 202, "{body}");
    let queued_job = body["job"]["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(app.services[a].is_running(), "the worker waits for its job");

    proxy.release();
    let exit = app.services[a].exited(WAIT).await.expect("the worker exits");
    assert!(exit.success(), "{exit:?}");
    let job = app.wait_job(&held_job).await;
    assert_eq!((job["status"].as_str(), job["attempts"].as_i64()), (Some("succeeded"), Some(1)), "{job}");
    let (_, body) = app.get(&format!("/v1/jobs/{queued_job}")).await;
    assert_eq!(body["job"]["status"], "queued", "the stopping worker took no new job: {body}");

    app.start_worker().await;
    assert_eq!(app.wait_job(&queued_job).await["status"], "succeeded");
    app.teardown().await;
}

#[tokio::test]
async fn the_api_told_to_stop_answers_the_requests_it_holds() {
    let mut app = spawn_app().await;
    let id = app.create_running("atsakys", json!({})).await;
    let api = app.start_api_process().await;

    let (pending, _) = stop_held_in_publish(&app, id).await;
    app.services[api].terminate();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(app.services[api].is_running(), "the api waits for the request it holds");
    app.nats_server.thaw();
    let response = pending.await.unwrap().expect("the held request is answered");
    assert_eq!(response.status(), 202);
    let exit = app.services[api].exited(WAIT).await.expect("the api exits");
    assert!(exit.success(), "{exit:?}");
    app.teardown().await;
}

#[tokio::test]
async fn the_api_stops_draining_after_its_deadline_and_a_second_signal_exits_at_once() {
    // A publish that would wait 60 s: only the drain's deadline ends it sooner.
    let mut app = spawn_app_with(|s| {
        s.api.drain_timeout_secs = 1;
        s.nats.publish_timeout_ms = 60_000;
        s.api.request_timeout_secs = 120;
    })
    .await;
    let first = app.create_running("pirmas", json!({})).await;
    let second = app.create_running("antras", json!({})).await;

    let api = app.start_api_process().await;
    let (pending, _) = stop_held_in_publish(&app, first).await;
    app.services[api].terminate();
    let exit = app.services[api].exited(Duration::from_secs(20)).await.expect("the api exits at its drain deadline");
    assert!(exit.success(), "{exit:?}");
    assert!(pending.await.unwrap().is_err(), "the held request's connection was closed, not answered");
    app.nats_server.thaw();

    // A long drain, cut short by a second SIGTERM.
    let api = app.spawn_service("vsfleet-api", &[("VSFLEET_API__DRAIN_TIMEOUT_SECS", "600".into())]);
    app.wait_api_answers().await;
    let (pending, _) = stop_held_in_publish(&app, second).await;
    app.services[api].terminate();
    app.services[api].wait_for_log("a second SIGTERM or Ctrl-C exits at once", WAIT).await;
    assert!(app.services[api].is_running(), "the api drains: it holds a request");
    app.services[api].terminate();
    let exit = app.services[api].exited(Duration::from_secs(20)).await.expect("a second SIGTERM exits at once");
    assert_eq!(exit.code(), Some(vsfleet_contract::process::EXIT_FORCED), "{exit:?}");
    assert!(pending.await.unwrap().is_err());
    app.nats_server.thaw();
    app.teardown().await;
}
