//! `monitor-curve` (not part of `all`): the container monitor's cost with
//! 50, 100 and 200 running servers on one host. Each server is a container
//! of the test image with a `docker` that prints one inner container, as
//! `docker ps` inside a real server would; the host's monitor
//! ([`vsfleet_worker::monitor::Monitor`]) polls every one of them each
//! round, through a `docker exec`, and the api records what it sends.
//!
//! Measured: the whole machine's busy CPU (Docker's daemon, containerd,
//! the shims and the exec'd processes do most of the work) over a window
//! with the monitor running, less the same window without it, per round;
//! and the share of that in vsfleet's own process (monitor and api). The
//! verdict says whether the cost per round grows linearly with the servers.

use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;
use vsfleet_contract::{ServerId, ServerSpec};
use vsfleet_tests::app::spawn_app_with;
use vsfleet_worker::docker::Containers;
use vsfleet_worker::monitor::Monitor;

use crate::cpu;
use crate::report::Row;

const SIZES: [usize; 3] = [50, 100, 200];
const IMAGE: &str = "vsfleet-bench-monitor:latest";
const INTERVAL: Duration = Duration::from_secs(1);
const WINDOW: Duration = Duration::from_secs(10);
/// Percent of the cores busy (all processes) past which a round cannot be
/// told from the machine's limit.
const SATURATED: f64 = 90.0;

pub async fn run() -> anyhow::Result<Vec<Row>> {
    build_image()?;
    let mut app = spawn_app_with(|s| {
        s.worker.image = IMAGE.into();
        s.worker.monitor_interval_ms = INTERVAL.as_millis() as u64;
        s.worker.monitor_timeout_ms = 10_000;
    })
    .await;
    // Its sync and event stream would take the seeded rows for drift; the
    // monitor below runs on its own.
    app.stop_worker().await;
    let settings = app.settings.clone();
    let containers = Containers::new(app.docker.clone(), settings.worker.clone(), app.prefix());
    let ids = crate::accept::seed_rows(&app, *SIZES.last().unwrap(), "running", Utc::now()).await?;
    let (nats, _) = app.connect_as(&vsfleet_contract::permissions::worker_user(app.host())).await;
    let me = std::process::id();
    let mut rows = Vec::new();
    let mut points = Vec::new();
    let mut running = 0;
    for size in SIZES {
        eprintln!("monitor-curve: starting servers {}..{size}", running + 1);
        start_servers(&containers, &ids[running..size]).await?;
        running = size;
        // Without the monitor, then with it, over the same length of time.
        let idle = busy_over(WINDOW, me).await;
        let stop = CancellationToken::new();
        let monitor = tokio::spawn(Monitor::new(containers.clone(), nats.clone(), &settings).run(stop.clone()));
        tokio::time::sleep(2 * INTERVAL).await; // the first round sends every list
        let (busy, ours) = busy_over(WINDOW, me).await;
        stop.cancel();
        monitor.await?;
        let reported = reported(&app, &ids[..size]).await;
        anyhow::ensure!(reported == size, "{reported} of {size} servers reported inside containers");
        // CPU seconds a second, times the seconds of a round, in ms.
        let per_round = (busy - idle.0) * INTERVAL.as_secs_f64() * 1000.0;
        let ours_per_round = (ours - idle.1) * INTERVAL.as_secs_f64() * 1000.0;
        let load = format!("{size} running servers, 1 host, a round every {} s", INTERVAL.as_secs());
        rows.push(Row::new("monitor-curve", format!("CPU per round, {size} servers"), &load, "ms", per_round));
        rows.push(Row::new(
            "monitor-curve",
            format!("of which vsfleet's process, {size} servers"),
            &load,
            "ms",
            ours_per_round,
        ));
        rows.push(Row::new(
            "monitor-curve",
            format!("share of the cores, {size} servers"),
            &load,
            "% of cores",
            cpu::share(per_round / 1000.0, INTERVAL.as_secs_f64()),
        ));
        eprintln!(
            "monitor-curve: {size} servers: {per_round:.0} ms of CPU a round ({ours_per_round:.0} ms in vsfleet)"
        );
        // With the cores this busy a round no longer fits in its interval:
        // what is measured is the machine's capacity, not the round's cost.
        let saturated = cpu::share(busy, 1.0) >= SATURATED;
        if saturated {
            eprintln!("monitor-curve: {size} servers: the cores are saturated; no growth verdict from here on");
        }
        points.push((size as f64, per_round, saturated));
    }
    for pair in points.windows(2) {
        let ((n1, t1, _), (n2, t2, saturated)) = (pair[0], pair[1]);
        if saturated {
            let line =
                format!("the cores were ≥ {SATURATED:.0}% busy at {n2} servers: rounds did not fit their interval");
            rows.push(Row::new("monitor-curve", format!("CPU per round, {n1}→{n2}"), line, "× time", t2 / t1));
        } else {
            rows.push(crate::curves::growth("monitor-curve", "CPU per round", (n1, t1), (n2, t2), "servers"));
        }
    }
    app.teardown().await;
    Ok(rows)
}

