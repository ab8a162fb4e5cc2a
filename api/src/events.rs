//! Consuming workers' events and recording them: job phases into `jobs`,
//! what the host looked like into `servers`, drift seen in Docker's event
//! stream, and whole-host inventories (reconciled by [`crate::reconcile`]).
//! Applying an event twice changes nothing (a finished job ignores later
//! events; drift and inventories are states, not deltas), so redelivery is
//! harmless.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::Message;
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use chrono::Utc;
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use vsfleet_contract::{ContainerState, Inventory, JobEvent, JobId, Observed, step};

use crate::error::ApiError;
use crate::inbound::{self, Kind};
use crate::job_events::Rejection;
use crate::lifecycle::Lifecycle;
use crate::reconcile::{self, Applied, HostInventory, apply_observed};
use crate::{job_events, lifecycle};

/// What recording the workers' events needs.
#[derive(Clone)]
pub struct Recorder {
    /// Job outcomes and drift go to the database; orphans are reaped through it.
    pub lifecycle: Lifecycle,
    pub inbound: crate::inbound::Inbound,
    /// The last sync of each host, for `GET /v1/hosts`.
    pub syncs: Syncs,
}

/// The last sync of each host.
pub type Syncs = Arc<std::sync::Mutex<HashMap<String, HostSync>>>;

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct HostSync {
    pub at: chrono::DateTime<Utc>,
    pub containers: usize,
    pub changed: usize,
    pub orphans: Vec<vsfleet_contract::SeenContainer>,
}

pub async fn consumer(
    events: &jetstream::stream::Stream,
    settings: &vsfleet_contract::Settings,
) -> anyhow::Result<PullConsumer> {
    let name = settings.subjects().api_events_consumer();
    events
        .get_or_create_consumer(&name, vsfleet_contract::jetstream::api_events_consumer(settings))
        .await
        .with_context(|| format!("creating events consumer {name}"))
}

/// Records events until shut down, reopening the message stream after errors.
pub async fn run(consumer: PullConsumer, state: Recorder, shutdown: CancellationToken) {
    let subjects = state.lifecycle.settings.subjects();
    let mut partial: HashMap<uuid::Uuid, Vec<Inventory>> = HashMap::new();
    loop {
        let mut messages = match consumer.messages().await {
            Ok(m) => m,
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), "events: cannot pull; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = messages.next() => next,
            };
            let first = match first {
                Some(Ok(m)) => m,
                Some(Err(error)) => {
                    tracing::warn!(error = format!("{error:#}"), "events: pull failed");
                    break;
                }
                None => break,
            };
            // What has already arrived joins the batch: one transaction for
            // many job events keeps the single writer connection free.
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match messages.next().now_or_never() {
                    Some(Some(Ok(m))) => batch.push(m),
                    _ => break,
                }
            }
            let mut rest = batch.as_slice();
            while !rest.is_empty() {
                let jobs = rest.iter().take_while(|m| subjects.event_kind(&m.subject) == Some("job")).count();
                if jobs > 0 {
                    record_jobs(&state, &rest[..jobs]).await;
                    rest = &rest[jobs..];
                } else {
                    let message = &rest[0];
                    let outcome = record_other(&state, &mut partial, message).await;
                    settle(&state, message, outcome).await;
                    rest = &rest[1..];
                }
            }
        }
    }
}

/// Drift and inventories: checked, then applied.
async fn record_other(
    state: &Recorder,
    partial: &mut HashMap<uuid::Uuid, Vec<Inventory>>,
    message: &Message,
) -> Result<(), Fault> {
    let subjects = state.lifecycle.settings.subjects();
    let host = state.inbound.subject_host(&message.subject).unwrap_or_default().to_owned();
    let now = Utc::now();
    match subjects.event_kind(&message.subject) {
        Some("observed") => {
            let seen = parse::<Observed>(Kind::Observed, &message.payload)?;
            inbound::check_observed(&host, &seen, now).map_err(|why| Fault::Rejected(Kind::Observed, why))?;
            apply_observed(&state.lifecycle.db, &seen).await.map_err(|e| match e {
                Applied::Refused(why) => Fault::Rejected(Kind::Observed, why),
                Applied::Failed(e) => Fault::Retry(e),
            })
        }
        Some("inventory") => {
            let part = parse::<Inventory>(Kind::Inventory, &message.payload)?;
            inbound::check_inventory(&host, &part, now).map_err(|why| Fault::Rejected(Kind::Inventory, why))?;
            match assemble(partial, part) {
                Some((host, whole)) => sync(state, &host, &whole).await.map_err(Fault::Retry),
                None => Ok(()),
            }
        }
        _ => Err(Fault::Rejected(Kind::JobEvent, "not an event subject vsfleet uses".into())),
    }
}

