//! Building and running the api: database, NATS, the HTTP server, the
//! outbox and the events consumer, all stopped by one shutdown signal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, kv};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use vsfleet_contract::Settings;

use crate::db::{self, Db};
use crate::dispatch::Dispatcher;
use crate::{events, http};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub nats: async_nats::Client,
    pub dispatcher: Dispatcher,
    pub hosts: kv::Store,
    pub settings: Arc<Settings>,
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
    events: jetstream::consumer::PullConsumer,
}

impl Application {
    /// Connects everything and binds nothing: the caller passes a bound
    /// listener (tests bind `127.0.0.1:0`).
    pub async fn build(settings: Settings, listener: TcpListener) -> anyhow::Result<Self> {
        let db = db::open(&settings.database.url).await?;
        db::migrate(&db).await?;
        let nats = connect_nats(&settings.nats.url, "vsfleet-api").await?;
        let js = jetstream::new(nats.clone());
        let objects = vsfleet_contract::jetstream::ensure(&js, &settings).await?;
        let events = events::consumer(&objects.events, &settings).await?;
        let dispatcher = Dispatcher::new(
            js,
            settings.subjects(),
            settings.nats.publish_timeout(),
            db.clone(),
        );
        let state = AppState {
            db,
            nats,
            dispatcher,
            hosts: objects.hosts,
            settings: Arc::new(settings),
        };
        Ok(Self {
            listener,
            state,
            events,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` is cancelled, then drains open requests.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Application {
            listener,
            state,
            events,
        } = self;
        let outbox = tokio::spawn(state.dispatcher.clone().run_outbox(
            Duration::from_millis(state.settings.api.outbox_interval_ms),
            shutdown.clone(),
        ));
        let recorder = tokio::spawn(events::run(
            events,
            state.db.clone(),
            state.settings.retention(),
            shutdown.clone(),
        ));
        tracing::info!(addr = %listener.local_addr()?, "api listening");
        let stop = shutdown.clone();
        axum::serve(listener, http::router(state.clone()))
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .context("http server")?;
        shutdown.cancel();
        let _ = tokio::join!(outbox, recorder);
        state.db.close().await;
        Ok(())
    }
}

/// Connects, then keeps reconnecting by itself for as long as the process lives.
pub async fn connect_nats(url: &str, name: &str) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .with_context(|| format!("connecting to NATS at {url}"))
}
