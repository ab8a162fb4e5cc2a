//! Dispatch: jobs per second carried end to end — accepted through the
//! API, delivered to a worker, acknowledged, the result recorded in the
//! database — with an executor that does no Docker work. That executor
//! exists only in this benchmark binary: no worker binary contains it, so
//! no configuration can enable it in production. Beside it: raw JetStream
//! publish → pull-consume → ack on the same server. Goal: ≥ 5,000 jobs/s.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use vsfleet_contract::{Action, ContainerState, JobRequest, Observation, ServerId, Settings};
use vsfleet_tests::app::spawn_app_with;
use vsfleet_tests::process::Service;
use vsfleet_worker::consumer::{self, JobContext};
use vsfleet_worker::error::OpError;
use vsfleet_worker::layout::DataRoot;
use vsfleet_worker::ops::{Execute, Outcome};

use crate::accept::{CLIENTS, fire, publish_acked, seed_servers};
use crate::cpu;
use crate::report::Row;

pub const JOBS: usize = 3000;

/// Succeeds at once, reporting a running container.
struct Noop;

impl Execute for Noop {
    async fn run(&self, _: Action, job: &JobRequest) -> Result<Outcome, OpError> {
        Ok(Outcome { observed: self.observe(job.server_id).await?, detail: None })
    }

    async fn observe(&self, _: ServerId) -> Result<Observation, OpError> {
        Ok(Observation { container: ContainerState::Running, container_id: None, data_exists: true, archived: false })
    }
}

pub async fn run() -> anyhow::Result<Vec<Row>> {
    eprintln!("dispatch: {JOBS} jobs end to end with a no-op executor");
    let m = measure(Consumers::InProcess(1), true).await?;
    let (rate, raw) = (m.rate, m.raw.unwrap_or_default());
    let load = format!("{JOBS} jobs, {CLIENTS} clients, worker concurrency 64");
    Ok(vec![
        Row::new("dispatch", "jobs carried end to end", load, "jobs/s", rate)
            .raw(raw)
            .goal("≥ 5000 jobs/s", rate >= 5000.0),
        // Where the time goes: well under 100% means the pipeline waits on
        // round trips rather than on CPU.
        Row::new("dispatch", "CPU busy: api + worker + clients", "same window", "% of cores", m.busy_here),
        Row::new("dispatch", "CPU busy: nats-server", "same window", "% of cores", m.busy_nats),
    ])
}

/// Who consumes the host's jobs.
#[derive(Debug, Clone, Copy)]
pub enum Consumers {
    /// Job consumers in this process, each with its own NATS connection
    /// as the host's worker and its own pull loop.
    InProcess(usize),
    /// Worker processes (`vsfleet-bench --noop-worker`), as a host running
    /// several workers has.
    Processes(usize),
}

/// One timed dispatch window.
pub struct Measured {
    pub rate: f64,
    /// CPU share of this process (api, clients, in-process consumers) and
    /// of the worker processes, in the window.
    pub busy_here: f64,
    pub busy_nats: f64,
    /// Raw publish → pull-consume → ack on the same server, when asked for.
    pub raw: Option<f64>,
}

