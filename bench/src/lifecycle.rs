//! Lifecycle overhead: create → running, stop, start, delete of a small
//! local image through vsfleet (request to job recorded as succeeded),
//! beside the same Docker calls made directly with bollard.
//! Goal: vsfleet adds at most 10% or 30 ms, whichever is larger.

use std::time::{Duration, Instant};

use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions, StopContainerOptions};
use reqwest::Method;
use serde_json::{Value, json};
use vsfleet_contract::ServerId;
use vsfleet_tests::app::{TestApp, spawn_app_with};
use vsfleet_worker::docker::Containers;

use crate::report::{Row, Spread};
use crate::steps;

const ROUNDS: usize = 11;
const OPS: [&str; 4] = ["create", "stop", "start", "delete"];

pub async fn run() -> anyhow::Result<Vec<Row>> {
    eprintln!("lifecycle: {ROUNDS} rounds of create, stop, start, delete, through vsfleet and directly, alternating");
    let app = spawn_app_with(|_| {}).await;
    steps::record(true);
    let mut through: [Vec<Duration>; 4] = Default::default();
    // Each create's and start's steps (crate::steps), by name.
    let mut parts: [Vec<Vec<(&'static str, f64)>>; 2] = Default::default();

    // The same container, the same Docker calls, no vsfleet.
    let mut settings = app.settings.worker.clone();
    settings.container_prefix = format!("{}direct-", settings.container_prefix);
    let direct_root = settings.data_root.join("direct");
    settings.data_root = direct_root.clone();
    let containers = Containers::new(app.docker.clone(), settings.clone(), app.prefix());
    let docker = &app.docker;
    let mut direct: [Vec<Duration>; 4] = Default::default();
    // Docker's create and start, each alone, beside the same steps in vsfleet's breakdown.
    let (mut direct_create, mut direct_start): (Vec<Duration>, Vec<Duration>) = Default::default();

    // A round through vsfleet, then one direct, and so on: Docker's own
    // times drift by more than the allowance over a run, and alternating
    // gives both sides the same drift.
    for round in 0..ROUNDS {
        steps::take();
        let t0 = Instant::now();
        let (_, body) = app.post("/v1/servers", json!({ "name": format!("ratas {round}") })).await;
        let answered = Instant::now();
        let id = body["server"]["id"].as_i64().unwrap();
        until_done(&app, &body["job"]).await?;
        let seen = Instant::now();
        through[0].push(seen - t0);
        parts[0].push(steps::breakdown(&steps::take(), t0, answered, seen));
        for (slot, action) in [(1, "stop"), (2, "start"), (3, "delete")] {
            steps::take();
            let t0 = Instant::now();
            let (_, body) = if action == "delete" {
                app.call(Method::DELETE, &format!("/v1/servers/{id}"), Some(&app.admin_token.clone()), None).await
            } else {
                app.post(&format!("/v1/servers/{id}/{action}"), json!({})).await
            };
            let answered = Instant::now();
            until_done(&app, &body["job"]).await?;
            let seen = Instant::now();
            through[slot].push(seen - t0);
            if action == "start" {
                parts[1].push(steps::breakdown(&steps::take(), t0, answered, seen));
            }
        }
        app.act(id, "purge").await;

        let id = ServerId::new(1_000_000 + round as i64)?;
        let name = containers.name(id);
        for sub in ["apps", "docker"] {
            std::fs::create_dir_all(direct_root.join(id.to_string()).join(sub))?;
        }
        let stop = || Some(StopContainerOptions { t: Some(settings.stop_timeout_secs), signal: None });
        let t0 = Instant::now();
        let options = CreateContainerOptions { name: Some(name.clone()), ..Default::default() };
        docker.create_container(Some(options), containers.container_body(id, &Default::default())).await?;
        let created = Instant::now();
        docker.start_container(&name, None).await?;
        direct_create.push(created - t0);
        direct_start.push(created.elapsed());
        direct[0].push(t0.elapsed());
        let t0 = Instant::now();
        docker.stop_container(&name, stop()).await?;
        direct[1].push(t0.elapsed());
        let t0 = Instant::now();
        docker.start_container(&name, None).await?;
        direct[2].push(t0.elapsed());
        direct_start.push(t0.elapsed());
        let t0 = Instant::now();
        docker.stop_container(&name, stop()).await?;
        docker.remove_container(&name, Some(RemoveContainerOptions { force: true, ..Default::default() })).await?;
        direct[3].push(t0.elapsed());
    }
    steps::record(false);
    std::fs::remove_dir_all(&direct_root)?;
    app.teardown().await;

    let mut rows = Vec::new();
    for (i, op) in OPS.iter().enumerate() {
        let (v, d) = (Spread::of(&mut through[i]), Spread::of(&mut direct[i]));
        let (v50, d50) = (v.median, d.median);
        let allowed = (d50 * 0.10).max(30.0);
        rows.push(
            Row::new("lifecycle", format!("{op}, median"), format!("{ROUNDS} rounds, busybox image"), "ms", v50)
                .raw(d50)
                .spread(v)
                .raw_spread(d)
                .goal(format!("+≤ {allowed:.0} ms"), v50 - d50 <= allowed),
        );
    }
    for (op, parts) in [("create", &parts[0]), ("start", &parts[1])] {
        rows.extend(step_rows(op, parts, &mut direct_create, &mut direct_start));
    }
    Ok(rows)
}

/// One row per step of `op`: its median over the rounds with the spread;
/// Docker's create and start have the direct calls' medians beside them.
fn step_rows(
    op: &str,
    rounds: &[Vec<(&'static str, f64)>],
    direct_create: &mut [Duration],
    direct_start: &mut [Duration],
) -> Vec<Row> {
    let Some(first) = rounds.first() else { return Vec::new() };
    first
        .iter()
        .enumerate()
        .filter_map(|(i, (name, _))| {
            let mut values: Vec<f64> = rounds.iter().map(|r| r[i].1).collect();
            // A step this action never takes (a start creates nothing).
            if values.iter().all(|v| *v == 0.0) {
                return None;
            }
            let spread = Spread::of_values(&mut values);
            let row = Row::new("steps", format!("{op}: {name}"), format!("{ROUNDS} rounds"), "ms", spread.median)
                .spread(spread);
            let direct = match (op, *name) {
                ("create", "docker create") => Some(Spread::of(direct_create)),
                (_, "docker start") => Some(Spread::of(direct_start)),
                _ => None,
            };
            Some(match direct {
                Some(d) => row.raw(d.median).raw_spread(d),
                None => row,
            })
        })
        .collect()
}

/// Polls the job every 2 ms until it succeeded.
async fn until_done(app: &TestApp, job: &Value) -> anyhow::Result<()> {
    let id = job["id"].as_str().ok_or_else(|| anyhow::anyhow!("no job in {job}"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = app.get(&format!("/v1/jobs/{id}")).await;
        match body["job"]["status"].as_str() {
            Some("succeeded") => return Ok(()),
            Some("failed") => anyhow::bail!("job failed: {body}"),
            _ => {}
        }
        anyhow::ensure!(Instant::now() < deadline, "job {id} did not finish");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
