//! The vsfleet scheduler: emits the periodic jobs onto JetStream — sync
//! (every host reports; the api reconciles), cleanup (stale inner-container
//! rows) and purge (deleted servers past `purge_after`).
//!
//! It holds no state. Each job's message id is `{kind}-{period}` (see
//! [`vsfleet_contract::schedule`]), so any number of replicas emit each
//! period's job once: JetStream drops the repeats.
//!
//! When configured it serves `GET /metrics` on `scheduler.metrics_listen`,
//! and `GET /healthz` and `GET /readyz` (NATS is connected) on
//! `scheduler.health_listen` ([`vsfleet_contract::health`]).

use std::time::Duration;

use async_nats::jetstream;
use chrono::Utc;
use tokio_util::sync::CancellationToken;
use vsfleet_contract::health::{Check, Listeners};
use vsfleet_contract::publish;
use vsfleet_contract::schedule::{Periodic, Tick, until_next_period};
use vsfleet_contract::{Settings, Subjects};

pub struct Scheduler {
    js: jetstream::Context,
    subjects: Subjects,
    intervals: Vec<(Periodic, Duration)>,
    /// `scheduler.metrics_listen` and `scheduler.health_listen`.
    listeners: Listeners,
}

/// The scheduler's metrics (`GET /metrics` on `scheduler.metrics_listen`).
pub mod metrics {
    use std::sync::LazyLock;

    use prometheus::{IntCounterVec, Registry};

    pub struct Metrics {
        pub registry: Registry,
        /// Ticks by kind and outcome: `emitted`, `duplicate` (another
        /// replica's), `failed`.
        pub ticks: IntCounterVec,
    }

    static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
        let registry = Registry::new();
        let ticks = vsfleet_contract::metrics::counter(
            &registry,
            "vsfleet_scheduler_ticks_total",
            "Periodic jobs emitted, by kind and outcome",
            &["kind", "outcome"],
        );
        Metrics { registry, ticks }
    });

    pub fn get() -> &'static Metrics {
        &METRICS
    }
}

impl Scheduler {
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        // The scheduler may only publish its subjects (`nats/auth.conf`); the
        // api creates the schedule stream, and a tick emitted before it
        // exists is simply retried at the next period.
        let nats = vsfleet_contract::connect::connect(settings, vsfleet_contract::connect::Role::Scheduler).await?;
        let js = jetstream::new(nats.clone());
        let s = &settings.scheduler;
        let intervals = vec![
            (Periodic::Sync, Duration::from_millis(s.sync_interval_ms)),
            (Periodic::Cleanup, Duration::from_millis(s.cleanup_interval_ms)),
            (Periodic::Purge, Duration::from_millis(s.purge_interval_ms)),
        ];
        // Ready while NATS is connected: the scheduler needs nothing else.
        let broker: Check = Box::new(move || nats.connection_state() == async_nats::connection::State::Connected);
        let listeners = Listeners::bind([
            (
                s.metrics_listen,
                "scheduler.metrics_listen",
                vsfleet_contract::metrics::router(metrics::get().registry.clone()),
            ),
            (s.health_listen, "scheduler.health_listen", vsfleet_contract::health::router(vec![("broker", broker)])),
        ])
        .await?;
        Ok(Self { js, subjects: settings.subjects(), intervals, listeners })
    }

    /// Emits every kind at the start of each of its periods until shut down.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) {
        let listeners = self.listeners.serve(shutdown.clone());
        let tasks: Vec<_> = self
            .intervals
            .iter()
            .map(|&(kind, every)| {
                let js = self.js.clone();
                let subject = self.subjects.schedule(kind);
                let shutdown = shutdown.clone();
                tokio::spawn(async move { emit_every(js, subject, kind, every, shutdown).await })
            })
            .collect();
        for task in tasks.into_iter().chain(listeners) {
            let _ = task.await;
        }
    }
}

async fn emit_every(
    js: jetstream::Context,
    subject: String,
    kind: Periodic,
    every: Duration,
    shutdown: CancellationToken,
) {
    tracing::info!(kind = kind.as_str(), ?every, "emitting periodic job");
    loop {
        // Aligned to the wall clock, so replicas aim at the same periods.
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(until_next_period(every, Utc::now())) => {}
        }
        let tick = Tick::at(kind, every, Utc::now());
        let outcome = match emit(&js, &subject, &tick).await {
            Ok(true) => {
                tracing::debug!(id = tick.message_id(), "emitted");
                "emitted"
            }
            Ok(false) => {
                tracing::debug!(id = tick.message_id(), "already emitted by another replica");
                "duplicate"
            }
            Err(error) => {
                tracing::warn!(id = tick.message_id(), error = format!("{error:#}"), "cannot emit; next period will");
                "failed"
            }
        };
        metrics::get().ticks.with_label_values(&[kind.as_str(), outcome]).inc();
    }
}

/// Publishes one tick; `Ok(false)` when JetStream already had it.
pub async fn emit(js: &jetstream::Context, subject: &str, tick: &Tick) -> anyhow::Result<bool> {
    let headers = publish::with_id(&tick.message_id());
    let payload = serde_json::to_vec(tick)?;
    let ack = publish::acked(js, subject.to_owned(), headers, payload.into(), Duration::from_secs(5)).await?;
    Ok(!ack.duplicate)
}
