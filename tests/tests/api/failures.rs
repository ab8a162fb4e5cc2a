//! Jobs that cannot succeed: poison is buried in the dead-letter stream,
//! and a create that fails leaves the server `failed` with its reason.

use serde_json::json;
use vsfleet_worker::dead;

use crate::helpers::{eventually, spawn_app, spawn_app_with};

#[tokio::test]
async fn poison_jobs_are_buried_in_the_dead_letter_stream_with_their_reason() {
    let app = spawn_app().await;
    let not_json = format!("{}.jobs.{}.stop", app.prefix(), app.host());
    let unknown_action = format!("{}.jobs.{}.reboot", app.prefix(), app.host());
    app.js.publish(not_json.clone(), "stop server 7 please".into()).await.unwrap().await.unwrap();
    app.js.publish(unknown_action.clone(), r#"{"server_id": 7}"#.into()).await.unwrap().await.unwrap();

    let stream = app.js.get_stream(format!("{}_dead", app.prefix())).await.unwrap();
    eventually("both are buried", || async { (stream.get_info().await.ok()?.state.messages == 2).then_some(()) }).await;
    app.wait_jobs_drained().await;
    let mut buried = Vec::new();
    for seq in 1..=2 {
        let letter = stream.get_raw_message(seq).await.unwrap();
        let header = |name: &str| letter.headers.get(name).map(|v| v.as_str().to_owned()).unwrap_or_default();
        assert_eq!(letter.subject.as_str(), format!("{}.dead.{}.unknown", app.prefix(), app.host()));
        buried.push((
            header(dead::ORIGINAL_SUBJECT),
            header(dead::REASON),
            String::from_utf8_lossy(&letter.payload).into_owned(),
        ));
    }
    buried.sort();
    assert_eq!(buried[0].0, unknown_action);
    assert!(buried[0].1.contains("unknown action \"reboot\""), "{buried:?}");
    assert_eq!(buried[0].2, r#"{"server_id": 7}"#);
    assert_eq!(buried[1].0, not_json);
    assert!(buried[1].1.starts_with("not a job payload"), "{buried:?}");
    assert_eq!(buried[1].2, "stop server 7 please");
    app.teardown().await;
}

#[tokio::test]
async fn a_create_that_cannot_succeed_fails_the_server_with_its_reason() {
    let app = spawn_app_with(|s| s.worker.image = "vsfleet-no-such-image:latest".into()).await;
    let (status, body) = app.post("/v1/servers", json!({ "name": "nepavyks" })).await;
    assert_eq!(status, 202, "{body}");
    let id = body["server"]["id"].as_i64().unwrap();
    let job = app.wait_job(body["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 1, "a missing image is not retried: {job}");
    assert!(job["error"].as_str().unwrap().contains("vsfleet-no-such-image"), "{job}");
    let server = app.wait_status(id, "failed").await;
    assert!(server["last_error"].as_str().unwrap().contains("vsfleet-no-such-image"), "{server}");
    assert!(app.our_containers().await.is_empty());
    // Failed is not a dead end: delete is allowed.
    assert_eq!(app.act(id, "delete").await["status"], "succeeded");
    app.teardown().await;
}

#[tokio::test]
async fn a_job_that_keeps_failing_transiently_is_buried_after_its_last_delivery() {
    let app = spawn_app_with(|s| {
        s.nats.max_deliver = 2;
        s.worker.retry_attempts = 2;
        s.worker.retry_max_ms = 500;
    })
    .await;
    let id = app.create_running("nepasiduoda", json!({})).await;
    // The busybox stand-in has no inner Docker: its prune fails inside the
    // server, which is a failure worth retrying (a daemon may be starting).
    let job = app.act(id, "cleanup").await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 2, "{job}");
    assert!(job["error"].as_str().unwrap().contains("gave up after 2 attempts"), "{job}");

    let stream = app.js.get_stream(format!("{}_dead", app.prefix())).await.unwrap();
    eventually("it is buried", || async { (stream.get_info().await.ok()?.state.messages == 1).then_some(()) }).await;
    let letter = stream.get_raw_message(1).await.unwrap();
    let header = |name: &str| letter.headers.get(name).map(|v| v.as_str().to_owned()).unwrap_or_default();
    assert_eq!(letter.subject.as_str(), format!("{}.dead.{}.cleanup", app.prefix(), app.host()));
    assert_eq!(header(dead::ORIGINAL_SUBJECT), format!("{}.jobs.{}.cleanup", app.prefix(), app.host()));
    assert_eq!(header(dead::DELIVERIES), "2");
    assert!(header(dead::REASON).contains("gave up after 2 attempts"), "{}", header(dead::REASON));
    let payload: serde_json::Value = serde_json::from_slice(&letter.payload).unwrap();
    assert_eq!(payload["job_id"], job["id"], "the body is the job as it was published");
    app.wait_jobs_drained().await;
    assert_eq!(app.server(id).await["status"], "running", "a failed cleanup leaves the server as it was");
    app.teardown().await;
}

#[tokio::test]
async fn a_job_whose_worker_vanished_fails_at_its_deadline_and_never_runs_late() {
    let mut app = spawn_app_with(|s| {
        s.api.deadlines.delete = 3;
        s.api.watchdog_interval_ms = 200;
    })
    .await;
    let id = app.create_running("istrigus", json!({})).await;
    app.stop_worker().await;
    let (status, body) =
        app.call(reqwest::Method::DELETE, &format!("/v1/servers/{id}"), Some(&app.admin_token.clone()), None).await;
    assert_eq!(status, 202, "{body}");
    let job_id = body["job"]["id"].as_str().unwrap().to_owned();
    assert_eq!(app.server(id).await["status"], "deleting");

    let job = app.wait_job(&job_id).await;
    assert_eq!(job["status"], "failed", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(error.contains("deadline exceeded") && error.contains("queued"), "{job}");
    let server = app.wait_status(id, "failed").await;
    assert!(server["last_error"].as_str().unwrap().contains("deadline exceeded"), "{server}");

    // The worker comes back and receives the stale job: it must not act.
    app.start_worker().await;
    app.wait_jobs_drained().await;
    assert!(app.data_root().join(id.to_string()).join("apps").is_dir(), "the stale delete did not archive");
    assert!(app.inspect(id).await.is_some(), "the stale delete did not remove the container");
    let (_, body) = app.get(&format!("/v1/jobs/{job_id}")).await;
    assert_eq!(body["job"]["error"], job["error"], "the watchdog's reason stands: {body}");

    // Nothing is stuck: the next request is accepted and runs.
    assert_eq!(app.act(id, "delete").await["status"], "succeeded");
    app.wait_status(id, "deleted").await;
    app.teardown().await;
}
