//! A whole host killed (`docker kill`: dockerd, worker and servers at once)
//! and started again.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use vsfleet_tests::rig::{Rig, RigConfig, secs};

use crate::{HEARTBEAT, create_running, timing};

#[tokio::test]
async fn a_killed_host_is_seen_dead_its_jobs_wait_and_run_when_it_returns() {
    let started = Instant::now();
    let rig = Rig::start(RigConfig::default()).await;
    let servers = create_running(&rig, 6, "mirtis").await;
    let victim = servers[0].1.clone();
    let v = rig.host_index(&victim);
    let on_victim: Vec<i64> = servers.iter().filter(|(_, h)| *h == victim).map(|(id, _)| *id).collect();
    let elsewhere: Vec<i64> = servers.iter().filter(|(_, h)| *h != victim).map(|(id, _)| *id).collect();
    assert!(on_victim.len() >= 2, "{servers:?}");
    for id in on_victim.iter().chain(&elsewhere) {
        let server = rig.api.server(*id).await;
        assert_eq!(server["host_alive"], true, "before the kill: {server}");
    }

    // Dead within three heartbeats.
    let killed = Instant::now();
    rig.kill_host(v).await;
    let mut seen_dead = std::collections::BTreeMap::new();
    while seen_dead.len() < on_victim.len() {
        assert!(killed.elapsed() < Duration::from_secs(30), "host_alive still not false after 30 s: {seen_dead:?}");
        for id in &on_victim {
            if !seen_dead.contains_key(id) && rig.api.server(*id).await["host_alive"] == false {
                seen_dead.insert(*id, secs(killed));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Three heartbeats, counted as the api counts a heartbeat's age (whole
    // seconds: up to 1 s more), plus 1 s for `docker kill` and the polling.
    let dead_after = seen_dead.values().cloned().fold(0.0, f64::max);
    eprintln!("host {victim} killed: host_alive false after {dead_after:.2} s (heartbeat {HEARTBEAT:?})");
    let bound = 3 * HEARTBEAT + Duration::from_secs(2);
    assert!(
        dead_after <= bound.as_secs_f64(),
        "host_alive false only after {dead_after:.2} s, more than three heartbeats ({bound:?} with rounding and polling)"
    );
    for id in &elsewhere {
        assert_eq!(rig.api.server(*id).await["host_alive"], true, "server {id} on a live host");
    }

    // A stop for a server of the dead host is accepted with a warning, and waits.
    let waiting = on_victim[0];
    let (status, body) = rig.api.act(waiting, "stop").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let warning = body["warning"].as_str().unwrap_or_default();
    assert!(!warning.is_empty(), "a 202 for a server of a dead host carries a warning: {body}");
    eprintln!("warning: {warning}");
    let stop_job = body["job"]["id"].as_str().unwrap().to_owned();
    // A live host's 202 carries none.
    let (status, body) = rig.api.act(elsewhere[0], "stop").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert!(body.get("warning").is_none_or(|w| w.is_null()), "no warning for a live host: {body}");
    let live_stop = body["job"]["id"].as_str().unwrap().to_owned();
    assert_eq!(rig.api.wait_job(&live_stop, Duration::from_secs(30)).await["status"], "succeeded");

    // The other hosts keep working: a new server lands on a live host.
    let (status, body) = rig.api.post("/v1/servers", json!({ "name": "naujokas" })).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let new_host = body["server"]["host"].as_str().unwrap().to_owned();
    assert_ne!(new_host, victim, "a server was placed on the dead host: {body}");
    let job = rig.api.wait_job(body["job"]["id"].as_str().unwrap(), Duration::from_secs(60)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let new_id = body["server"]["id"].as_i64().unwrap();
    let placed = rig.containers(rig.host_index(&new_host)).await;
    assert!(placed.iter().any(|c| c.server_id == Some(new_id) && c.state == "running"), "{placed:?}");

    // The stop still waits for its host.
    tokio::time::sleep(3 * HEARTBEAT).await;
    let job = rig.api.job(&stop_job).await;
    assert_eq!(job["status"], "queued", "the stop waits for its host: {job}");
    assert_eq!(rig.api.server(waiting).await["status"], "running", "nothing has happened to it yet");

    // The host comes back: dockerd restarts its servers, the worker runs the stop.
    let restarted = Instant::now();
    rig.start_host(v).await;
    let job = rig.api.wait_job(&stop_job, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    eprintln!("host {victim} started again: its queued stop done after {:.1} s", secs(restarted));
    rig.wait_host_alive(v, Duration::from_secs(30)).await;
    rig.api.wait_status(waiting, "stopped", Duration::from_secs(30)).await;
    for id in &on_victim[1..] {
        let server = rig.api.wait_status(*id, "running", Duration::from_secs(30)).await;
        assert_eq!(server["host_alive"], true, "{server}");
    }
    rig.assert_converged(Duration::from_secs(30)).await;
    rig.down().await;
    timing("a_killed_host_is_seen_dead_its_jobs_wait_and_run_when_it_returns", started);
}
