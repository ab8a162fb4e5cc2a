//! The operators' runbook (nats/README.md, "Operator commands"), performed
//! as the `operator` user through the requests the NATS CLI makes for each
//! command, with the runbook's names: the CLI itself cannot be installed
//! here. Each step names the command it stands for.

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use serde_json::{Value, json};
use vsfleet_contract::dead::{self, DeadLetter};

use crate::helpers::{eventually, spawn_app};

#[tokio::test]
async fn every_runbook_command_works_for_the_operator() {
    let mut app = spawn_app().await;
    let (p, host) = (app.prefix().to_owned(), app.host().to_owned());
    let id = app.create_running("vadovas", json!({})).await;
    let (nc, errors) = app.connect_as("operator").await;
    let js = jetstream::new(nc.clone());

    // nats stream ls
    let names: Vec<String> = js.stream_names().map(|n| n.unwrap()).collect().await;
    for stream in ["jobs", "events", "schedule", "dead"] {
        assert!(names.contains(&format!("{p}_{stream}")), "{stream} in {names:?}");
    }
    // nats kv ls vs_hosts; nats kv get vs_hosts host1
    let hosts = js.get_key_value(format!("{p}_hosts")).await.unwrap();
    let keys: Vec<String> = hosts.keys().await.unwrap().map(|k| k.unwrap()).collect().await;
    assert!(keys.contains(&host), "{keys:?}");
    let presence: Value = serde_json::from_slice(&hosts.get(&host).await.unwrap().unwrap()).unwrap();
    assert_eq!(presence["host"], host.as_str());

    // nats pub vs.jobs.host1.stop '{"server_id": 42}', while no worker runs
    app.stop_worker().await;
    nc.publish(format!("{p}.jobs.{host}.stop"), json!({ "server_id": id }).to_string().into()).await.unwrap();
    nc.flush().await.unwrap();
    // nats consumer info vs_jobs worker-host1: the job waits
    let jobs = js.get_stream(format!("{p}_jobs")).await.unwrap();
    let consumer_name = format!("worker-{host}");
    let pending = || async { jobs.consumer_info(&consumer_name).await.ok().map(|i| i.num_pending) };
    eventually("the job waits for host1", || async { (pending().await? == 1).then_some(()) }).await;
    // nats stream view vs_jobs: a work queue is paged with direct gets
    let first = jobs.clone().info().await.unwrap().state.first_sequence;
    let waiting = jobs.direct_get(first).await.unwrap();
    assert_eq!(waiting.subject.as_str(), format!("{p}.jobs.{host}.stop"));
    assert_eq!(serde_json::from_slice::<Value>(&waiting.payload).unwrap()["server_id"], id);
    assert_eq!(pending().await, Some(1), "viewing takes nothing off the queue");

    // nats sub 'vs.events.>' while the worker comes back and runs it
    let mut live = nc.subscribe(format!("{p}.events.>")).await.unwrap();
    app.start_worker().await;
    let seen = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(message) = live.next().await {
            let event: Value = serde_json::from_slice(&message.payload).unwrap_or_default();
            if event["server_id"] == id && event["action"] == "stop" && event["phase"] == "succeeded" {
                return true;
            }
        }
        false
    });
    assert!(seen.await.unwrap_or(false), "the stop's outcome shows live");
    assert_eq!(app.wait_status(id, "stopped").await["status"], "stopped");

    // nats stream view vs_events: an ordered consumer of the history
    let history = js.get_stream(format!("{p}_events")).await.unwrap();
    let viewer = history.create_consumer(consumer::pull::OrderedConfig::default()).await.unwrap();
    let mut messages = viewer.messages().await.unwrap();
    let first_event = messages.next().await.unwrap().unwrap();
    assert!(first_event.subject.as_str().starts_with(&format!("{p}.events.{host}.")));

    // A job out of deliveries, buried as a worker buries it.
    let original = format!("{p}.jobs.{host}.start");
    let buried = json!({
        "server_id": id,
        "job_id": uuid::Uuid::new_v4(),
        "deadline": "2026-01-01T00:00:00Z",
    });
    let letter = DeadLetter {
        subject: app.settings.subjects().dead(&host, "start"),
        original_subject: &original,
        reason: "failed on every delivery: docker unreachable",
        deliveries: Some(5),
        msg_id: None,
        payload: buried.to_string().into(),
    };
    dead::bury(&app.js, letter).await.unwrap();
    // nats stream view vs_dead; nats stream get vs_dead N --json (direct gets)
    let dead_letters = js.get_stream(format!("{p}_dead")).await.unwrap();
    let seq = dead_letters.clone().info().await.unwrap().state.last_sequence;
    let letter = dead_letters.direct_get(seq).await.unwrap();
    let header = |name: &str| letter.headers.get(name).map(|v| v.as_str().to_owned());
    assert_eq!(header(dead::ORIGINAL_SUBJECT).as_deref(), Some(original.as_str()));
    assert_eq!(header(dead::REASON).as_deref(), Some("failed on every delivery: docker unreachable"));
    // | jq -r .data | base64 -d | jq -c 'del(.job_id, .deadline)' | nats pub vs.jobs.host1.start --force-stdin
    let mut replay: Value = serde_json::from_slice(&letter.payload).unwrap();
    let fields = replay.as_object_mut().unwrap();
    fields.remove("job_id");
    fields.remove("deadline");
    nc.publish(original.clone(), replay.to_string().into()).await.unwrap();
    nc.flush().await.unwrap();
    assert_eq!(app.wait_status(id, "running").await["status"], "running");
    let (_, jobs_of) = app.get(&format!("/v1/servers/{id}/jobs")).await;
    assert_eq!(jobs_of["jobs"][0]["origin"], "nats", "the replay is a new job: {jobs_of}");
    // nats stream rmm vs_dead N, once handled
    assert!(dead_letters.delete_message(seq).await.unwrap());

    assert!(errors.all().is_empty(), "the operator was refused: {:?}", errors.all());

    // The read-only role reads the same, and may not enqueue.
    let (readonly, refused) = app.connect_as("readonly").await;
    let ro = jetstream::new(readonly.clone());
    let events = ro.get_stream(format!("{p}_events")).await.unwrap();
    let oldest = events.clone().info().await.unwrap().state.first_sequence;
    assert!(events.direct_get(oldest).await.is_ok(), "the read-only user reads the history");
    readonly.publish(format!("{p}.jobs.{host}.stop"), json!({ "server_id": id }).to_string().into()).await.unwrap();
    readonly.flush().await.unwrap();
    eventually("the read-only user is refused a job", || async {
        refused.all().iter().any(|e| e.contains("Permissions Violation") && e.contains(".jobs.")).then_some(())
    })
    .await;
    assert_eq!(app.server(id).await["status"], "running");
    app.teardown().await;
}
