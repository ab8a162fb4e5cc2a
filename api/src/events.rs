//! Consuming workers' events and recording them: job phases into `jobs`,
//! what the host looked like into `servers`, drift seen in Docker's event
//! stream, and whole-host inventories (reconciled by [`crate::reconcile`]).
//! Applying an event twice changes nothing (a finished job ignores later
//! events; drift and inventories are states, not deltas), so redelivery is
//! harmless.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::Message;
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use chrono::Utc;
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;
use vsfleet_contract::{ContainerState, Inventory, JobEvent, Observed};

use crate::app::{AppState, HostSync};
use crate::db::{Db, begin_write};
use crate::error::ApiError;
use crate::jobs;
use crate::reconcile::{self, HostInventory};
use crate::{job_events, lifecycle, servers};

pub async fn consumer(
    events: &jetstream::stream::Stream,
    settings: &vsfleet_contract::Settings,
) -> anyhow::Result<PullConsumer> {
    let subjects = settings.subjects();
    let name = subjects.api_events_consumer();
    events
        .get_or_create_consumer(
            &name,
            jetstream::consumer::pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: subjects.api_events_filter(),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("creating events consumer {name}"))
}

/// Records events until shut down, reopening the message stream after errors.
pub async fn run(consumer: PullConsumer, state: AppState, shutdown: CancellationToken) {
    let subjects = state.settings.subjects();
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
                    let outcome = match subjects.event_kind(&message.subject) {
                        Some("observed") => match parse::<Observed>(&message.payload) {
                            Ok(seen) => apply_observed(&state.db, &seen).await.map_err(Fault::Retry),
                            Err(fault) => Err(fault),
                        },
                        Some("inventory") => match parse::<Inventory>(&message.payload) {
                            Ok(part) => match assemble(&mut partial, part) {
                                Some((host, whole)) => sync(&state, &host, &whole).await.map_err(Fault::Retry),
                                None => Ok(()),
                            },
                            Err(fault) => Err(fault),
                        },
                        _ => Err(Fault::Unreadable("unknown event kind".into())),
                    };
                    settle(message, outcome).await;
                    rest = &rest[1..];
                }
            }
        }
    }
}

/// Events recorded per transaction at most.
const BATCH: usize = 256;

/// Records job events in one transaction on the writer ([`job_events`]);
/// all of them are redelivered if it fails (applying an event twice changes
/// nothing).
async fn record_jobs(state: &AppState, messages: &[Message]) {
    let mut readable = Vec::with_capacity(messages.len());
    for message in messages {
        match parse::<JobEvent>(&message.payload) {
            Ok(event) => readable.push((message, event)),
            Err(fault) => settle(message, Err(fault)).await,
        }
    }
    let retention = state.settings.retention();
    let events: Vec<JobEvent> = readable.iter().map(|(_, event)| event.clone()).collect();
    let outcome = state.writer.write(move |conn| job_events::record(conn, &events, retention)).await;
    match outcome {
        Ok(()) => {
            futures::future::join_all(readable.iter().map(|(m, _)| settle(m, Ok(())))).await;
        }
        Err(error) => {
            let error = format!("{error:#}");
            for (message, _) in &readable {
                settle(message, Err(Fault::Retry(anyhow::anyhow!(error.clone())))).await;
            }
        }
    }
}

async fn settle(message: &Message, outcome: Result<(), Fault>) {
    let ack = match outcome {
        Ok(()) => message.ack().await,
        Err(Fault::Unreadable(why)) => {
            tracing::error!(subject = %message.subject, why, "events: unreadable event dropped");
            message.ack_with(AckKind::Term).await
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
    /// No retry can help.
    Unreadable(String),
    /// The database refused; try again.
    Retry(anyhow::Error),
}

fn parse<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, Fault> {
    serde_json::from_slice(payload).map_err(|e| Fault::Unreadable(e.to_string()))
}

/// Collects an inventory's parts; returns the whole once the last arrived.
fn assemble(partial: &mut HashMap<uuid::Uuid, Vec<Inventory>>, part: Inventory) -> Option<(String, HostInventory)> {
    let (id, parts) = (part.sync_id, part.parts as usize);
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
async fn sync(state: &AppState, host: &str, inventory: &HostInventory) -> anyhow::Result<()> {
    let plan = reconcile::apply(&state.db, host, inventory).await?;
    for orphan in &plan.orphans {
        tracing::warn!(host, server_id = %orphan.server_id, container = orphan.container_id, state = ?orphan.state, "orphan container: labelled for this host, no live server");
        if state.settings.api.remove_orphans && orphan.state != ContainerState::Running {
            match lifecycle::reap(state, host, orphan.server_id).await {
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

/// Drift seen in Docker's event stream: the server follows its container,
/// unless a job is in flight (the job will say) or it is in a state only a
/// job may leave.
pub async fn apply_observed(db: &Db, seen: &Observed) -> anyhow::Result<()> {
    let mut tx = begin_write(db).await?;
    let id = seen.server_id.as_i64();
    let Some(server) = servers::get(&mut *tx, id).await? else { return Ok(()) };
    if server.host != seen.host || jobs::in_flight(&mut *tx, id).await?.is_some() {
        return Ok(());
    }
    let Some(status) = server.status().drifted(seen.observed.container) else { return Ok(()) };
    sqlx::query("UPDATE servers SET status = ?, container_id = ?, data_exists = ?, updated_at = ? WHERE id = ?")
        .bind(status.as_str())
        .bind(&seen.observed.container_id)
        .bind(seen.observed.data_exists)
        .bind(Utc::now())
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(server_id = id, cause = seen.cause, %status, "drift recorded");
    Ok(())
}
