//! Building and running the api: database, NATS, the HTTP server, the
//! outbox, the events recorder, the schedule handler and the monitor sink,
//! all stopped by one shutdown signal.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::PullConsumer, kv};
use chrono::{DateTime, Utc};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use vsfleet_contract::{SeenContainer, Settings};

use crate::dispatch::Dispatcher;
use crate::store::Store;
use crate::{events, http, monitor, schedule};

/// What every handler and background task can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: Store,
    pub nats: async_nats::Client,
    pub dispatcher: Dispatcher,
    pub hosts: kv::Store,
    pub tokens: crate::users::TokenCache,
    /// The live hosts, followed from `hosts`.
    pub registry: crate::hosts::Registry,
    pub settings: Arc<Settings>,
    /// The checks of every message heard from NATS, and their rejections.
    pub inbound: crate::inbound::Inbound,
    /// The last sync of each host, for `GET /v1/hosts`.
    pub syncs: Arc<Mutex<HashMap<String, HostSync>>>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct HostSync {
    pub at: DateTime<Utc>,
    pub containers: usize,
    pub changed: usize,
    pub orphans: Vec<SeenContainer>,
}

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
        let objects = vsfleet_contract::jetstream::ensure(&js, &settings).await?;
        let events = events::consumer(&objects.events, &settings).await?;
        let schedule = schedule::consumer(&objects.schedule, &settings).await?;
        let subjects = settings.subjects();
        let monitor = nats
            .queue_subscribe(subjects.monitor_wildcard(), "api".to_owned())
            .await
            .context("subscribing to monitor snapshots")?;
        let inbound = crate::inbound::Inbound::new(js.clone(), subjects.clone(), objects.jobs.clone());
        let (dispatcher, marker) = Dispatcher::new(js, subjects, settings.nats.publish_timeout(), db.clone());
        let state = AppState {
            db,
            nats,
            dispatcher,
            hosts: objects.hosts,
            registry: crate::hosts::Registry::default(),
            tokens: crate::users::TokenCache::default(),
            inbound,
            settings: Arc::new(settings),
            syncs: Arc::default(),
        };
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
        let background = [
            tokio::spawn(state.dispatcher.clone().run_outbox(outbox_every, shutdown.clone())),
            tokio::spawn(events::run(events, state.clone(), shutdown.clone())),
            tokio::spawn(schedule::run(schedule, state.clone(), shutdown.clone())),
            tokio::spawn(monitor::run(monitor, state.db.clone(), state.inbound.clone(), shutdown.clone())),
            tokio::spawn(state.registry.clone().follow(state.hosts.clone(), state.inbound.clone(), shutdown.clone())),
            tokio::spawn(marker.run(shutdown.clone())),
            tokio::spawn(crate::watchdog::run(state.clone(), shutdown.clone())),
        ];
        tracing::info!(addr = %listener.local_addr()?, "api listening");
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
