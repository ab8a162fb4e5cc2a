//! The concurrency invariants the README promises, checked where they can
//! break: jobs for one server never overlap, even when a worker holds two
//! of them at once (the per-server `flock`), and a sync never rewrites a
//! server while a job for it is in flight (`reconcile::plan` skips busy
//! rows). Each test makes the overlap real first, then reads the outcome
//! from what the services recorded, not from the test's own timing. Last,
//! the visibility rule of the lifecycle checks seen from both sides: an
//! owner acts on their server, an admin on anyone's.

use std::os::fd::AsRawFd;

use async_nats::jetstream;
use bollard::query_parameters::{KillContainerOptions, StopContainerOptions};
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::json;
use vsfleet_contract::{Action, JobEvent, JobPhase};

use crate::helpers::{TestApp, eventually, spawn_app, spawn_app_with};

/// One job's run as its worker reported it on the events stream.
#[derive(Debug)]
struct Run {
    job_id: String,
    started: DateTime<Utc>,
    finished: Option<DateTime<Utc>>,
}

/// Every `action` job event of this test's host for server `id`, read back from the
/// `{prefix}_events` stream (limits retention: the api's consumer leaves
/// them there), folded into one run per job id, earliest start first.
async fn runs(app: &TestApp, id: i64, action: Action) -> Vec<Run> {
    let subjects = app.settings.subjects();
    let Ok(mut stream) = app.js.get_stream(subjects.events_stream()).await else { return Vec::new() };
    let Ok(info) = stream.info().await else { return Vec::new() };
    let last = info.state.last_sequence;
    let subject = subjects.job_events(app.host());
    let mut runs: Vec<Run> = Vec::new();
    for seq in 1..=last {
        let Ok(message) = stream.get_raw_message(seq).await else { continue };
        if message.subject.as_str() != subject {
            continue;
        }
        let event: JobEvent = serde_json::from_slice(&message.payload).expect("a job event");
        if event.server_id.as_i64() != id || event.action != action {
            continue;
        }
        let job_id = event.job_id.to_string();
        let index = match runs.iter().position(|r| r.job_id == job_id) {
            Some(index) => index,
            None => {
                runs.push(Run { job_id, started: event.at, finished: None });
                runs.len() - 1
            }
        };
        let run = &mut runs[index];
        match event.phase {
            JobPhase::Started => run.started = run.started.min(event.at),
            JobPhase::Succeeded { .. } | JobPhase::Failed { .. } => run.finished = Some(event.at),
        }
    }
    runs.sort_by_key(|r| r.started);
    runs
}

/// Jobs the worker has been handed and not yet acknowledged.
async fn jobs_held_by_the_worker(app: &TestApp) -> Option<usize> {
    let stream = app.js.get_stream(app.settings.subjects().jobs_stream()).await.ok()?;
    let mut consumer: jetstream::consumer::PullConsumer =
        stream.get_consumer(&app.settings.subjects().worker_consumer(app.host())).await.ok()?;
    Some(consumer.info().await.ok()?.num_ack_pending)
}

/// Publishes `{"server_id": id}` as an operator would with `nats pub`, under
/// its own message id so JetStream's dedup keeps every copy.
async fn publish_by_hand(app: &TestApp, id: i64, action: Action, msg_id: &str) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
    let subject = app.settings.subjects().job(app.host(), action);
    let payload = json!({ "server_id": id }).to_string();
    let ack = app.js.publish_with_headers(subject, headers, payload.into()).await.unwrap().await.unwrap();
    assert!(!ack.duplicate, "JetStream dropped {msg_id} as a duplicate");
}

