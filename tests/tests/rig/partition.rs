//! A host cut off the network for 30 s while jobs for it are in flight:
//! nothing runs twice to a different result, no server shows a wrong
//! state, and everything converges once it is back.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use vsfleet_tests::rig::{Rig, RigConfig, secs};

use crate::{Sampler, create_running, divergent, job_events, rerun, timing};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cut_off_for_30_s_converges_without_wrong_states() {
    let started = Instant::now();
    // The coming default ack wait, set here so the test does not depend on it.
    let rig = Rig::start(RigConfig::default().with(|s| s.nats.ack_wait_secs = 30)).await;
    let servers = create_running(&rig, 9, "atskirtas").await;
    let victim = servers[0].1.clone();
    let v = rig.host_index(&victim);
    let on_victim: Vec<i64> = servers.iter().filter(|(_, h)| *h == victim).map(|(id, _)| *id).collect();
    let elsewhere: Vec<i64> = servers.iter().filter(|(_, h)| *h != victim).map(|(id, _)| *id).collect();
    let [a, b, c] = on_victim[..] else { panic!("three servers per host: {servers:?}") };
    let sampler = Sampler::start(&rig.api);

    // Jobs in flight at the cut: the worker has started them and waits on
    // its Docker (containerd frozen) when the host goes off the network.
    rig.freeze_containerd(v, true).await;
    let mut jobs = Vec::new();
    for (id, action) in [(a, "stop"), (b, "restart")] {
        let (status, body) = rig.api.act(id, action).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        jobs.push((id, action, body["job"]["id"].as_str().unwrap().to_owned()));
    }
    for (_, _, job) in &jobs {
        let api = &rig.api;
        vsfleet_tests::rig::wait_for(&format!("job {job} is running"), Duration::from_secs(30), || async move {
            (api.job(job).await["status"] == "running").then_some(())
        })
        .await;
    }
    let cut = Instant::now();
    rig.disconnect_host(v).await;
    // The Docker work finishes while the worker cannot report it.
    rig.freeze_containerd(v, false).await;

    // While it is away: a job for it waits; the other hosts keep working.
    let (status, body) = rig.api.act(c, "stop").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    jobs.push((c, "stop", body["job"]["id"].as_str().unwrap().to_owned()));
    for id in &elsewhere[..2] {
        let (status, body) = rig.api.act(*id, "restart").await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        let job = rig.api.wait_job(body["job"]["id"].as_str().unwrap(), Duration::from_secs(30)).await;
        assert_eq!(job["status"], "succeeded", "a live host's job during the cut: {job}");
    }
    let dead = vsfleet_tests::rig::wait_for("the cut-off host is seen dead", Duration::from_secs(20), || async {
        (rig.api.server(a).await["host_alive"] == false).then(|| secs(cut))
    })
    .await;
    eprintln!("host {victim} cut off: host_alive false after {dead:.1} s");
    for (id, action, job) in &jobs {
        let job = rig.api.job(job).await;
        assert!(
            matches!(job["status"].as_str(), Some("queued" | "running")),
            "{action} of {id} cannot have finished while its host is cut off: {job}"
        );
    }
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(cut.elapsed())).await;

    let back = Instant::now();
    rig.connect_host(v).await;
    for (n, (id, action, job)) in jobs.iter().enumerate() {
        let job = rig.api.wait_job(job, Duration::from_secs(120)).await;
        assert_eq!(job["status"], "succeeded", "{action} of {id}: {job}");
        eprintln!("{action} of {id}: {} attempts, recorded {:.1} s after reconnect", job["attempts"], secs(back));
        if n == 0 {
            // The owner acts at once on what the API says: the stopped server
            // is started again. Nothing that ran before may undo it.
            let (status, body) = rig.api.act(a, "start").await;
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
            let start = rig.api.wait_job(body["job"]["id"].as_str().unwrap(), Duration::from_secs(60)).await;
            assert_eq!(start["status"], "succeeded", "{start}");
            eprintln!("start of {a} done {:.1} s after reconnect", secs(back));
        }
    }
    eprintln!("host {victim} back: its jobs done after {:.1} s", secs(back));
    rig.wait_host_alive(v, Duration::from_secs(30)).await;
    rig.wait_jobs_done(Duration::from_secs(60)).await;
    rig.api.wait_status(a, "running", Duration::from_secs(30)).await;
    rig.api.wait_status(b, "running", Duration::from_secs(30)).await;
    rig.api.wait_status(c, "stopped", Duration::from_secs(30)).await;
    rig.assert_converged(Duration::from_secs(30)).await;
    // Deliveries lost while it was away come back after the ack wait: the
    // verdict waits until nothing is left to run again on the host.
    let drained = Instant::now();
    rig.wait_consumer_drained(v, Duration::from_secs(120)).await;
    eprintln!("host {victim}'s jobs consumer drained {:.1} s after convergence", secs(drained));
    rig.assert_converged(Duration::from_secs(30)).await;
    let last = [(a, "running"), (b, "running"), (c, "stopped")];
    for (id, want) in last {
        let server = rig.api.server(id).await;
        assert_eq!(server["status"], want, "server {id} after every delivery ran: {server}");
    }
    for (id, action, job) in &jobs {
        let job = rig.api.job(job).await;
        assert_eq!(job["status"], "succeeded", "{action} of {id} after the drain: {job}");
        eprintln!("{action} of {id}: {} attempts in the end", job["attempts"]);
    }
    let seen = sampler.finish().await;

    // No wrong state on the way: each server went exactly where its jobs lead.
    for (id, path) in [(a, &["running", "stopped", "running"][..]), (b, &["running"]), (c, &["running", "stopped"])]
        .into_iter()
        .chain(elsewhere.iter().map(|id| (*id, &["running"][..])))
    {
        let seen = seen.get(&id).cloned().unwrap_or_default();
        assert_eq!(seen, path, "server {id} went through {seen:?}");
    }
    let events = job_events(&rig).await;
    let wrong = divergent(&events);
    assert!(wrong.is_empty(), "{wrong:#?}");
    eprintln!("jobs run more than once: {}; statuses seen: {seen:?}", rerun(&events));
    rig.down().await;
    timing("a_host_cut_off_for_30_s_converges_without_wrong_states", started);
}
