//! The chaos run: lifecycle jobs across several worker processes while
//! workers are killed (`kill -9`) and nats-server is killed and restarted
//! at random, then the invariants a hosting operator relies on:
//! - every accepted job ended `succeeded`, or `failed` with a reason;
//! - every server's state matches its container;
//! - no container of ours belongs to no server;
//! - no data directory is lost (a live server has its `apps/`, a deleted
//!   one its archive; only a purge removes data).
//!
//! Run by `scripts/chaos` and, small, by an integration test.

use std::fmt;
use std::time::{Duration, Instant};

use bollard::models::ContainerStateStatusEnum;
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use serde_json::{Value, json};

use crate::app::{TestApp, spawn_app_with};

#[derive(Debug, Clone)]
pub struct Config {
    /// Lifecycle jobs to have accepted (the creates included).
    pub jobs: usize,
    pub servers: usize,
    pub workers: usize,
    pub seed: u64,
}

#[derive(Debug, Default)]
pub struct Report {
    pub accepted: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// Requests answered 503 during a broker outage (refused, not lost).
    pub refused: usize,
    pub worker_kills: usize,
    pub broker_restarts: usize,
    /// Deliveries beyond the first, over all jobs.
    pub redeliveries: i64,
    pub elapsed: Duration,
    pub violations: Vec<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "chaos: {:.1} s", self.elapsed.as_secs_f64())?;
        writeln!(f, "  jobs accepted       {}", self.accepted)?;
        writeln!(f, "    succeeded         {}", self.succeeded)?;
        writeln!(f, "    failed (reasoned) {}", self.failed)?;
        writeln!(f, "  refused with 503    {}", self.refused)?;
        writeln!(f, "  worker kills (-9)   {}", self.worker_kills)?;
        writeln!(f, "  broker restarts     {}", self.broker_restarts)?;
        writeln!(f, "  redeliveries        {}", self.redeliveries)?;
        writeln!(f, "  violations          {}", self.violations.len())?;
        for v in &self.violations {
            writeln!(f, "    - {v}")?;
        }
        Ok(())
    }
}

/// What is down now, and when it comes back.
enum Outage {
    Worker { index: usize, back_at: Instant },
    Broker { back_at: Instant },
}

pub async fn run(config: Config) -> Report {
    let started = Instant::now();
    let mut app = spawn_app_with(|s| {
        // Short enough that a killed worker's job comes back within seconds.
        s.nats.ack_wait_secs = 3;
        s.nats.max_deliver = 20;
        s.worker.stop_timeout_secs = 2;
        s.worker.concurrency = 2;
    })
    .await;
    app.stop_worker().await;
    app.start_scheduler().await;
    let mut workers: Vec<usize> = Vec::new();
    for _ in 0..config.workers {
        workers.push(app.start_worker_process(&[]).await);
    }
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut report = Report::default();
    let mut ids = Vec::new();
    let mut outages: Vec<Outage> = Vec::new();
    let mut next_chaos = Instant::now() + Duration::from_millis(rng.random_range(500..2500));

    while report.accepted < config.jobs {
        // Bring back what is due, then maybe break something.
        let now = Instant::now();
        let (due, rest): (Vec<_>, Vec<_>) = outages.drain(..).partition(|o| match o {
            Outage::Worker { back_at, .. } | Outage::Broker { back_at } => *back_at <= now,
        });
        outages = rest;
        for outage in due {
            match outage {
                Outage::Worker { index, .. } => workers[index] = app.spawn_service("vsfleet-worker", &[]),
                Outage::Broker { .. } => app.nats_server.restart(),
            }
        }
        if now >= next_chaos {
            next_chaos = now + Duration::from_millis(rng.random_range(1000..4000));
            let broker_down = outages.iter().any(|o| matches!(o, Outage::Broker { .. }));
            let back_at = now + Duration::from_millis(rng.random_range(300..3000));
            if !broker_down && rng.random_bool(0.3) {
                app.nats_server.kill();
                report.broker_restarts += 1;
                outages.push(Outage::Broker { back_at });
            } else {
                let index = rng.random_range(0..workers.len());
                let down = outages.iter().any(|o| matches!(o, Outage::Worker { index: i, .. } if *i == index));
                if !down {
                    app.services[workers[index]].kill();
                    report.worker_kills += 1;
                    outages.push(Outage::Worker { index, back_at });
                }
            }
        }

        // One request: a create until there are enough servers, else a
        // valid action on a random server that is not busy.
        let (status, body) = if ids.len() < config.servers {
            app.post("/v1/servers", json!({ "name": format!("chaos{}", ids.len()) })).await
        } else {
            let id = ids[rng.random_range(0..ids.len())];
            let (status, server) = app.get(&format!("/v1/servers/{id}")).await;
            if status == 404 {
                ids.retain(|i| *i != id); // purged
                continue;
            }
            let Some(action) = pick(&mut rng, server["server"]["status"].as_str().unwrap_or_default()) else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            request(&app, id, action).await
        };
        match status.as_u16() {
            202 => {
                report.accepted += 1;
                if let Some(id) = body["server"]["id"].as_i64().filter(|_| !body["server"].is_null())
                    && body["job"]["action"] == "create"
                {
                    ids.push(id);
                }
            }
            503 => report.refused += 1,
            409 => {} // a job in flight, or the state moved on since the read
            other => report.violations.push(format!("unexpected answer {other}: {body}")),
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..150))).await;
    }

    // Calm: everything back up, every job must end.
    for outage in outages.drain(..) {
        match outage {
            Outage::Worker { index, .. } => workers[index] = app.spawn_service("vsfleet-worker", &[]),
            Outage::Broker { .. } => app.nats_server.restart(),
        }
    }
    let calm = Instant::now() + Duration::from_secs(300);
    while in_flight(&app).await > 0 {
        if Instant::now() > calm {
            report.violations.push(format!("{} jobs still in flight 300 s after the chaos", in_flight(&app).await));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The invariants, given a few seconds for drift events and a sync to land.
    let settle = Instant::now() + Duration::from_secs(15);
    let violations = loop {
        let found = check(&app).await;
        if found.is_empty() || Instant::now() > settle {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    report.violations.extend(violations);
    let (succeeded, failed, redeliveries): (i64, i64, i64) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(CASE WHEN status = 'succeeded' THEN 1 ELSE 0 END), 0) AS BIGINT),
                CAST(COALESCE(SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END), 0) AS BIGINT),
                CAST(COALESCE(SUM(CASE WHEN attempts > 1 THEN attempts - 1 ELSE 0 END), 0) AS BIGINT) FROM jobs",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    (report.succeeded, report.failed, report.redeliveries) = (succeeded as usize, failed as usize, redeliveries);
    report.elapsed = started.elapsed();
    app.teardown().await;
    report
}