/// [`JOBS`] jobs end to end through `consumers` of the same host's
/// durable consumer, each with a pull loop of concurrency 64.
pub async fn measure(consumers: Consumers, with_raw: bool) -> anyhow::Result<Measured> {
    let mut app = spawn_app_with(|s| s.worker.concurrency = 64).await;
    app.stop_worker().await;
    let settings = app.settings.clone();
    let host = settings.worker.host_id.clone();
    let stop = CancellationToken::new();
    let mut workers = Vec::new();
    let mut processes = Vec::new();
    match consumers {
        Consumers::InProcess(n) => {
            for _ in 0..n {
                // The worker's own NATS user, as a real worker runs with.
                let (worker_nats, _) = app.connect_as(&vsfleet_contract::permissions::worker_user(&host)).await;
                workers.push(tokio::spawn(consume(
                    async_nats::jetstream::new(worker_nats),
                    settings.clone(),
                    stop.clone(),
                    || {},
                )));
            }
        }
        Consumers::Processes(n) => {
            let config = app.write_config(&vsfleet_contract::permissions::worker_user(&host));
            let config = config.to_str().ok_or_else(|| anyhow::anyhow!("a non-UTF-8 temp path"))?.to_owned();
            let me = std::env::current_exe()?;
            for i in 0..n {
                let log = app.dir().join(format!("noop-worker-{i}.log"));
                let args = ["--noop-worker", config.as_str()];
                processes.push(Service::spawn_at(&format!("noop-worker-{i}"), &me, &args, &[], &log));
            }
            for process in &processes {
                process.wait_for_log(READY, Duration::from_secs(30)).await;
            }
        }
    }

    let ids = seed_servers(&app, JOBS).await?;
    // A real server's first job (its create) made its lock file; seeded
    // ones have none, and creating 3,000 inodes inside the timed window
    // (58% of the samples in a profile) would measure the file system.
    let root = DataRoot::new(settings.worker.data_root.clone());
    std::fs::create_dir_all(root.locks_dir())?;
    for id in &ids {
        std::fs::File::create(root.lock_file(vsfleet_contract::ServerId::new(*id)?))?;
    }
    let (me, nats) = (std::process::id(), app.nats_server.pid());
    let pids: Vec<u32> = processes.iter().filter_map(Service::pid).chain([me]).collect();
    let ours = || pids.iter().map(|pid| cpu::seconds(*pid)).sum::<f64>();
    let cpu0 = (ours(), cpu::seconds(nats));
    let t0 = Instant::now();
    fire(&app, &ids, "start").await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (done,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM jobs WHERE status = 'succeeded'").fetch_one(&app.db).await?;
        if done as usize >= JOBS {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "only {done} of {JOBS} jobs finished");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let wall = t0.elapsed().as_secs_f64();
    let rate = JOBS as f64 / wall;
    let busy_here = cpu::share(ours() - cpu0.0, wall);
    let busy_nats = cpu::share(cpu::seconds(nats) - cpu0.1, wall);
    stop.cancel();
    for worker in workers {
        worker.await??;
    }
    for mut process in processes {
        process.stop(Duration::from_secs(10));
    }
    let raw = if with_raw {
        let raw_js = async_nats::jetstream::new(app.connect_as(vsfleet_tests::app::UNRESTRICTED).await.0);
        Some(raw_dispatch_rate(&raw_js, &format!("{}_bench_dispatch", app.prefix()), JOBS).await?)
    } else {
        None
    };
    app.teardown().await;
    Ok(Measured { rate, busy_here, busy_nats, raw })
}

/// What a `--noop-worker` process says once it consumes jobs.
const READY: &str = "noop worker consuming jobs";

/// `vsfleet-bench --noop-worker CONFIG`: a worker process (the host's NATS
/// user, from the configuration) whose jobs do nothing, until SIGTERM.
pub async fn noop_worker(config: &Path) -> anyhow::Result<()> {
    let settings = Settings::load(Some(config))?;
    let role = vsfleet_contract::connect::Role::Worker(&settings.worker.host_id);
    let nats = vsfleet_contract::connect::connect(&settings, role).await?;
    let shutdown = vsfleet_contract::process::shutdown_on_signal();
    consume(async_nats::jetstream::new(nats), settings, shutdown, || eprintln!("{READY}")).await
}

/// Consumes the host's jobs with the no-op executor until `stop`, calling
/// `ready` once bound to the host's consumer.
async fn consume(
    js: jetstream::Context,
    settings: Settings,
    stop: CancellationToken,
    ready: impl FnOnce(),
) -> anyhow::Result<()> {
    let (jobs, _, _) = vsfleet_contract::jetstream::bind(&js, &settings).await?;
    let jobs_consumer = consumer::consumer(&jobs, &settings).await?;
    ready();
    let ctx = Arc::new(JobContext::new(Noop, &js, &settings, vsfleet_worker::health::Health::new().1));
    consumer::run(jobs_consumer, ctx, settings.worker.concurrency, stop, Duration::from_secs(5)).await;
    Ok(())
}

/// Publish (acknowledged) and pull-consume-ack running together.
async fn raw_dispatch_rate(js: &jetstream::Context, name: &str, count: usize) -> anyhow::Result<f64> {
    let subject = format!("{name}.raw");
    let stream = js
        .get_or_create_stream(stream::Config {
            name: name.to_owned(),
            subjects: vec![subject.clone()],
            retention: stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await?;
    let consumer: jetstream::consumer::PullConsumer = stream
        .create_consumer(jetstream::consumer::pull::Config { durable_name: Some("raw".into()), ..Default::default() })
        .await?;
    let t0 = Instant::now();
    let publisher = {
        let js = js.clone();
        tokio::spawn(async move { publish_acked(&js, &subject, count, CLIENTS).await })
    };
    let mut messages = consumer.messages().await?;
    for _ in 0..count {
        let message =
            messages.next().await.ok_or_else(|| anyhow::anyhow!("stream ended"))?.map_err(|e| anyhow::anyhow!(e))?;
        message.ack().await.map_err(|e| anyhow::anyhow!(e))?;
    }
    let rate = count as f64 / t0.elapsed().as_secs_f64();
    publisher.await??;
    js.delete_stream(name).await?;
    Ok(rate)
}