/// Unfinished syncs kept per host.
const MAX_OPEN_SYNCS: usize = 4;

/// Events recorded per transaction at most.
const BATCH: usize = 256;

/// Records job events in one transaction on the writer ([`job_events`]);
/// all of them are redelivered if it fails (applying an event twice changes
/// nothing). Each is checked first against its subject, then against its
/// job and server rows; a job the api did not issue is checked against the
/// jobs stream and recorded in a second transaction.
async fn record_jobs(state: &Recorder, messages: &[Message]) {
    let now = Utc::now();
    // Parsed once, shared with the writer thread without a copy.
    let mut readable = Vec::with_capacity(messages.len());
    let mut events = Vec::with_capacity(messages.len());
    for message in messages {
        let host = state.inbound.subject_host(&message.subject).unwrap_or_default();
        let checked = parse::<JobEvent>(Kind::JobEvent, &message.payload).and_then(|event| {
            inbound::check_job_event(host, &event, now).map_err(|why| Fault::Rejected(Kind::JobEvent, why))?;
            Ok(event)
        });
        match checked {
            Ok(event) => {
                readable.push(message);
                events.push(event);
            }
            Err(fault) => settle(state, message, Err(fault)).await,
        }
    }
    let events = Arc::new(events);
    let mut outcomes: Vec<Result<(), Fault>> = Vec::with_capacity(readable.len());
    match write_events(state, events.clone(), HashSet::new()).instrument(step!("record job events")).await {
        Err(error) => {
            for message in &readable {
                settle(state, message, Err(Fault::Retry(anyhow::anyhow!(error.clone())))).await;
            }
            return;
        }
        Ok(rejected) => {
            outcomes.extend(readable.iter().map(|_| Ok(())));
            let mut unknown = Vec::new();
            for (index, why) in rejected {
                match why {
                    Rejection::UnknownJob => unknown.push(index),
                    Rejection::Contradicts(why) => outcomes[index] = Err(Fault::Rejected(Kind::JobEvent, why)),
                }
            }
            if !unknown.is_empty() {
                verify_and_record(state, &events, &unknown, &mut outcomes).await;
            }
        }
    }
    futures::future::join_all(readable.iter().zip(outcomes).map(|(m, outcome)| settle(state, m, outcome))).await;
}

/// Events of jobs published by hand: recorded once their message is found
/// in the jobs stream, rejected otherwise.
async fn verify_and_record(
    state: &Recorder,
    events: &[JobEvent],
    unknown: &[usize],
    outcomes: &mut [Result<(), Fault>],
) {
    let mut verified = HashSet::new();
    let mut refused: HashMap<JobId, String> = HashMap::new();
    for &index in unknown {
        let ev = &events[index];
        if verified.contains(&ev.job_id) || refused.contains_key(&ev.job_id) {
            continue;
        }
        match state.inbound.verify_hand_job(ev).await {
            Ok(()) => {
                verified.insert(ev.job_id);
            }
            Err(why) => {
                refused.insert(ev.job_id, why);
            }
        }
    }
    let second: Vec<usize> = unknown.iter().copied().filter(|i| verified.contains(&events[*i].job_id)).collect();
    for &index in unknown {
        if let Some(why) = refused.get(&events[index].job_id) {
            outcomes[index] = Err(Fault::Rejected(Kind::JobEvent, why.clone()));
        }
    }
    if second.is_empty() {
        return;
    }
    let batch: Vec<JobEvent> = second.iter().map(|i| events[*i].clone()).collect();
    match write_events(state, Arc::new(batch), verified).await {
        Ok(rejected) => {
            for (at, why) in rejected {
                let why = match why {
                    Rejection::UnknownJob => "unknown job".to_owned(),
                    Rejection::Contradicts(why) => why,
                };
                outcomes[second[at]] = Err(Fault::Rejected(Kind::JobEvent, why));
            }
        }
        Err(error) => {
            for index in second {
                outcomes[index] = Err(Fault::Retry(anyhow::anyhow!(error.clone())));
            }
        }
    }
}

async fn write_events(
    state: &Recorder,
    events: Arc<Vec<JobEvent>>,
    hand_jobs: HashSet<JobId>,
) -> Result<Vec<(usize, Rejection)>, String> {
    let retention = state.lifecycle.settings.retention();
    state
        .lifecycle
        .db
        .write(move |tx| Box::pin(async move { job_events::record(tx, &events, retention, &hand_jobs).await }))
        .await
        .map_err(|error| format!("{error:#}"))
}

