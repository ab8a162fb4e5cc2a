//! Building and running a worker: check Docker and the runtime, connect to
//! NATS, announce the host, consume its jobs.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::PullConsumer, kv};
use tokio_util::sync::CancellationToken;
use vsfleet_contract::Settings;
use vsfleet_contract::health::{Check, Listeners};

use crate::consumer::{self, JobContext};
use crate::docker::{self, Containers};
use crate::health::Health;
use crate::layout::DataRoot;
use crate::monitor::Monitor;
use crate::ops::Operations;
use crate::stack::StackConfig;
use crate::watch::Watcher;
use crate::{inventory, presence};

pub struct Worker {
    settings: Settings,
    nats: async_nats::Client,
    js: jetstream::Context,
    consumer: PullConsumer,
    sync: PullConsumer,
    hosts: kv::Store,
    ctx: Arc<JobContext<Operations>>,
    health: tokio::sync::watch::Sender<Option<String>>,
    /// `worker.metrics_listen` and `worker.health_listen`.
    listeners: Listeners,
}

impl Worker {
    /// Refuses to start, with the reason, when Docker is unreachable or the
    /// configured runtime is not registered with it.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let docker = docker::connect().await.context("connecting to Docker")?;
        docker::check_runtime(&docker, &settings.worker.runtime).await?;
        let root = DataRoot::new(settings.worker.data_root.clone());
        std::fs::create_dir_all(root.root())
            .with_context(|| format!("creating worker.data_root {}", root.root().display()))?;
        let stack = StackConfig::from_settings(&settings.worker);
        if let Some(stack) = &stack {
            stack.check().context("worker.system_template: the template is not usable")?;
        }

        let role = vsfleet_contract::connect::Role::Worker(&settings.worker.host_id);
        let nats = vsfleet_contract::connect::connect(&settings, role).await?;
        let js = jetstream::new(nats.clone());
        let (jobs, schedule, hosts) = vsfleet_contract::jetstream::bind(&js, &settings).await?;
        let consumer = consumer::consumer(&jobs, &settings).await.context("creating this host's jobs consumer")?;
        let sync = inventory::consumer(&schedule, &settings).await?;
        let subjects = settings.subjects();
        let (health_tx, health) = Health::new();
        let listeners = Listeners::bind([
            (
                settings.worker.metrics_listen,
                "worker.metrics_listen",
                vsfleet_contract::metrics::router(crate::metrics::get().registry.clone()),
            ),
            (
                settings.worker.health_listen,
                "worker.health_listen",
                vsfleet_contract::health::router(readiness(&health, &nats)),
            ),
        ])
        .await?;
        let operations = Operations {
            containers: Containers::new(docker, settings.worker.clone(), subjects.prefix()),
            root: root.clone(),
            stack,
        };
        let ctx = Arc::new(JobContext::new(operations, &js, &settings, health));
        // Announce before consuming, so the api can place servers here as
        // soon as `build` returns.
        presence::announce(&hosts, &settings.worker.host_id, chrono::Utc::now(), None, settings.worker.capacity)
            .await
            .context("announcing this host in the hosts bucket")?;
        Ok(Self { settings, nats, js, consumer, sync, hosts, ctx, health: health_tx, listeners })
    }

    pub fn operations(&self) -> &Operations {
        &self.ctx.ops
    }

    /// Runs until `shutdown` is cancelled, then lets running jobs finish
    /// (up to a deadline) before returning.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) {
        let Worker { settings, nats, js, consumer, sync, hosts, ctx, health, listeners } = self;
        let heartbeat = Duration::from_secs(settings.worker.heartbeat_secs);
        tracing::info!(host = settings.worker.host_id, data_root = %settings.worker.data_root.display(), "worker consuming jobs");
        let mut background = vec![
            tokio::spawn(crate::health::run(ctx.ops.containers.docker().clone(), health, heartbeat, shutdown.clone())),
            tokio::spawn(presence::run(
                hosts,
                presence::Announcement {
                    host: settings.worker.host_id.clone(),
                    capacity: settings.worker.capacity,
                    every: heartbeat,
                },
                ctx.health.clone(),
                shutdown.clone(),
            )),
            tokio::spawn(inventory::run(sync, ctx.ops.clone(), js.clone(), settings.clone(), shutdown.clone())),
            tokio::spawn(inventory::report_on_return(
                nats.clone(),
                ctx.ops.clone(),
                js.clone(),
                settings.clone(),
                ctx.health.clone(),
                shutdown.clone(),
            )),
        ];
        background.extend(listeners.serve(shutdown.clone()));
        background.push(tokio::spawn(crate::control::run(
            nats.clone(),
            settings.subjects(),
            settings.worker.host_id.clone(),
            ctx.ops.clone(),
            settings.worker.port_range,
            shutdown.clone(),
        )));
        if settings.worker.follow_docker_events {
            let watcher = Watcher::new(ctx.ops.clone(), js, &settings);
            background.push(tokio::spawn(watcher.run(shutdown.clone())));
        }
        if settings.worker.monitor_interval_ms > 0 {
            let monitor = Monitor::new(ctx.ops.containers.clone(), nats, &settings);
            background.push(tokio::spawn(monitor.run(shutdown.clone())));
        }
        let drain = Duration::from_secs(settings.worker.stop_timeout_secs.max(0) as u64 + 30);
        consumer::run(consumer, ctx, settings.worker.concurrency, shutdown, drain).await;
        for task in background {
            let _ = task.await;
        }
        tracing::info!("worker stopped");
    }
}

/// What `/readyz` on `worker.health_listen` reads: Docker answers (the
/// heartbeat's ping, which also decides whether this worker fetches jobs:
/// [`crate::health`]) and NATS is connected.
fn readiness(health: &Health, nats: &async_nats::Client) -> Vec<(&'static str, Check)> {
    let (health, nats) = (health.clone(), nats.clone());
    vec![
        ("docker", Box::new(move || health.degraded().is_none())),
        ("broker", Box::new(move || nats.connection_state() == async_nats::connection::State::Connected)),
    ]
}
