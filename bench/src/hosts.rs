//! Across hosts, on the multi-host rig (`vsfleet_tests::rig`, release
//! binaries): lifecycle jobs per second end to end with three worker hosts
//! beside the same load on one host (the ratio is the scaling; all hosts
//! share this machine's cores), and the time from a host's death
//! (`docker kill`) to the API showing its servers `host_alive: false`,
//! beside the bound the heartbeat sets.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use vsfleet_tests::rig::{Api, Rig, RigConfig};

use crate::report::{Row, Spread, percentiles};

/// Servers in each run, and stop/start cycles of each.
const SERVERS: usize = 12;
const CYCLES: usize = 4;
const DEATHS: usize = 3;
const HEARTBEAT_SECS: u64 = 1;

fn bin_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::current_exe()?.parent().map(PathBuf::from).unwrap_or_default();
    for bin in ["vsfleet-api", "vsfleet-worker", "vsfleet-scheduler"] {
        anyhow::ensure!(dir.join(bin).exists(), "{} is missing: scripts/bench builds it", dir.join(bin).display());
    }
    Ok(dir)
}

fn config(hosts: usize) -> anyhow::Result<RigConfig> {
    let mut config = RigConfig::default().hosts(hosts).with(|s| s.worker.heartbeat_secs = HEARTBEAT_SECS);
    config.bin_dir = Some(bin_dir()?);
    Ok(config)
}

pub async fn run() -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let jobs = SERVERS * CYCLES * 2;
    eprintln!("hosts: {jobs} jobs over {SERVERS} servers on 3 hosts, then on 1; {DEATHS} host deaths");
    let rig = Rig::start(config(3)?).await;
    let three = throughput(&rig).await?;
    let (mut wait3, mut run3) = phases(&rig).await?;
    let deaths = deaths(&rig).await?;
    rig.down().await;
    let rig = Rig::start(config(1)?).await;
    let one = throughput(&rig).await?;
    let (mut wait1, mut run1) = phases(&rig).await?;
    rig.down().await;

    let load = format!("{SERVERS} servers × {CYCLES} stop/start cycles, worker.concurrency 4");
    rows.push(
        Row::new("hosts", "jobs/s end to end, 3 hosts (raw: 1 host)", &load, "jobs/s", three)
            .raw(one)
            .goal("3 hosts > 1 host", three > one),
    );
    for (what, three, one) in
        [("request → started", &mut wait3, &mut wait1), ("started → finished", &mut run3, &mut run1)]
    {
        let (median3, _) = percentiles(three);
        let (median1, _) = percentiles(one);
        rows.push(
            Row::new("hosts", format!("job {what}, median, 3 hosts (raw: 1 host)"), &load, "ms", median3)
                .raw(median1)
                .spread(Spread::of(three))
                .raw_spread(Spread::of(one)),
        );
    }
    let mut deaths = deaths;
    let (median, max) = percentiles(&mut deaths);
    let bound = ((3 + 1) * HEARTBEAT_SECS) as f64 * 1000.0;
    let load = format!("{DEATHS} kills, worker.heartbeat_secs {HEARTBEAT_SECS}");
    rows.push(
        Row::new("hosts", "docker kill → host_alive false, median", &load, "ms", median)
            .raw(bound)
            .spread(Spread::of(&mut deaths)),
    );
    rows.push(
        Row::new("hosts", "docker kill → host_alive false, max", &load, "ms", max)
            .raw(bound)
            .goal(format!("≤ 3 heartbeats (+1 s rounding) = {bound:.0} ms"), max <= bound + 500.0),
    );
    Ok(rows)
}

/// Creates the servers, then runs every server's stop/start cycles at once
/// (each server's jobs one after the other); jobs per second from the
/// first request to the last job recorded.
async fn throughput(rig: &Rig) -> anyhow::Result<f64> {
    let mut created = Vec::new();
    for n in 0..SERVERS {
        let (status, body) = rig.api.post("/v1/servers", json!({ "name": format!("greitis {n}") })).await;
        anyhow::ensure!(status == 202, "create: {body}");
        created.push((
            body["server"]["id"].as_i64().unwrap_or_default(),
            body["job"]["id"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    for (_, job) in &created {
        let job = rig.api.wait_job(job, Duration::from_secs(120)).await;
        anyhow::ensure!(job["status"] == "succeeded", "create: {job}");
    }
    let started = Instant::now();
    let tasks: Vec<_> = created
        .iter()
        .map(|(id, _)| {
            let (api, id) = (rig.api.clone(), *id);
            tokio::spawn(async move { cycles(&api, id).await })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let jobs = (SERVERS * CYCLES * 2) as f64;
    eprintln!("hosts: {} hosts, {jobs} jobs in {elapsed:.1} s", rig.hosts.len());
    Ok(jobs / elapsed)
}

/// Each stop and start job's time from request to start, and from start
/// to finish, from the api's rows.
async fn phases(rig: &Rig) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let rows: Vec<(String, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT created_at, started_at, finished_at FROM jobs WHERE action IN ('stop', 'start')")
            .fetch_all(&rig.db)
            .await?;
    let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).map(|t| t.to_utc());
    let (mut wait, mut run) = (Vec::new(), Vec::new());
    for (created, started, finished) in rows {
        let (Some(started), Some(finished)) = (started, finished) else { continue };
        let (created, started, finished) = (at(&created)?, at(&started)?, at(&finished)?);
        wait.push((started - created).to_std().unwrap_or_default());
        run.push((finished - started).to_std().unwrap_or_default());
    }
    Ok((wait, run))
}

async fn cycles(api: &Api, id: i64) -> anyhow::Result<()> {
    for _ in 0..CYCLES {
        for action in ["stop", "start"] {
            let (status, body) = api.act(id, action).await;
            anyhow::ensure!(status == 202, "{action} of {id}: {body}");
            let job = api.wait_job(body["job"]["id"].as_str().unwrap_or_default(), Duration::from_secs(120)).await;
            anyhow::ensure!(job["status"] == "succeeded", "{action} of {id}: {job}");
        }
    }
    Ok(())
}

/// Kills a host `DEATHS` times (starting it again in between); each time,
/// how long until one of its servers shows `host_alive: false`.
async fn deaths(rig: &Rig) -> anyhow::Result<Vec<Duration>> {
    let servers = rig.servers().await;
    let mut out = Vec::new();
    for round in 0..DEATHS {
        let i = round % rig.hosts.len();
        let host = rig.hosts[i].id.clone();
        let id = servers
            .iter()
            .find(|(_, h, _)| *h == host)
            .map(|(id, _, _)| *id)
            .ok_or_else(|| anyhow::anyhow!("no server on {host}"))?;
        anyhow::ensure!(rig.api.server(id).await["host_alive"] == true, "{host} is not alive before the kill");
        let killed = Instant::now();
        rig.kill_host(i).await;
        loop {
            if rig.api.server(id).await["host_alive"] == false {
                out.push(killed.elapsed());
                break;
            }
            anyhow::ensure!(killed.elapsed() < Duration::from_secs(60), "{host} still alive 60 s after the kill");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        rig.start_host(i).await;
        rig.wait_host_alive(i, Duration::from_secs(60)).await;
    }
    Ok(out)
}
