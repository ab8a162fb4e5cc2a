//! At-least-once delivery: jobs delivered twice, jobs published by hand,
//! jobs committed but never published.

use bytes_free::publish_with_id;
use chrono::Utc;
use serde_json::json;
use vsfleet_api::jobs::{Job, NewJob};
use vsfleet_contract::{Action, JobId};

use crate::helpers::{eventually, spawn_app};

mod bytes_free {
    use async_nats::jetstream;

    /// Publishes on JetStream with the given `Nats-Msg-Id` and returns
    /// whether JetStream dropped it as a duplicate.
    pub async fn publish_with_id(js: &jetstream::Context, subject: String, msg_id: &str, payload: String) -> bool {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
        let ack = js.publish_with_headers(subject, headers, payload.into()).await.unwrap().await.unwrap();
        ack.duplicate
    }
}

#[tokio::test]
async fn a_job_delivered_twice_leaves_one_container() {
    let app = spawn_app().await;
    let id = app.create_running("dvigubas", json!({})).await;
    let container = app.inspect(id).await.unwrap().id.unwrap();
    let (job_id, payload): (String, String) =
        sqlx::query_as("SELECT id, payload FROM jobs WHERE server_id = $1 AND action = 'create'")
            .bind(id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    let subject = format!("{}.jobs.{}.create", app.prefix(), app.host());

    // The same message id again: JetStream drops it.
    assert!(publish_with_id(&app.js, subject.clone(), &job_id, payload.clone()).await, "dedup did not drop the repeat");

    // The same job under new message ids, as a redelivery after a lost ack
    // would bring it: the worker runs create twice more.
    for n in 0..2 {
        assert!(!publish_with_id(&app.js, subject.clone(), &format!("{job_id}-again-{n}"), payload.clone()).await);
    }
    app.wait_jobs_drained().await;

    assert_eq!(app.our_containers().await, vec![container.clone()], "a repeated create made another container");
    let c = app.inspect(id).await.unwrap();
    assert_eq!(c.state.unwrap().running, Some(true));
    let server = app.server(id).await;
    assert_eq!(
        (server["status"].as_str(), server["container_id"].as_str()),
        (Some("running"), Some(container.as_str()))
    );
    let (count,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM jobs WHERE server_id = $1").bind(id).fetch_one(&app.db).await.unwrap();
    assert_eq!(count, 1, "the repeats are the same job, not new ones");
    app.teardown().await;
}

#[tokio::test]
async fn a_job_published_by_hand_runs_and_shows_in_the_api() {
    let app = spawn_app().await;
    let id = app.create_running("rankinis", json!({})).await;

    // Exactly what `nats pub <prefix>.jobs.<host>.stop '{"server_id": N}'` sends.
    let subject = format!("{}.jobs.{}.stop", app.prefix(), app.host());
    app.nats.publish(subject, format!(r#"{{"server_id": {id}}}"#).into()).await.unwrap();
    app.nats.flush().await.unwrap();

    app.wait_status(id, "stopped").await;
    assert_eq!(app.inspect(id).await.unwrap().state.unwrap().running, Some(false));
    let job = eventually("the hand-published job is recorded as finished", || async {
        let (_, body) = app.get(&format!("/v1/servers/{id}/jobs")).await;
        body["jobs"].as_array()?.iter().find(|j| j["action"] == "stop" && j["status"] == "succeeded").cloned()
    })
    .await;
    assert_eq!(job["origin"], "nats");
    assert_eq!(job["attempts"], 1);
    assert!(job["requested_by"].is_null());
    app.teardown().await;
}

#[tokio::test]
async fn a_committed_job_that_was_never_published_is_published_by_the_outbox() {
    let app = spawn_app().await;
    let id = app.create_running("užmirštas", json!({})).await;

    // The api died between commit and publish: the row exists, no message does.
    let job_id = JobId::new();
    let payload = json!({ "server_id": id, "job_id": job_id }).to_string();
    let job = Job::queued(NewJob {
        id: job_id,
        server_id: vsfleet_contract::ServerId::new(id).unwrap(),
        action: Action::Stop,
        host: app.host().to_owned(),
        origin: "api",
        payload,
        requested_by: None,
        created_at: Utc::now() - chrono::Duration::seconds(5),
    });
    app.api_db().write(move |tx| Box::pin(async move { tx.insert_jobs(&[&job]).await })).await.unwrap();

    let job = app.wait_job(&job_id.to_string()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert!(!job["published_at"].is_null());
    app.wait_status(id, "stopped").await;
    app.teardown().await;
}
