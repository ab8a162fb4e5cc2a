//! Scale curves (not part of `all`): how reconcile, a full sync and
//! dispatch grow with the load, each with a verdict on whether the cost
//! grows linearly.
//!
//! - `reconcile-curve`: one host of 1k, 10k and 100k servers. The pure plan
//!   and the apply against a SQLite file of its own ([`reconcile::measure`]),
//!   and a full sync end to end: the host's inventory published in parts
//!   as its worker does (same NATS user, same parts, same subject), the
//!   api's events consumer assembling and reconciling it, until
//!   `GET /v1/hosts` shows the sync. Time, peak heap (the counting
//!   allocator: live bytes above the start, process-wide) and the process's
//!   peak RSS.
//! - `dispatch-curve`: jobs/s end to end with 1, 2 and 4 worker processes
//!   (`vsfleet-bench --noop-worker`) on the same host's consumer
//!   ([`dispatch::measure`]).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use vsfleet_contract::{ContainerState, SeenContainer, ServerId};
use vsfleet_tests::app::{TestApp, spawn_app_with};

use crate::report::{Row, Spread, ms};
use crate::{alloc, dispatch, reconcile};

const SIZES: [i64; 3] = [1_000, 10_000, 100_000];
/// Seeding a size's rows (both databases) longer than this stops the curve
/// there: the next size is ten times more.
const SEED_LIMIT: Duration = Duration::from_secs(120);
const STEADY_SYNCS: usize = 3;
const CONSUMERS: [usize; 3] = [1, 2, 4];

pub async fn reconcile_curve() -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut points: Vec<(i64, [f64; 5])> = Vec::new();
    for servers in SIZES {
        eprintln!("reconcile-curve: {servers} servers");
        let m = reconcile::measure(servers, 5, 5).await?;
        let sync = full_sync(servers as usize).await?;
        let load = format!("{servers} servers, 1 host");
        let scenario = "reconcile-curve";
        let mb = |bytes: u64| bytes as f64 / 1e6;
        rows.extend([
            Row::new(scenario, "plan (pure), median", &load, "ms", m.plan.median).spread(m.plan),
            Row::new(scenario, "plan, peak heap", &load, "MB", mb(m.plan_heap)),
            Row::new(scenario, "apply, 2% to change (raw: SELECT)", &load, "ms", m.first)
                .raw(m.select.median)
                .raw_spread(m.select),
            Row::new(scenario, "apply, 2% to change, peak heap", &load, "MB", mb(m.first_heap)),
            Row::new(scenario, "apply, nothing to change, median", &load, "ms", m.steady.median)
                .raw(m.select.median)
                .spread(m.steady),
        ]);
        let load = format!("{servers} servers, 1 host, {} inventory parts", sync.parts);
        rows.extend([
            Row::new(scenario, "full sync, 2% to change", &load, "ms", sync.first),
            Row::new(scenario, "full sync, 2% to change, peak heap", &load, "MB", mb(sync.first_heap)),
            Row::new(scenario, "full sync, nothing to change, median", &load, "ms", sync.steady.median)
                .spread(sync.steady),
            Row::new(scenario, "process peak RSS during the full syncs", &load, "MB", sync.peak_rss_mb),
        ]);
        points.push((servers, [m.plan.median, m.first, m.steady.median, sync.first, sync.steady.median]));
        let seeding = m.seed + sync.seed;
        eprintln!("reconcile-curve: {servers} servers seeded in {:.1} s", seeding.as_secs_f64());
        if seeding > SEED_LIMIT && servers != *SIZES.last().unwrap() {
            eprintln!(
                "reconcile-curve: seeding {servers} servers took {:.0} s (> {} s): stopping before ten times more",
                seeding.as_secs_f64(),
                SEED_LIMIT.as_secs()
            );
            break;
        }
    }
    let names = ["plan", "apply, 2% to change", "apply, nothing to change", "full sync, 2%", "full sync, nothing"];
    for pair in points.windows(2) {
        let ((n1, t1), (n2, t2)) = (&pair[0], &pair[1]);
        for (i, what) in names.iter().enumerate() {
            rows.push(growth("reconcile-curve", what, (*n1 as f64, t1[i]), (*n2 as f64, t2[i]), "servers"));
        }
    }
    Ok(rows)
}

pub async fn dispatch_curve() -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut points = Vec::new();
    for consumers in CONSUMERS {
        eprintln!("dispatch-curve: {} jobs, {consumers} worker process(es)", dispatch::JOBS);
        let m = dispatch::measure(dispatch::Consumers::Processes(consumers), false).await?;
        let load = format!("{} jobs, {consumers} worker process(es) × concurrency 64", dispatch::JOBS);
        rows.push(Row::new("dispatch-curve", format!("jobs/s, {consumers} worker(s)"), &load, "jobs/s", m.rate));
        rows.push(Row::new(
            "dispatch-curve",
            format!("CPU busy, {consumers} worker(s): bench and workers / nats"),
            format!("nats-server {:.0}% of cores", m.busy_nats),
            "% of cores",
            m.busy_here,
        ));
        points.push((consumers as f64, m.rate));
    }
    for pair in points.windows(2) {
        let ((c1, r1), (c2, r2)) = (pair[0], pair[1]);
        let (more, faster) = (c2 / c1, r2 / r1);
        let verdict = if faster >= 0.8 * more {
            "scales"
        } else if faster > 1.1 {
            "scales partly"
        } else {
            "does not scale"
        };
        let line = format!("×{more:.0} workers ({c1:.0}→{c2:.0}) → ×{faster:.2} jobs/s: {verdict}");
        eprintln!("dispatch-curve: {line}");
        rows.push(
            Row::new("dispatch-curve", format!("jobs/s, {c1:.0}→{c2:.0} workers"), line, "×", faster)
                .goal(format!("≥ ×{:.1} (80% of ×{more:.0})", 0.8 * more), faster >= 0.8 * more),
        );
    }
    Ok(rows)
}