#[tokio::test]
async fn two_jobs_for_one_server_delivered_together_never_run_at_once() {
    let app = spawn_app_with(|s| {
        s.worker.concurrency = 4;
        s.worker.stop_timeout_secs = 3;
    })
    .await;
    let id = app.create_running("lygiagretus", json!({})).await;
    // Freeze the server's PID 1 (Docker sends the signal from outside its
    // namespace, so init's protection does not apply): SIGTERM now goes
    // unanswered and a stop takes the whole grace period, then SIGKILL.
    let freeze = KillContainerOptions { signal: "SIGSTOP".into() };
    app.docker.kill_container(&app.container_name(id), Some(freeze)).await.unwrap();

    // Two copies of one slow stop, as a redelivery racing the original would
    // bring them, on a worker that runs four jobs at once.
    publish_by_hand(&app, id, Action::Stop, "overlap-1").await;
    publish_by_hand(&app, id, Action::Stop, "overlap-2").await;

    // The worker really holds both at once: the second was delivered while
    // the first had not been acknowledged.
    eventually("the worker holds both copies at once", || async {
        (jobs_held_by_the_worker(&app).await? == 2).then_some(())
    })
    .await;

    let runs = eventually("both copies report their outcome", || async {
        let runs = runs(&app, id, Action::Stop).await;
        (runs.len() == 2 && runs.iter().all(|r| r.finished.is_some())).then_some(runs)
    })
    .await;
    let (first, second) = (&runs[0], &runs[1]);
    let first_end = first.finished.unwrap();
    assert!(
        first_end - first.started >= chrono::Duration::seconds(2),
        "the first stop was not slow, so nothing could overlap it: {runs:?}"
    );
    assert!(
        second.started >= first_end,
        "the second job started {} ms before the first ended: {runs:?}",
        (first_end - second.started).num_milliseconds()
    );
    app.wait_status(id, "stopped").await;
    app.teardown().await;
}

/// The server's lock taken the way a worker takes it (an exclusive `flock`
/// on `{data_root}/.locks/{id}.lock`), as a long job for it would hold it.
/// Written here rather than borrowed from the worker, so a broken worker
/// lock cannot make this hold vacuous. Released on drop.
struct HeldLock {
    _file: std::fs::File,
}

impl HeldLock {
    /// Waits for the lock like a second job would: the worker's look at
    /// Docker's events (the container's start, just now) takes it briefly.
    async fn take(app: &TestApp, id: i64) -> Self {
        let dir = app.data_root().join(".locks");
        std::fs::create_dir_all(&dir).unwrap();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{id}.lock")))
            .unwrap();
        let fd = file.as_raw_fd();
        eventually("the server's lock is free", || async move {
            // SAFETY: flock on a valid, open descriptor owned by `file`, which outlives the wait.
            let rc = unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) };
            (rc == 0).then_some(())
        })
        .await;
        Self { _file: file }
    }
}

/// The last sync the api reconciled for this host, as `GET /v1/hosts` says.
async fn last_sync(app: &TestApp) -> Option<(DateTime<Utc>, u64)> {
    let (_, body) = app.get("/v1/hosts").await;
    let host = body["hosts"].as_array()?.iter().find(|h| h["host"] == app.host())?.clone();
    let at = host["last_sync"]["at"].as_str()?.parse().ok()?;
    Some((at, host["last_sync"]["changed"].as_u64()?))
}

