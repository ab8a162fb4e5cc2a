//! Footprint: resident memory of each service as its own process (the
//! release binaries beside this one), idle, and the api under the accept
//! load. Goal: worker under 20 MB idle, api under 40 MB.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use vsfleet_tests::nats_server::NatsServer;

use crate::report::Row;

const REQUESTS: usize = 2000;
const CLIENTS: usize = 32;

struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Service {
    fn rss_mb(&self) -> f64 {
        rss_kb(self.0.id()) as f64 / 1024.0
    }
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe()?.with_file_name(name);
    anyhow::ensure!(path.exists(), "{} is missing: build it first (scripts/bench does)", path.display());
    Ok(path)
}

fn spawn(bin: &Path, args: &[&str], config: &Path, log: &Path) -> anyhow::Result<Service> {
    let log = std::fs::File::create(log)?;
    let child = Command::new(bin).args(args).env("VSFLEET_CONFIG", config).stdout(Stdio::null()).stderr(log).spawn()?;
    Ok(Service(child))
}

pub async fn run() -> anyhow::Result<Vec<Row>> {
    eprintln!("footprint: api, worker and scheduler as processes");
    let dir = std::env::temp_dir().join(format!("vsfleet-bench-footprint-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let nats = NatsServer::start(&dir.join("nats"));
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    drop(listener);
    let config = dir.join("vsfleet.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"sqlite://{db}\"\n[nats]\nurl = \"{nats}\"\nprefix = \"fp\"\n[api]\nlisten = \"{addr}\"\n\
             [worker]\nhost_id = \"footprint\"\ndata_root = \"{root}\"\nimage = \"vsfleet-test-server:latest\"\nruntime = \"runc\"\nnetwork = \"none\"\n",
            db = dir.join("vsfleet.db").display(),
            nats = nats.url(),
            root = dir.join("SERVERS").display(),
        ),
    )?;
    let api_bin = binary("vsfleet-api")?;
    let out = Command::new(&api_bin)
        .args(["user", "create", "--email", "bench@example.test", "--admin"])
        .env("VSFLEET_CONFIG", &config)
        .output()?;
    anyhow::ensure!(out.status.success(), "user create: {}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout)?.trim().to_owned();

    let api = spawn(&api_bin, &["serve"], &config, &dir.join("api.log"))?;
    let worker = spawn(&binary("vsfleet-worker")?, &[], &config, &dir.join("worker.log"))?;
    let scheduler = spawn(&binary("vsfleet-scheduler")?, &[], &config, &dir.join("scheduler.log"))?;
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("http://{addr}/readyz")).send().await.map(|r| r.status() != 200).unwrap_or(true) {
        anyhow::ensure!(Instant::now() < deadline, "the api did not become ready; see {}", dir.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (api_idle, worker_idle, scheduler_idle) = (api.rss_mb(), worker.rss_mb(), scheduler.rss_mb());

    // The api under load, with no worker to run the jobs (rows only).
    drop(worker);
    let db = vsfleet_api::store::Store::open(&format!("sqlite://{}", dir.join("vsfleet.db").display())).await?;
    let vsfleet_api::store::Store::Sqlite(file) = &db else { unreachable!("a sqlite URL") };
    let mut tx = file.write.begin().await?;
    for n in 0..REQUESTS {
        sqlx::query("INSERT INTO servers (owner_id, name, host, status, data_exists, created_at, updated_at) VALUES (1, $1, 'footprint', 'stopped', 1, $2, $3)")
            .bind(format!("fp {n}"))
            .bind(Utc::now())
            .bind(Utc::now())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    db.close().await;
    let peak = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling, pid) = (peak.clone(), sampling.clone(), api.0.id());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kb(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(1));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (http, next, token) = (http.clone(), next.clone(), token.clone());
            tokio::spawn(async move {
                loop {
                    let id = next.fetch_add(1, Ordering::Relaxed);
                    if id > REQUESTS {
                        return Ok::<_, anyhow::Error>(());
                    }
                    let resp =
                        http.post(format!("http://{addr}/v1/servers/{id}/start")).bearer_auth(&token).send().await?;
                    anyhow::ensure!(resp.status() == 202, "{}", resp.text().await?);
                }
            })
        })
        .collect();
    for client in clients {
        client.await??;
    }
    sampling.store(false, Ordering::Relaxed);
    sampler.await?;
    let api_loaded = peak.load(Ordering::Relaxed) as f64 / 1024.0;
    drop((api, scheduler, nats));
    std::fs::remove_dir_all(&dir)?;

    Ok(vec![
        Row::new("footprint", "api RSS, idle", "idle 3 s", "MB", api_idle).goal("< 40 MB", api_idle < 40.0),
        Row::new("footprint", "worker RSS, idle", "idle 3 s", "MB", worker_idle).goal("< 20 MB", worker_idle < 20.0),
        Row::new("footprint", "scheduler RSS, idle", "idle 3 s", "MB", scheduler_idle),
        Row::new(
            "footprint",
            "api RSS, peak under accept load",
            format!("{REQUESTS} requests, {CLIENTS} clients"),
            "MB",
            api_loaded,
        ),
    ])
}
