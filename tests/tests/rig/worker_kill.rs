//! A worker killed (`kill -9`) half way through a create, with the default
//! ack wait: the restarted worker finishes the job within a minute, with
//! exactly one container.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use vsfleet_tests::rig::{Rig, RigConfig, secs, wait_for};

use crate::timing;

#[tokio::test]
async fn a_worker_killed_mid_create_is_finished_by_its_restart_within_60_s() {
    let started = Instant::now();
    // Default nats.ack_wait_secs: not overridden here.
    let rig = Rig::start(RigConfig::default()).await;
    eprintln!("nats.ack_wait_secs = {}", rig.settings.nats.ack_wait_secs);

    // Starting a container hangs on host2, where the create is pinned, so
    // its worker stops half way: container created, not started.
    let h = 1;
    let host = rig.hosts[h].id.clone();
    rig.freeze_containerd(h, true).await;
    let (status, body) = rig.api.post("/v1/servers", json!({ "name": "pusiaukelė", "host": host })).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["server"]["host"], host.as_str(), "{body}");
    let id = body["server"]["id"].as_i64().unwrap();
    let job_id = body["job"]["id"].as_str().unwrap().to_owned();
    wait_for("the create is running", Duration::from_secs(30), || async {
        (rig.api.job(&job_id).await["status"] == "running").then_some(())
    })
    .await;
    let created = wait_for("the container is created", Duration::from_secs(30), || async {
        rig.containers(h).await.into_iter().find(|c| c.server_id == Some(id))
    })
    .await;
    assert_eq!(created.state, "created", "{created:?}");

    rig.kill_worker(h).await;
    let killed = Instant::now();
    rig.freeze_containerd(h, false).await;
    assert_eq!(rig.api.job(&job_id).await["status"], "running", "nobody reported the job");
    rig.start_worker(h).await;
    let job = rig.api.wait_job(&job_id, Duration::from_secs(120)).await;
    let done = secs(killed);
    eprintln!("create finished {done:.1} s after the kill: {job}");
    assert_eq!(job["status"], "succeeded", "{job}");
    assert!(done <= 60.0, "the restarted worker took {done:.1} s after the kill, more than 60 s");

    let mine: Vec<_> = rig.containers(h).await.into_iter().filter(|c| c.server_id == Some(id)).collect();
    assert_eq!(mine.len(), 1, "exactly one container: {mine:?}");
    assert_eq!(mine[0].id, created.id, "the container made before the kill is kept");
    rig.api.wait_status(id, "running", Duration::from_secs(30)).await;
    for (i, other) in rig.hosts.iter().enumerate() {
        if i != h {
            assert!(rig.containers(i).await.is_empty(), "nothing on {}", other.id);
        }
    }
    rig.assert_converged(Duration::from_secs(30)).await;
    rig.down().await;
    timing("a_worker_killed_mid_create_is_finished_by_its_restart_within_60_s", started);
}
