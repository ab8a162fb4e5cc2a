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
