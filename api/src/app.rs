//! Building and running the api: database, NATS, the HTTP server, the
//! outbox, the events recorder, the schedule handler and the monitor sink,
//! all stopped by one shutdown signal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::PullConsumer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use vsfleet_contract::Settings;

use crate::dispatch::Dispatcher;
use crate::events::Recorder;
use crate::http::AppState;
use crate::lifecycle::Lifecycle;
use crate::store::Store;
use crate::{events, http, monitor, schedule};

pub struct Application {
    listener: TcpListener,
    state: AppState,
    events: PullConsumer,
    schedule: PullConsumer,
    monitor: async_nats::Subscriber,
    marker: crate::dispatch::Marker,
}

impl Application {
    /// Connects everything and binds nothing: the caller passes a bound
    /// listener (tests bind `127.0.0.1:0`).
    pub async fn build(settings: Settings, listener: TcpListener) -> anyhow::Result<Self> {
        let db = Store::open(&settings.database.url).await?;
        db.migrate().await?;
        let nats = vsfleet_contract::connect::connect(&settings, vsfleet_contract::connect::Role::Api).await?;
        let js = jetstream::new(nats.clone());
        // A JetStream cluster started with the api may still be electing
        // its leaders: wait for it a while rather than exit.
        let objects = vsfleet_contract::jetstream::ensure_when_ready(&js, &settings, Duration::from_secs(60)).await?;
        let events = events::consumer(&objects.events, &settings).await?;
        let schedule = schedule::consumer(&objects.schedule, &settings).await?;
        let subjects = settings.subjects();
        let monitor = nats
            .queue_subscribe(subjects.monitor_wildcard(), "api".to_owned())
            .await
            .context("subscribing to monitor snapshots")?;
        let inbound = crate::inbound::Inbound::new(js.clone(), subjects.clone(), objects.jobs.clone());
        let (dispatcher, marker) = Dispatcher::new(js, subjects, settings.nats.publish_timeout(), db.clone());
        let settings = Arc::new(settings);
        let lifecycle = Lifecycle {
            db: db.clone(),
            nats,
            dispatcher,
            settings: settings.clone(),
            registry: crate::hosts::Registry::default(),
            hosts: objects.hosts,
        };
        let state = AppState::new(crate::http::Shared {
            db,
            settings,
            lifecycle,
            tokens: crate::users::TokenCache::default(),
            inbound,
            syncs: Arc::default(),
            closing: CancellationToken::new(),
        });
        Ok(Self { listener, state, events, schedule, monitor, marker })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` is cancelled, then drains open requests.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Application { listener, state, events, schedule, monitor, marker } = self;
        let outbox_every = Duration::from_millis(state.settings.api.outbox_interval_ms);
        let lifecycle = &state.lifecycle;
        let recorder =
            Recorder { lifecycle: lifecycle.clone(), inbound: state.inbound.clone(), syncs: state.syncs.clone() };
        let background = [
            tokio::spawn(lifecycle.dispatcher.clone().run_outbox(outbox_every, shutdown.clone())),
            tokio::spawn(events::run(events, recorder, shutdown.clone())),
            tokio::spawn(schedule::run(schedule, lifecycle.clone(), shutdown.clone())),
            tokio::spawn(monitor::run(monitor, state.db.clone(), state.inbound.clone(), shutdown.clone())),
            tokio::spawn(lifecycle.registry.clone().follow(
                lifecycle.hosts.clone(),
                state.inbound.clone(),
                shutdown.clone(),
            )),
            tokio::spawn(marker.run(shutdown.clone())),
            tokio::spawn(crate::watchdog::run(state.db.clone(), state.settings.clone(), shutdown.clone())),
        ];
        tracing::info!(addr = %listener.local_addr()?, "api listening");
        // Streams that never end by themselves (the event feed) end here.
        let closing = state.closing.clone();
        let stopping = shutdown.clone();
        tokio::spawn(async move {
            stopping.cancelled().await;
            closing.cancel()
        });
        let stop = shutdown.clone();
        let limits = http::serve::Limits::from_settings(&state.settings.api);
        http::serve::serve(listener, http::router(state.clone()), limits, stop).await.context("http server")?;
        shutdown.cancel();
        for task in background {
            let _ = task.await;
        }
        state.db.close().await;
        Ok(())
    }
}