/// The growth of a cost between two sizes, with a verdict: the exponent
/// `ln(time ratio) / ln(size ratio)` is 1 for linear growth.
pub fn growth(scenario: &'static str, what: &str, (n1, t1): (f64, f64), (n2, t2): (f64, f64), of: &str) -> Row {
    let (more, longer) = (n2 / n1, t2 / t1);
    let exponent = longer.ln() / more.ln();
    let verdict = if exponent > 1.15 {
        "worse than linear"
    } else if exponent < 0.85 {
        "better than linear (fixed costs weigh at the small size)"
    } else {
        "linear"
    };
    let line = format!("×{more:.0} {of} → ×{longer:.1} time, exponent {exponent:.2}: {verdict}");
    let size = |n: f64| if n >= 1000.0 { format!("{}k", n / 1000.0) } else { format!("{n}") };
    let sizes = format!("{}→{}", size(n1), size(n2));
    eprintln!("{scenario}: {what}, {sizes}: {line}");
    Row::new(scenario, format!("{what}, {sizes}"), line, "× time", longer)
        .goal(format!("≤ ×{:.0} (linear)", more * more.powf(0.15)), exponent <= 1.15)
}

struct Sync {
    parts: usize,
    /// The first full sync, 2% of the servers to change, ms.
    first: f64,
    first_heap: u64,
    /// Full syncs with nothing to change, ms.
    steady: Spread,
    /// The process's peak RSS over the syncs (VmHWM, reset before), MB.
    peak_rss_mb: f64,
    seed: Duration,
}

/// A full sync of one host of `servers` servers through NATS and the api.
async fn full_sync(servers: usize) -> anyhow::Result<Sync> {
    let mut app = spawn_app_with(|_| {}).await;
    // Its inventory would say none of the seeded servers exists.
    app.stop_worker().await;
    let host = app.host().to_owned();
    let t_seed = Instant::now();
    let ids = seed_running(&app, servers).await?;
    anyhow::ensure!(ids.len() == servers, "seeded {} servers", ids.len());
    let seed = t_seed.elapsed();
    let (nats, _) = app.connect_as(&vsfleet_contract::permissions::worker_user(&host)).await;
    let js = async_nats::jetstream::new(nats);
    let subject = app.settings.subjects().inventory_events(&host);
    // As the worker sees the host: 1% stopped behind our back, 1% removed;
    // then, once recorded, the same again (nothing to change).
    let containers: Vec<SeenContainer> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 100 != 99)
        .map(|(i, id)| SeenContainer {
            server_id: ServerId::new(*id).unwrap(),
            container_id: format!("{i:064x}"),
            state: if i % 100 == 0 { ContainerState::Stopped } else { ContainerState::Running },
        })
        .collect();
    let data: Vec<ServerId> = ids.iter().map(|id| ServerId::new(*id).unwrap()).collect();
    let rss_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let mut times = Vec::new();
    let (mut parts, mut first_heap) = (0, 0);
    for round in 0..=STEADY_SYNCS {
        let inventory = vsfleet_worker::inventory::split(&host, containers.clone(), data.clone(), vec![]);
        parts = inventory.len();
        let at = inventory[0].at;
        let peak = alloc::Peak::start();
        let t0 = Instant::now();
        for part in &inventory {
            let id = format!("{}-{}", part.sync_id, part.part);
            vsfleet_worker::publish::json(&js, subject.clone(), &id, part).await?;
        }
        let changed = until_synced(&app, at).await?;
        times.push(t0.elapsed());
        let heap = peak.stop();
        if round == 0 {
            first_heap = heap;
            anyhow::ensure!(changed == servers / 100 * 2, "the first sync changed {changed} servers");
        } else {
            anyhow::ensure!(changed == 0, "a repeated sync changed {changed} servers");
        }
    }
    let peak_rss_mb = if rss_reset { status_kb("VmHWM") as f64 / 1024.0 } else { f64::NAN };
    app.teardown().await;
    let first = ms(times.remove(0));
    Ok(Sync { parts, first, first_heap, steady: Spread::of(&mut times), peak_rss_mb, seed })
}

/// Polls `GET /v1/hosts` (every 2 ms) until the host's last sync is the one
/// taken at `at`; returns how many servers it changed.
async fn until_synced(app: &TestApp, at: DateTime<Utc>) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (_, body) = app.get("/v1/hosts").await;
        let host = body["hosts"].as_array().and_then(|hs| hs.iter().find(|h| h["host"] == app.host()));
        if let Some(sync) = host.map(|h| &h["last_sync"]) {
            let seen = sync["at"].as_str().and_then(|s| s.parse::<DateTime<Utc>>().ok());
            if seen == Some(at) {
                return Ok(sync["changed"].as_u64().unwrap_or_default() as usize);
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "the sync of {at} was not recorded");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Inserts `count` running servers on the app's host; the `n`th one's
/// container id is `n` in hex.
async fn seed_running(app: &TestApp, count: usize) -> anyhow::Result<Vec<i64>> {
    crate::accept::seed_rows(app, count, "running", DateTime::from_timestamp(1_000, 0).unwrap()).await
}

/// A field of /proc/self/status, in kB.
fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