#[tokio::test]
async fn a_sync_leaves_a_server_alone_while_its_job_is_in_flight() {
    let mut app = spawn_app().await;
    let id = app.create_running("užimtas", json!({})).await;
    let before = app.server(id).await;

    // A restart is accepted and handed to the worker, which waits for the
    // server's lock: the job is in flight and stays so until we let go.
    let held = HeldLock::take(&app, id).await;
    let (status, body) = app.post(&format!("/v1/servers/{id}/restart"), json!({})).await;
    assert_eq!(status, 202, "{body}");
    let job_id = body["job"]["id"].as_str().unwrap().to_owned();
    eventually("the worker holds the restart", || async { (jobs_held_by_the_worker(&app).await? == 1).then_some(()) })
        .await;

    // Behind vsfleet's back: the container stops. Docker's event stream
    // reports it under the same lock, so only a sync could touch the row.
    let stop = StopContainerOptions { t: Some(1), ..Default::default() };
    app.docker.stop_container(&app.container_name(id), Some(stop)).await.unwrap();
    assert_eq!(app.inspect(id).await.unwrap().state.unwrap().running, Some(false));
    let changed_at = Utc::now();

    // Force syncs: the scheduler asks every 500 ms. Wait until two taken
    // after the change have been reconciled.
    app.start_scheduler().await;
    let (first, _) = eventually("a sync taken after the change is reconciled", || async {
        last_sync(&app).await.filter(|(at, _)| *at > changed_at)
    })
    .await;
    let (_, changed) =
        eventually("a second sync is reconciled", || async { last_sync(&app).await.filter(|(at, _)| *at > first) })
            .await;
    assert_eq!(changed, 0, "the sync changed a row");
    let during = app.server(id).await;
    for field in ["status", "container_id", "data_exists", "updated_at", "last_error"] {
        assert_eq!(during[field], before[field], "{field} changed while the job was in flight: {during}");
    }
    let (_, job) = app.get(&format!("/v1/jobs/{job_id}")).await;
    assert_eq!(job["job"]["status"], "queued", "the job was not in flight during the syncs: {job}");

    // The job goes on, reports, and only its report moves the row.
    drop(held);
    let job = app.wait_job(&job_id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let after = app.wait_status(id, "running").await;
    assert_eq!(app.inspect(id).await.unwrap().state.unwrap().running, Some(true));
    assert!(after["updated_at"].as_str() > before["updated_at"].as_str(), "{after}");
    app.teardown().await;
}

#[tokio::test]
async fn users_act_on_their_own_servers_and_admins_on_everyones() {
    let app = spawn_app().await;
    let owner = app.create_user("owner@example.test").await;
    let (status, body) = app.call(Method::POST, "/v1/servers", Some(&owner), Some(json!({ "name": "nuosavas" }))).await;
    assert_eq!(status, 202, "{body}");
    let id = body["server"]["id"].as_i64().unwrap();
    assert_eq!(app.wait_job(body["job"]["id"].as_str().unwrap()).await["status"], "succeeded");

    // The owner, who is no admin, acts on their own server…
    let (status, body) = app.call(Method::POST, &format!("/v1/servers/{id}/stop"), Some(&owner), Some(json!({}))).await;
    assert_eq!(status, 202, "the owner was refused: {body}");
    assert_eq!(app.wait_job(body["job"]["id"].as_str().unwrap()).await["status"], "succeeded");
    // …and an admin, who does not own it, acts on it too.
    assert_eq!(app.act(id, "start").await["status"], "succeeded");
    app.wait_status(id, "running").await;
    app.teardown().await;
}

/// A job delivered again after a newer job for its server has run (its
/// worker was cut off between the work and the acknowledgement, as the
/// multi-host rig's partition test does for real) is dropped by the host's
/// fence: the newer job's outcome stands.
#[tokio::test]
async fn a_stale_redelivery_never_undoes_a_newer_job() {
    let app = spawn_app().await;
    let id = app.create_running("tvora", json!({})).await;
    let stop = app.act(id, "stop").await;
    assert_eq!(app.act(id, "start").await["status"], "succeeded");
    let (payload,): (String,) = sqlx::query_as("SELECT payload FROM jobs WHERE id = $1")
        .bind(stop["id"].as_str().unwrap())
        .fetch_one(&app.db)
        .await
        .unwrap();

    // The old stop, as JetStream would deliver it again (a new message id:
    // the original is still in the duplicate window).
    let (api, _) = app.connect_as("api").await;
    let subject = app.settings.subjects().job(app.host(), Action::Stop);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, uuid::Uuid::new_v4().to_string().as_str());
    jetstream::new(api).publish_with_headers(subject, headers, payload.into()).await.unwrap().await.unwrap();
    app.wait_jobs_drained().await;

    let running = app.inspect(id).await.unwrap().state.unwrap().running;
    assert_eq!(running, Some(true), "the stale stop ran");
    assert_eq!(app.server(id).await["status"], "running");
    let (_, job) = app.get(&format!("/v1/jobs/{}", stop["id"].as_str().unwrap())).await;
    assert_eq!(job["job"]["attempts"], stop["attempts"], "the stale delivery was recorded as a run: {job}");
    app.teardown().await;
}