fn pick(rng: &mut StdRng, status: &str) -> Option<&'static str> {
    let choices: &[&str] = match status {
        "running" => &["stop", "restart", "delete"],
        "stopped" => &["start", "restart", "delete"],
        "missing" | "failed" => &["start", "delete"],
        // Purge rarely: it ends the server.
        "deleted" => &["restore", "restore", "restore", "purge"],
        _ => return None, // creating, deleting: a job is in flight
    };
    Some(choices[rng.random_range(0..choices.len())])
}

async fn request(app: &TestApp, id: i64, action: &str) -> (reqwest::StatusCode, Value) {
    if action == "delete" {
        let token = app.admin_token.clone();
        app.call(reqwest::Method::DELETE, &format!("/v1/servers/{id}"), Some(&token), None).await
    } else {
        app.post(&format!("/v1/servers/{id}/{action}"), json!({})).await
    }
}

async fn in_flight(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running')")
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// Every invariant, as the rows, Docker and the disk show them now.
async fn check(app: &TestApp) -> Vec<String> {
    let mut violations = Vec::new();
    let unexplained: Vec<(String, String)> =
        sqlx::query_as("SELECT id, status FROM jobs WHERE status NOT IN ('succeeded', 'failed') OR (status = 'failed' AND COALESCE(error, '') = '')")
            .fetch_all(&app.db)
            .await
            .unwrap();
    for (job, status) in unexplained {
        violations.push(format!("job {job} ended {status} without a reason"));
    }
    let servers: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, status FROM servers").fetch_all(&app.db).await.unwrap();
    let root = app.data_root();
    for (id, status) in &servers {
        let container = app.inspect(*id).await.and_then(|c| c.state?.status);
        let running = container == Some(ContainerStateStatusEnum::RUNNING);
        let live = root.join(id.to_string()).join("apps").is_dir();
        let archived = std::fs::read_dir(&root)
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().starts_with(&format!("{id}-deleted-")));
        let problem = match status.as_str() {
            "running" if !running => Some("its container is not running"),
            "stopped" if container.is_none() || running => Some("its container is not there and stopped"),
            "missing" if container.is_some() => Some("a container exists"),
            "deleted" if container.is_some() => Some("a container exists"),
            "deleted" if !archived || live => Some("its data is not (only) in an archive"),
            "running" | "stopped" | "missing" if !live => Some("its apps/ directory is gone"),
            "failed" if !live && !archived => Some("its data is gone"),
            _ => None,
        };
        if let Some(problem) = problem {
            violations.push(format!("server {id} is {status} but {problem} (container {container:?})"));
        }
    }
    for container in app.our_containers().await {
        let inspect = app.docker.inspect_container(&container, None).await.ok();
        let name = inspect.and_then(|i| i.name).unwrap_or_default();
        let id: Option<i64> = name.rsplit('-').next().and_then(|n| n.parse().ok());
        let owned = servers.iter().any(|(s, status)| Some(*s) == id && status != "deleted");
        if !owned {
            violations.push(format!("orphan container {name} ({container})"));
        }
    }
    violations
}
