//! Failover across hosts, on the multi-host rig (`vsfleet_tests::rig`):
//! three Docker-in-Docker worker hosts and a three-node NATS cluster in
//! containers, the api and the scheduler as processes. One rig per test;
//! the nextest profile (`.config/nextest.toml`) runs these tests one at a
//! time and alone. Skip them by name: `cargo nextest run -E 'not binary(rig)'`.
//! They need `vsfleet-dind-test:latest` (`scripts/build-dind-image`) and
//! `vsfleet-test-server:latest` (`scripts/build-test-image`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use vsfleet_tests::rig::{Api, Rig};

mod host_death;
mod nats_node;
mod partition;
mod rolling;
mod spread;
mod worker_kill;

/// `worker.heartbeat_secs` of the rig.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// Creates `n` servers (placed by the api) and waits until each is running;
/// returns (id, host).
pub async fn create_running(rig: &Rig, n: usize, name: &str) -> Vec<(i64, String)> {
    let mut accepted = Vec::new();
    for i in 0..n {
        let (status, body) = rig.api.post("/v1/servers", json!({ "name": format!("{name}{i}") })).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        let id = body["server"]["id"].as_i64().unwrap();
        let host = body["server"]["host"].as_str().unwrap().to_owned();
        accepted.push((id, host, body["job"]["id"].as_str().unwrap().to_owned()));
    }
    for (id, _, job) in &accepted {
        let job = rig.api.wait_job(job, Duration::from_secs(120)).await;
        assert_eq!(job["status"], "succeeded", "create of {id}: {job}");
    }
    accepted.into_iter().map(|(id, host, _)| (id, host)).collect()
}

/// A valid next action for a server in `status` (none while a job is in flight).
pub fn next_action(status: &str, roll: u32) -> Option<&'static str> {
    match status {
        "running" => Some(if roll.is_multiple_of(4) { "restart" } else { "stop" }),
        "stopped" | "missing" | "failed" => Some("start"),
        _ => None,
    }
}

/// Every status each server showed in `GET /v1/servers`, sampled every
/// 200 ms until stopped, in order (repeats collapsed).
pub struct Sampler {
    seen: Arc<Mutex<BTreeMap<i64, Vec<String>>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    pub fn start(api: &Api) -> Self {
        let seen: Arc<Mutex<BTreeMap<i64, Vec<String>>>> = Arc::default();
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (api, seen, stop) = (api.clone(), seen.clone(), stop.clone());
            async move {
                while !stop.is_cancelled() {
                    if let Ok((StatusCode::OK, body)) = api.try_call(reqwest::Method::GET, "/v1/servers", None).await {
                        let mut seen = seen.lock().unwrap();
                        for server in body["servers"].as_array().into_iter().flatten() {
                            let (Some(id), Some(status)) = (server["id"].as_i64(), server["status"].as_str()) else {
                                continue;
                            };
                            let list = seen.entry(id).or_default();
                            if list.last().map(String::as_str) != Some(status) {
                                list.push(status.to_owned());
                            }
                        }
                    }
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
            }
        });
        Self { seen, stop, task }
    }

    pub async fn finish(self) -> BTreeMap<i64, Vec<String>> {
        self.stop.cancel();
        let _ = self.task.await;
        self.seen.lock().unwrap().clone()
    }
}

/// Each job's events, by job id: (phase, attempt, observed container), in stream order.
pub type JobEvents = HashMap<String, Vec<(String, u64, Option<String>)>>;

/// Every job event in the events stream.
pub async fn job_events(rig: &Rig) -> JobEvents {
    let client = rig.nats_client().await;
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream(format!("{}_events", rig.prefix())).await.expect("the events stream");
    let info = stream.get_info().await.unwrap();
    let mut out = JobEvents::new();
    for seq in info.state.first_sequence..=info.state.last_sequence {
        let Ok(message) = stream.get_raw_message(seq).await else { continue };
        if !message.subject.ends_with(".job") {
            continue;
        }
        let Ok(event) = serde_json::from_slice::<Value>(&message.payload) else { continue };
        let Some(job) = event["job_id"].as_str() else { continue };
        out.entry(job.to_owned()).or_default().push((
            event["phase"].as_str().unwrap_or_default().to_owned(),
            event["attempt"].as_u64().unwrap_or_default(),
            event["observed"]["container"].as_str().map(str::to_owned),
        ));
    }
    out
}

/// Jobs whose successful runs saw different outcomes (a job run twice to a
/// different result), with what each run saw.
pub fn divergent(events: &JobEvents) -> Vec<String> {
    let mut found = Vec::new();
    for (job, list) in events {
        let outcomes: BTreeSet<&Option<String>> =
            list.iter().filter(|(phase, _, _)| phase == "succeeded").map(|(_, _, c)| c).collect();
        if outcomes.len() > 1 {
            found.push(format!("job {job} succeeded with different outcomes: {list:?}"));
        }
    }
    found
}

/// Jobs that were started more than once (redelivered), for the report.
pub fn rerun(events: &JobEvents) -> usize {
    events.values().filter(|list| list.iter().filter(|(p, _, _)| p == "started").count() > 1).count()
}

/// Prints how long a test took (nextest shows it too).
pub fn timing(name: &str, started: Instant) {
    eprintln!("{name}: {:.1} s", started.elapsed().as_secs_f64());
}
