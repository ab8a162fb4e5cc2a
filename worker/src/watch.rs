//! Following Docker's event stream for this host's managed containers, so
//! that a `docker stop` or `docker rm` made behind vsfleet's back reaches
//! the api within a second instead of at the next sync (the seed systems
//! needed 3 to 10 s).
//!
//! When the stream breaks (Docker restarted, its socket cut) it is reopened
//! with `since` = the last moment it is known to have covered, a little
//! before: Docker replays what it still holds from then on (its last 256
//! events, in memory), so a container changed during the gap is reported
//! as soon as the stream is back rather than at the next sync. A replayed
//! event is at worst a repeat, and a repeat is harmless: an event only
//! makes the worker look at the server again and report what is there now,
//! and the api changes nothing when the server already matches. The
//! periodic sync remains the backstop for what Docker no longer holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use bollard::models::EventMessage;
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

/// How far before the last moment covered a reopened stream starts: events
/// logged a few milliseconds apart can arrive out of order, and a cut
/// connection loses what was in flight. Repeats cost one look each.
const REPLAY_MARGIN: Duration = Duration::from_secs(2);

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
        // The last moment the stream is known to have covered, in Unix
        // nanoseconds: the newest event's time (Docker's clock), or, before
        // any, when the stream was first opened (this clock: the worker runs
        // beside its engine). Nothing before the first opening is replayed:
        // the inventory the worker reports at start covers it.
        let mut covered: Option<i64> = None;
        loop {
            let since = covered.map(replay_from);
            covered.get_or_insert_with(|| Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX));
            tracing::debug!(since, "watch: following Docker events");
            let options = EventsOptions { since, filters: Some(filters.clone()), ..Default::default() };
            let mut events = self.ops.containers.docker().events(Some(options));
            loop {
                let event = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    next = events.next() => next,
                };
                match event {
                    Some(Ok(event)) => {
                        if let (Some(seen), Some(covered)) = (event_time(&event), covered.as_mut()) {
                            *covered = (*covered).max(seen);
                        }
                        let attributes = event.actor.and_then(|a| a.attributes).unwrap_or_default();
                        let Some(id) = attributes.get(labels::SERVER_ID).and_then(|v| v.parse::<ServerId>().ok())
                        else {
                            continue;
                        };
                        self.clone().look(id, event.action.unwrap_or_default());
                    }
                    Some(Err(error)) => {
                        tracing::warn!(
                            error = format!("{error:#}"),
                            "watch: Docker event stream broke; reopening where it stopped"
                        );
                        break;
                    }
                    None => {
                        tracing::info!("watch: Docker event stream ended; reopening where it stopped");
                        break;
                    }
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

/// When `event` happened, in Unix nanoseconds (Docker's `timeNano`, else
/// its `time` in seconds).
fn event_time(event: &EventMessage) -> Option<i64> {
    event.time_nano.or_else(|| event.time.and_then(|s| s.checked_mul(1_000_000_000)))
}

/// Docker's `since` for a stream that covered everything up to `covered`
/// (Unix nanoseconds): [`REPLAY_MARGIN`] before it, as `seconds.nanoseconds`.
fn replay_from(covered: i64) -> String {
    let from = covered.saturating_sub(REPLAY_MARGIN.as_nanos() as i64).max(0);
    format!("{}.{:09}", from / 1_000_000_000, from % 1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reopened_stream_starts_a_margin_before_what_it_covered() {
        assert_eq!(replay_from(1_700_000_010_000_000_123), "1700000008.000000123");
        assert_eq!(replay_from(1_000_000_000), "0.000000000", "never before the epoch");
    }

    #[test]
    fn an_events_time_is_its_nanoseconds_else_its_seconds() {
        let at = |time, time_nano| EventMessage { time, time_nano, ..Default::default() };
        assert_eq!(
            event_time(&at(Some(1_700_000_000), Some(1_700_000_000_500_000_000))),
            Some(1_700_000_000_500_000_000)
        );
        assert_eq!(event_time(&at(Some(1_700_000_000), None)), Some(1_700_000_000_000_000_000));
        assert_eq!(event_time(&at(None, None)), None);
    }
}
