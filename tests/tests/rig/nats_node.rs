//! One nats-server node of three (the jobs stream's leader) killed during a
//! stream of 200 lifecycle requests: with replicated streams every accepted
//! job ends.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use reqwest::StatusCode;
use serde_json::json;
use vsfleet_tests::rig::{Rig, RigConfig, secs};

use crate::{create_running, next_action, timing};

const REQUESTS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_node_killed_during_200_requests_loses_no_job() {
    let started = Instant::now();
    let rig = Rig::start(RigConfig::default()).await;
    rig.require("nats.replicas");
    let js = async_nats::jetstream::new(rig.nats_client().await);
    for stream in ["jobs", "events", "schedule", "dead"]
        .map(|s| format!("{}_{s}", rig.prefix()))
        .into_iter()
        .chain([format!("KV_{}_hosts", rig.prefix())])
    {
        let mut s = js.get_stream(&stream).await.unwrap_or_else(|e| panic!("{stream}: {e}"));
        let replicas = s.info().await.unwrap().config.num_replicas;
        assert_eq!(replicas, 3, "{stream} has {replicas} replicas");
    }
    let mut servers: Vec<i64> = create_running(&rig, 6, "srautas").await.into_iter().map(|(id, _)| id).collect();
    // The node that leads the jobs stream goes: its raft group must elect
    // another leader while jobs are published and consumed.
    let mut jobs_stream = js.get_stream(format!("{}_jobs", rig.prefix())).await.unwrap();
    let leader = jobs_stream.info().await.unwrap().cluster.as_ref().and_then(|c| c.leader.clone());
    let victim = rig.nats.iter().position(|n| Some(&n.name) == leader.as_ref()).expect("the jobs stream has a leader");
    let api_node = rig.nats_node_of("vsfleet-api").await;
    eprintln!(
        "victim {} (jobs stream leader); the api is connected to {:?}",
        rig.nats[victim].name,
        api_node.map(|i| &rig.nats[i].name)
    );

    let seed = chrono::Utc::now().timestamp_micros() as u64;
    eprintln!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut accepted: Vec<(String, i64, String)> = Vec::new();
    let mut last_job: std::collections::HashMap<i64, String> = std::collections::HashMap::new();
    let (mut refused, mut conflicts) = (0, 0);
    let mut killed: Option<Instant> = None;
    let mut first_after_kill: Option<f64> = None;
    while accepted.len() < REQUESTS {
        // A fifth of the way in.
        if killed.is_none() && accepted.len() >= REQUESTS / 5 {
            rig.kill_nats(victim).await;
            killed = Some(Instant::now());
            eprintln!("killed nats node {} after {} accepted requests", rig.nats[victim].name, accepted.len());
        }
        let (status, body, server, action) = if servers.len() < 18 && rng.random_ratio(1, 8) {
            let name = format!("srautas{}", 100 + accepted.len());
            let (status, body) = rig.api.post("/v1/servers", json!({ "name": name })).await;
            let id = body["server"]["id"].as_i64().unwrap_or_default();
            (status, body, id, "create")
        } else {
            let id = servers[rng.random_range(0..servers.len())];
            // One job at a time per server: skip one whose last job runs.
            if let Some(job) = last_job.get(&id)
                && !matches!(rig.api.job(job).await["status"].as_str(), Some("succeeded" | "failed"))
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            let current = rig.api.server(id).await;
            let Some(action) = next_action(current["status"].as_str().unwrap_or_default(), rng.random()) else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let (status, body) = rig.api.act(id, action).await;
            (status, body, id, action)
        };
        match status {
            StatusCode::ACCEPTED => {
                if action == "create" {
                    servers.push(server);
                }
                if let (Some(at), None) = (killed, first_after_kill) {
                    first_after_kill = Some(secs(at));
                }
                let job = body["job"]["id"].as_str().unwrap().to_owned();
                last_job.insert(server, job.clone());
                accepted.push((job, server, action.to_owned()));
            }
            StatusCode::CONFLICT => conflicts += 1,
            StatusCode::SERVICE_UNAVAILABLE => refused += 1,
            other => panic!("{action} of {server}: unexpected {other}: {body}"),
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..40))).await;
    }
    let requested = secs(started);

    let (mut succeeded, mut failed) = (0, 0);
    for (job_id, server, action) in &accepted {
        let job = rig.api.wait_job(job_id, Duration::from_secs(180)).await;
        match job["status"].as_str() {
            Some("succeeded") => succeeded += 1,
            _ => {
                assert!(
                    !job["error"].as_str().unwrap_or_default().is_empty(),
                    "{action} of {server} failed without a reason: {job}"
                );
                failed += 1;
            }
        }
    }
    eprintln!(
        "{} accepted ({succeeded} succeeded, {failed} failed with a reason), {refused} refused with 503, \
         {conflicts} conflicts; first 202 {:.2} s after the kill; all requests in {requested:.1} s",
        accepted.len(),
        first_after_kill.unwrap_or(f64::NAN)
    );
    rig.assert_converged(Duration::from_secs(60)).await;
    // The node comes back and rejoins.
    rig.start_nats_node(victim).await;
    rig.down().await;
    timing("a_nats_node_killed_during_200_requests_loses_no_job", started);
}