async fn settle(state: &Recorder, message: &Message, outcome: Result<(), Fault>) {
    let ack = match outcome {
        Ok(()) => message.ack().await,
        Err(Fault::Rejected(kind, why)) => {
            // Stored once however often it is redelivered.
            let id = message.info().ok().map(|i| format!("rejected-{}-{}", i.stream, i.stream_sequence));
            match state.inbound.reject(kind, &message.subject, &message.payload, &why, id).await {
                Ok(()) => message.ack_with(AckKind::Term).await,
                Err(error) => {
                    tracing::warn!(%error, "events: cannot store a rejected event; redelivery in 5s");
                    message.ack_with(AckKind::Nak(Some(Duration::from_secs(5)))).await
                }
            }
        }
        Err(Fault::Retry(error)) => {
            tracing::warn!(subject = %message.subject, error = format!("{error:#}"), "events: recording failed; redelivery in 1s");
            message.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await
        }
    };
    if let Err(error) = ack {
        tracing::warn!(%error, "events: ack failed; the event will be redelivered");
    }
}

/// Why an event was not recorded.
enum Fault {
    /// It failed a check (unreadable, forged, foreign): never applied.
    Rejected(Kind, String),
    /// The database refused; try again.
    Retry(anyhow::Error),
}

fn parse<T: serde::de::DeserializeOwned>(kind: Kind, payload: &[u8]) -> Result<T, Fault> {
    serde_json::from_slice(payload).map_err(|e| Fault::Rejected(kind, format!("unreadable: {e}")))
}

/// Collects an inventory's parts; returns the whole once the last arrived.
fn assemble(partial: &mut HashMap<uuid::Uuid, Vec<Inventory>>, part: Inventory) -> Option<(String, HostInventory)> {
    let (id, parts) = (part.sync_id, part.parts as usize);
    // Bounded: a host's unfinished syncs beyond a few are dropped, oldest first.
    let host_syncs = partial.values().filter(|v| v.first().is_some_and(|p| p.host == part.host)).count();
    if !partial.contains_key(&id) && host_syncs >= MAX_OPEN_SYNCS {
        let host = part.host.clone();
        let oldest = partial
            .iter()
            .filter(|(_, v)| v.first().is_some_and(|p| p.host == host))
            .min_by_key(|(_, v)| v[0].at)
            .map(|(k, _)| *k);
        if let Some(oldest) = oldest {
            partial.remove(&oldest);
        }
    }
    let got = partial.entry(id).or_default();
    if !got.iter().any(|p| p.part == part.part) {
        got.push(part);
    }
    // Parts of syncs that never complete (a worker died mid-way) are dropped
    // once a newer sync of the same host completes, below.
    if got.len() < parts {
        return None;
    }
    let got = partial.remove(&id)?;
    let host = got[0].host.clone();
    partial.retain(|_, v| v.first().is_none_or(|p| p.host != host));
    let mut whole = HostInventory { at: got[0].at, ..Default::default() };
    for p in got {
        whole.containers.extend(p.containers);
        whole.data_dirs.extend(p.data_dirs);
    }
    Some((host, whole))
}

/// Reconciles a host, then deals with its orphans: reported always, removed
/// (when stopped, never their data) only when `api.remove_orphans` says so.
async fn sync(state: &Recorder, host: &str, inventory: &HostInventory) -> anyhow::Result<()> {
    let plan = reconcile::apply(&state.lifecycle.db, host, inventory).await?;
    for orphan in &plan.orphans {
        tracing::warn!(host, server_id = %orphan.server_id, container = orphan.container_id, state = ?orphan.state, "orphan container: labelled for this host, no live server");
        if state.lifecycle.settings.api.remove_orphans && orphan.state != ContainerState::Running {
            match lifecycle::reap(&state.lifecycle, host, orphan.server_id).await {
                Ok(_) | Err(ApiError::JobInFlight(_)) => {}
                Err(error) => tracing::warn!(error = format!("{error:#}"), "cannot request orphan removal"),
            }
        }
    }
    let summary = HostSync {
        at: inventory.at,
        containers: inventory.containers.len(),
        orphans: plan.orphans,
        changed: plan.changes.len(),
    };
    state.syncs.lock().expect("not poisoned").insert(host.to_owned(), summary);
    Ok(())
}