/// The machine's busy CPU seconds per second over `window`, and this
/// process's.
async fn busy_over(window: Duration, me: u32) -> (f64, f64) {
    let (machine, ours, t0) = (machine_busy(), cpu::seconds(me), Instant::now());
    tokio::time::sleep(window).await;
    let wall = t0.elapsed().as_secs_f64();
    ((machine_busy() - machine) / wall, (cpu::seconds(me) - ours) / wall)
}

/// Busy CPU seconds of the whole machine since boot (`/proc/stat`).
fn machine_busy() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<f64> =
        stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal …: all but idle and iowait.
    let busy: f64 = fields.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
    // SAFETY: sysconf has no preconditions.
    busy / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Creates and starts the servers' containers, a few at a time.
async fn start_servers(containers: &Containers, ids: &[i64]) -> anyhow::Result<()> {
    let spec = ServerSpec::default();
    let started = futures::stream::iter(ids.iter().map(|id| {
        let (containers, spec) = (containers.clone(), spec.clone());
        async move {
            let id = ServerId::new(*id)?;
            let container = containers.create(id, &spec).await?;
            containers.start(&container).await?;
            anyhow::Ok(())
        }
    }))
    .buffer_unordered(4)
    .collect::<Vec<_>>()
    .await;
    started.into_iter().collect()
}

/// How many of `ids` have inside containers recorded by the api: the
/// monitor reached each one.
async fn reported(app: &vsfleet_tests::app::TestApp, ids: &[i64]) -> usize {
    let mut reported = 0;
    for id in ids {
        let (_, body) = app.get(&format!("/v1/servers/{id}/containers")).await;
        reported += usize::from(body["containers"].as_array().is_some_and(|list| !list.is_empty()));
    }
    reported
}

/// The test image with a `docker` that answers `ps` with one inner container.
fn build_image() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM {}\nCOPY docker /bin/docker\n", vsfleet_tests::app::TEST_IMAGE),
    )?;
    let line = r#"{"ID":"0000000000000000000000000000000000000000000000000000000000000001","Image":"nginx","Names":"web","State":"running","Status":"Up 1 minute","Ports":"80/tcp","Labels":"","CreatedAt":"2026-11-24 00:00:00 +0000 UTC"}"#;
    std::fs::write(dir.path().join("docker"), format!("#!/bin/sh\necho '{line}'\n"))?;
    std::fs::set_permissions(dir.path().join("docker"), std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let status = std::process::Command::new("docker")
        .args(["build", "-q", "-t", IMAGE])
        .arg(dir.path())
        .env("DOCKER_BUILDKIT", "0")
        .stdout(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "docker build of {IMAGE} failed");
    Ok(())
}
