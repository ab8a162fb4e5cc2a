//! The api, then the scheduler, stopped and started again while jobs are in
//! flight: nothing is lost or stuck.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use vsfleet_tests::rig::{Rig, RigConfig, secs};

use crate::{create_running, timing};

/// Requests `action` for each server; returns the job ids.
async fn request_all(rig: &Rig, servers: &[i64], action: &str) -> Vec<String> {
    let mut jobs = Vec::new();
    for id in servers {
        let (status, body) = rig.api.act(*id, action).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{action} of {id}: {body}");
        jobs.push(body["job"]["id"].as_str().unwrap().to_owned());
    }
    jobs
}

#[tokio::test]
async fn a_rolling_restart_of_api_and_scheduler_loses_nothing() {
    let started = Instant::now();
    let mut rig = Rig::start(RigConfig::default()).await;
    let servers: Vec<i64> = create_running(&rig, 9, "ratas").await.into_iter().map(|(id, _)| id).collect();

    // The api stops with nine stops just accepted: their outcomes arrive
    // while it is down.
    let mut jobs = request_all(&rig, &servers, "stop").await;
    let stopping = Instant::now();
    rig.stop_api().await;
    eprintln!("api stopped in {:.1} s", secs(stopping));
    tokio::time::sleep(Duration::from_secs(3)).await;
    rig.start_api().await;
    eprintln!("api back {:.1} s after it was told to stop", secs(stopping));

    // The scheduler stops with nine starts in flight.
    jobs.extend(request_all(&rig, &servers, "start").await);
    let stopping = Instant::now();
    rig.stop_scheduler().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    rig.start_scheduler().await;
    eprintln!("scheduler back {:.1} s after it was told to stop", secs(stopping));

    for job in &jobs {
        let job = rig.api.wait_job(job, Duration::from_secs(120)).await;
        assert_eq!(job["status"], "succeeded", "{job}");
    }
    for id in &servers {
        rig.api.wait_status(*id, "running", Duration::from_secs(30)).await;
    }
    // The restarted scheduler's syncs reach every host.
    let restarted = chrono::Utc::now();
    vsfleet_tests::rig::wait_for("every host synced after the restarts", Duration::from_secs(30), || async {
        let hosts = rig.api.hosts().await;
        rig.hosts
            .iter()
            .all(|h| {
                hosts
                    .get(&h.id)
                    .and_then(|v| v["last_sync"]["at"].as_str())
                    .and_then(|at| at.parse::<chrono::DateTime<chrono::Utc>>().ok())
                    .is_some_and(|at| at > restarted)
            })
            .then_some(())
    })
    .await;
    rig.wait_jobs_done(Duration::from_secs(30)).await;
    rig.assert_converged(Duration::from_secs(30)).await;
    rig.down().await;
    timing("a_rolling_restart_of_api_and_scheduler_loses_nothing", started);
}
