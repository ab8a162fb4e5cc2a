//! Following Docker's event stream for this host's managed containers, so
//! that a `docker stop` or `docker rm` made behind vsfleet's back reaches
//! the api within a second instead of at the next sync (the seed systems
//! needed 3 to 10 s). The stream is reopened when Docker restarts; the
//! periodic sync remains the backstop for anything missed meanwhile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use bollard::query_parameters::EventsOptions;
use chrono::Utc;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use vsfleet_contract::{Observed, ServerId, Settings, labels};

use crate::lock;
use crate::ops::Operations;
use crate::publish;

/// Container events that can change what a server's status should be.
const ACTIONS: [&str; 6] = ["start", "die", "stop", "kill", "destroy", "oom"];

pub struct Watcher {
    ops: Operations,
    js: jetstream::Context,
    subject: String,
    host: String,
    /// Servers with a look in progress; `true` when another event arrived
    /// meanwhile, so the look is taken again once more.
    pending: Mutex<HashMap<ServerId, bool>>,
}

impl Watcher {
    pub fn new(ops: Operations, js: jetstream::Context, settings: &Settings) -> Arc<Self> {
        let host = settings.worker.host_id.clone();
        Arc::new(Self {
            ops,
            js,
            subject: settings.subjects().observed_events(&host),
            host,
            pending: Mutex::new(HashMap::new()),
        })
    }

    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let filters = HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            ("label".to_owned(), self.ops.containers.ours_filter()),
            ("event".to_owned(), ACTIONS.iter().map(|a| (*a).to_owned()).collect()),
        ]);
        loop {
            let options = EventsOptions { filters: Some(filters.clone()), ..Default::default() };
            let mut events = self.ops.containers.docker().events(Some(options));
            tracing::debug!("watch: following Docker events");
            loop {
                let event = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    next = events.next() => next,
                };
                match event {
                    Some(Ok(event)) => {
                        let attributes = event.actor.and_then(|a| a.attributes).unwrap_or_default();
                        let Some(id) = attributes.get(labels::SERVER_ID).and_then(|v| v.parse::<ServerId>().ok())
                        else {
                            continue;
                        };
                        self.clone().look(id, event.action.unwrap_or_default());
                    }
                    Some(Err(error)) => {
                        tracing::warn!(error = format!("{error:#}"), "watch: Docker event stream broke; reopening");
                        break;
                    }
                    None => break,
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Looks at the server under its lock (never in the middle of a job)
    /// and reports what is there. Events arriving during a look fold into
    /// one more look.
    fn look(self: Arc<Self>, id: ServerId, cause: String) {
        {
            let mut pending = self.pending.lock().expect("not poisoned");
            if let Some(again) = pending.get_mut(&id) {
                *again = true;
                return;
            }
            pending.insert(id, false);
        }
        tokio::spawn(async move {
            loop {
                if let Err(error) = self.report(id, &cause).await {
                    tracing::warn!(server_id = %id, error = format!("{error:#}"), "watch: cannot report drift; the next sync will");
                }
                let mut pending = self.pending.lock().expect("not poisoned");
                match pending.get_mut(&id) {
                    Some(again) if *again => *again = false,
                    _ => {
                        pending.remove(&id);
                        return;
                    }
                }
            }
        });
    }

    async fn report(&self, id: ServerId, cause: &str) -> anyhow::Result<()> {
        let _lock = lock::lock(&self.ops.root, id, || async {}).await?;
        let observed = self.ops.observe(id).await?;
        tracing::info!(server_id = %id, cause, container = ?observed.container, "drift observed");
        let report =
            Observed { server_id: id, host: self.host.clone(), at: Utc::now(), cause: cause.to_owned(), observed };
        let msg_id = format!("{}-{}", id, uuid::Uuid::new_v4());
        publish::json(&self.js, self.subject.clone(), &msg_id, &report).await?;
        Ok(())
    }
}
